"""Sequences: one conversation's state on a loaded model, so one model serves many.

A sequence owns its KV cache and the tokens it holds. A new prompt keeps the longest prefix it
shares with them and runs only the rest, even when the prompt rewrote the tail (a harmony turn
drops the reply's reasoning and closes it with <|end|>, not <|return|>). Full-attention layers
step back by forgetting positions. Sliding-window layers can only step back as far as their
ring still holds the window before the step's target: SLIDING_ROLLBACK positions, or to a
checkpoint of their windows taken where an earlier prompt ended.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import GptOssConfig
from ..memory.workspace import DEFAULT_KV, SEQUENCE_CHECKPOINTS
from .kvcache import KVCache


@dataclass
class Usage:
    """Token counts of one request, as OpenAI's API reports them."""

    prompt_tokens: int = 0
    cached_tokens: int = 0       # of prompt_tokens: kept from before, not run
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo


class Sequence:
    """A KV cache, the tokens it holds, and checkpoints of its sliding layers."""

    def __init__(self, cfg: GptOssConfig, capacity: int, limit: int | None = None, kv: str = DEFAULT_KV):
        self._shape = (cfg, capacity, limit, kv)  # what a fork is made of
        self.cache = KVCache(cfg, capacity, limit=limit, kv=kv)
        # (position, k and v windows [layers][kv_heads, window, head_dim]), oldest first
        self.checkpoints: list[tuple[int, list[np.ndarray], list[np.ndarray]]] = []
        self.usage = Usage()
        self.forced = None  # [experts, weights, cursor]: a routing trace replayed (Model.force_routing)
        self._rings = [layer for layer in self.cache.layers if layer.ring]
        self.window = cfg.sliding_window if self._rings else 0
        self._ring_size = self._rings[0].k.shape[1] if self._rings else 0
        # the rings hold right values for positions [max(_ring_from, length - ring size), length):
        # a restored checkpoint brings back only its window
        self._ring_from = 0

    @property
    def tokens(self) -> list[int]:
        return self.cache.tokens

    @property
    def length(self) -> int:
        return self.cache.length

    def reset(self) -> None:
        self.cache.reset()
        self.checkpoints.clear()
        self._ring_from = 0

    def _rings_from(self) -> int:
        return max(self._ring_from, self.length - self._ring_size)

    def reachable(self, position: int) -> bool:
        """Whether the sliding rings still hold the window before `position` (<= length)."""
        return not self._rings or max(0, position - self.window) >= self._rings_from()

    def checkpoint(self) -> None:
        """Remember the sliding layers' windows at the current length (the last few are kept)."""
        n = self.length
        if not n or (self.checkpoints and self.checkpoints[-1][0] == n):
            return
        ks = [layer.k[:, layer.ring_slots(n)] for layer in self._rings]
        vs = [layer.v[:, layer.ring_slots(n)] for layer in self._rings]
        self.checkpoints.append((n, ks, vs))
        del self.checkpoints[:-SEQUENCE_CHECKPOINTS]

    @property
    def nbytes(self) -> int:
        """Memory this sequence holds: its KV cache and its checkpoints."""
        return self.cache.nbytes + sum(a.nbytes for _, ks, vs in self.checkpoints for a in ks + vs)

    def resume_point(self, ids: list[int]) -> tuple[int, tuple | None]:
        """How many tokens of `ids` this sequence could keep (at least one is left to run, for
        its logits), and the checkpoint that needs restoring for it (None: the rings hold it)."""
        keep = min(common_prefix(self.tokens, ids), len(ids) - 1)
        if self.reachable(keep):
            return keep, None
        best = max((c for c in self.checkpoints if c[0] <= keep), key=lambda c: c[0], default=None)
        return (0, None) if best is None else (best[0], best)

    def _windows_at(self, keep: int, checkpoint) -> tuple[list, list]:
        """The sliding layers' k and v windows before position `keep`."""
        if checkpoint is not None:
            return checkpoint[1], checkpoint[2]
        return ([layer.k[:, layer.ring_slots(keep)] for layer in self._rings],
                [layer.v[:, layer.ring_slots(keep)] for layer in self._rings])

    def rewind(self, ids: list[int]) -> int:
        """Step back to the longest prefix of `ids` this sequence can resume from, and return its
        length: the tokens of `ids` that need not run."""
        self._ring_from = self._rings_from()  # what the rings hold stays right as the length drops
        keep, checkpoint = self.resume_point(ids)
        if checkpoint is not None:
            for layer, k, v in zip(self._rings, checkpoint[1], checkpoint[2]):
                slots = layer.ring_slots(keep)
                layer.k[:, slots], layer.v[:, slots] = k, v
            self._ring_from = max(0, keep - self.window)
        elif keep == 0:
            self._ring_from = 0
        del self.cache.tokens[keep:]
        self.checkpoints = [c for c in self.checkpoints if c[0] <= keep]
        return keep

    def fork(self, ids: list[int]) -> "Sequence":
        """A new sequence holding a copy of the longest prefix of `ids` this one can resume from
        (for another request that shares it, while this one goes on)."""
        keep, checkpoint = self.resume_point(ids)
        new = Sequence(*self._shape)
        if keep:
            new.cache.reserve(keep)
            for src, dst in zip(self.cache.layers, new.cache.layers):
                if not src.ring:
                    dst.k[:, :keep], dst.v[:, :keep] = src.k[:, :keep], src.v[:, :keep]
            for dst, k, v in zip(new._rings, *self._windows_at(keep, checkpoint)):
                slots = dst.ring_slots(keep)
                dst.k[:, slots], dst.v[:, slots] = k, v
            new.cache.tokens = self.tokens[:keep]
            new._ring_from = max(0, keep - self.window)
            new.checkpoints = [c for c in self.checkpoints if c[0] <= keep]  # never written: shared
        return new
