"""Continuous batching: many requests share each forward pass.

Every step runs the next token of every decoding request together with, when room is left, a
chunk of a newcomer's prompt (Model.forward_batch): the weights are read once for all of them,
and a long prompt joins in chunks, so the running requests wait at most one chunk for it. A long
prompt alone, on a model whose experts stream, runs in blocks layer by layer instead (Model.forward):
nothing is decoding then, and a request arriving meanwhile waits for the block, not a chunk.
Sampling is per request and the same as Model.generate's (the same seed gives the same tokens).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from .warmup import current_loops
from ..memory.workspace import LONG_PREFILL, PREFILL_CHUNK
from .sequence import Sequence, Usage


@dataclass(eq=False)  # a request is itself, not its fields
class Request:
    """One generation: a prompt on a sequence, its sampling, and what came out so far. With no
    sequence given, the scheduler picks one (from its prefix cache, if it has one)."""

    sequence: Sequence | None
    prompt: list[int]
    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: Iterable[int] | None = None  # default: the model's end-of-sequence tokens
    # restricts each token: .mask(logits) sets forbidden ones to -inf, .accept(token) follows the
    # choice (chat.grammar.Constraint); an exception from either ends the request with `error`
    constraint: object | None = None
    # filled in as it runs
    tokens: list[int] = field(default_factory=list)   # generated, in order
    done: bool = False
    error: str | None = None
    usage: Usage = field(default_factory=Usage)

    def __post_init__(self):
        if not self.prompt:
            raise ValueError("a request needs at least one prompt token")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.temperature < 0 or self.top_k < 0 or self.max_tokens < 1:
            raise ValueError("temperature and top_k must be >= 0 and max_tokens >= 1")
        self._rng = np.random.default_rng(self.seed)
        self._pending: list[int] = []   # prompt tokens still to run
        self._next: int | None = None   # the last sampled token, to run next
        self._pooled = False            # its sequence came from (and goes back to) the prefix cache


class Scheduler:
    """Steps a set of requests on one model, each on its own sequence."""

    def __init__(self, model, max_batch_tokens: int = PREFILL_CHUNK, prefix_cache=None):
        self.model = model
        self.max_batch_tokens = min(max_batch_tokens, PREFILL_CHUNK)
        self.prefix_cache = prefix_cache  # an engine.prefix_cache.PrefixCache, or None
        self.active: list[Request] = []

    def add(self, request: Request) -> Request:
        """Admit a request: its sequence keeps what it shares with the prompt."""
        if request.sequence is None:
            if self.prefix_cache is None:
                request.sequence = self.model.new_sequence()
            else:
                request.sequence = self.prefix_cache.acquire(request.prompt, [r.sequence for r in self.active])
                request._pooled = True
        elif any(r.sequence is request.sequence for r in self.active):
            raise ValueError("that sequence is already generating")
        stop = self.model.config.eos_token_ids if request.stop is None else request.stop
        request.stop = set(int(s) for s in stop)
        kept = request.sequence.rewind(request.prompt)
        request._pending = request.prompt[kept:]
        request.usage = request.sequence.usage = Usage(prompt_tokens=len(request.prompt), cached_tokens=kept)
        self.active.append(request)
        return request

    def step(self) -> list[tuple[Request, int]]:
        """One forward pass: every decoding request's next token, then prompt chunks (oldest
        request first) while the batch has room. Returns the (request, token) pairs sampled."""
        decoding = [r for r in self.active if not r._pending]
        alone = self.active[0] if len(self.active) == 1 else None
        if alone is not None and alone._pending and len(alone._pending) > PREFILL_CHUNK and self.model.plan.long_prefill:
            # streamed experts and nobody decoding or waiting: the next block of a long prompt
            # layer by layer, each expert read once a block rather than once a chunk
            n = min(LONG_PREFILL, len(alone._pending))
            return self._sampled([(alone, n)], [self.model.forward(alone._pending[:n], sequence=alone.sequence)])
        room = self.max_batch_tokens - len(decoding)
        entries, runs = [], []
        for r in decoding:
            entries.append((r.sequence, [r._next]))
            runs.append((r, 1))
        for r in self.active:
            if r._pending and room > 0:
                n = min(room, len(r._pending))
                entries.append((r.sequence, r._pending[:n]))
                runs.append((r, n))
                room -= n
        if not entries:
            return []
        return self._sampled(runs, self.model.forward_batch(entries))

    def _sampled(self, runs, logits) -> list[tuple[Request, int]]:
        """After a pass: each request that ran its last prompt token or a decoded one samples its
        next token from its row of logits."""
        out = []
        for (r, n), row in zip(runs, logits):
            if r._pending:
                del r._pending[:n]
                if r._pending:
                    continue  # more of its prompt to run: nothing to sample yet
                r.sequence.checkpoint()  # where the prompt ends: the next turn steps back here
            try:
                if r.constraint is not None:
                    r.constraint.mask(row)
                tok = int(current_loops().sample_token(row, float(r.temperature), int(r.top_k), float(r.top_p),
                                                       r._rng.random()))
                if r.constraint is not None:
                    r.constraint.accept(tok)
            except Exception as e:  # noqa: BLE001 - one request's constraint failing ends that request only
                r.error, r.done = f"{type(e).__name__}: {e}", True
                continue
            r.tokens.append(tok)
            r.usage.completion_tokens += 1
            out.append((r, tok))
            full = r.sequence.length >= self.model.config.max_position_embeddings
            if tok in r.stop or len(r.tokens) >= r.max_tokens or full:
                r.done = True
            else:
                r._next = tok
        self._retire()
        return out

    def _retire(self) -> None:
        for r in self.active:
            if r.done and r._pooled:
                self.prefix_cache.release(r.sequence)
        self.active = [r for r in self.active if not r.done]

    def cancel(self, request: Request) -> None:
        """Stop a request now (a client went away); its sequence keeps what it ran."""
        if any(r is request for r in self.active):
            request.done = True
            self._retire()

    def run(self, requests: Iterable[Request]) -> list[Request]:
        """Admit `requests` and step until all are done; returns them."""
        requests = [self.add(r) for r in requests]
        while self.active:
            self.step()
        return requests
