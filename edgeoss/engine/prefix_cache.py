"""The prefix cache: sequences kept after their requests end, so that a new prompt starts from
the longest prefix any sequence holds (an agent resends its whole history each request; many
requests share a system prompt and a tool list).

A new prompt takes the idle sequence that can keep the most of it (it is rewound there), or
forks a copy of that prefix from a sequence another request is still running, or starts empty.
Idle sequences are kept within a RAM bound, the least recently used evicted first.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterable

from .sequence import Sequence


class PrefixCache:
    def __init__(self, model, ram_bytes: int):
        self.model = model
        self.ram_bytes = int(ram_bytes)
        self._idle: OrderedDict[int, Sequence] = OrderedDict()  # least recently used first
        self.hits = self.lookups = 0
        self.reused_tokens = 0

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self._idle.values())

    def __len__(self) -> int:
        return len(self._idle)

    def acquire(self, ids: list[int], live: Iterable[Sequence] = ()) -> Sequence:
        """A sequence to run prompt `ids` on, holding the longest prefix of it to be had."""
        self.lookups += 1
        best, best_keep, idle = None, 0, False
        for seq in self._idle.values():
            keep = seq.resume_point(ids)[0]
            if keep > best_keep:
                best, best_keep, idle = seq, keep, True
        for seq in live:
            keep = seq.resume_point(ids)[0]
            if keep > best_keep:
                best, best_keep, idle = seq, keep, False
        if best is None:
            return self.model.new_sequence()
        self.hits += 1
        self.reused_tokens += best_keep
        if idle:
            del self._idle[id(best)]
            return best
        return best.fork(ids)

    def release(self, seq: Sequence) -> None:
        """Keep a finished request's sequence for later prompts; evict beyond the RAM bound."""
        self._idle[id(seq)] = seq
        self._idle.move_to_end(id(seq))
        total = self.nbytes
        while self._idle and total > self.ram_bytes:
            _, old = self._idle.popitem(last=False)
            total -= old.nbytes
