"""What every generating route shares: the prompt's checks, submitting a job to the engine thread,
reading its tokens back without blocking the event loop, stop strings and disconnects."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request as HTTPRequest

from ..chat.grammar import Constraint, GrammarError, lltokenizer
from ..engine.scheduler import Request
from .schemas import APIError, bad_request
from .worker import Busy, Finished, Job

HARMONY_STOP = (200002, 200012)  # <|return|>, <|call|>
CALL_TOKEN = 200012


@dataclass
class Sampling:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None


def sampling_of(req, prompt_len: int, context: int, max_tokens: int | None) -> Sampling:
    """The request's sampling, with a 400 for a prompt the context cannot hold."""
    if prompt_len >= context:
        raise bad_request(f"This model's maximum context length is {context} tokens, but the prompt is "
                          f"{prompt_len} tokens. Shorten the messages, or start the server with a larger --context.",
                          param="messages", code="context_length_exceeded")
    room = context - prompt_len
    if max_tokens is None or max_tokens > room:
        max_tokens = room
    return Sampling(max_tokens=max_tokens,
                    temperature=1.0 if req.temperature is None else float(req.temperature),
                    top_p=1.0 if req.top_p is None else float(req.top_p),
                    top_k=req.top_k or 0, seed=req.seed)


async def make_constraint(state, grammar: str | None):
    """An llguidance constraint for `grammar` (built off the event loop: the vocabulary takes ~1.5 s
    the first time), or None."""
    if grammar is None:
        return None

    def build():
        tok = lltokenizer(state.encoding, state.vocab_file)
        return Constraint(tok, grammar)
    try:
        return await run_in_threadpool(build)
    except GrammarError as e:
        raise bad_request(str(e), param="response_format", code="invalid_schema") from None


def submit(state, prompt: list[int], sampling: Sampling, constraint=None, stop_tokens=HARMONY_STOP) -> Job:
    request = Request(sequence=None, prompt=prompt, max_tokens=sampling.max_tokens, temperature=sampling.temperature,
                      top_p=sampling.top_p, top_k=sampling.top_k, seed=sampling.seed, stop=stop_tokens,
                      constraint=constraint)
    job = Job(request=request, loop=asyncio.get_running_loop())
    try:
        state.worker.submit(job)
    except Busy as e:
        raise APIError(429, f"The server is busy: {e}. Retry shortly.", code="rate_limit_exceeded",
                       type="rate_limit_error", headers={"Retry-After": "1"}) from None
    return job


def prepare(state, prompt: list[int]) -> None:
    """Bring `prompt` (the likely start of the next request) into the prefix cache in the
    background, when a slot is free."""
    if 1 < len(prompt) < state.context:
        request = Request(sequence=None, prompt=prompt, max_tokens=1, temperature=0.0, stop=HARMONY_STOP)
        state.worker.prepare(Job(request=request, loop=asyncio.get_running_loop()))


async def tokens(state, job: Job, http: HTTPRequest | None = None):
    """Yield the job's tokens, then its Finished. With `http`, a client that goes away cancels the
    job (streamed responses are cancelled by their SSE task instead)."""
    watcher = asyncio.ensure_future(_disconnected(http)) if http is not None else None
    try:
        while True:
            if watcher is None:
                item = await job.events.get()
            else:
                getter = asyncio.ensure_future(job.events.get())
                done, _ = await asyncio.wait({getter, watcher}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    raise asyncio.CancelledError("the client went away")
                item = getter.result()
            yield item
            if isinstance(item, Finished):
                return
    finally:
        if watcher is not None:
            watcher.cancel()
        state.worker.cancel(job)  # a no-op once it finished


async def _disconnected(http: HTTPRequest) -> None:
    while True:
        message = await http.receive()
        if message["type"] == "http.disconnect":
            return


class StopStrings:
    """Cuts streamed text at the first stop string, holding back what could be the start of one."""

    def __init__(self, stop):
        self.stops = [stop] if isinstance(stop, str) else [s for s in (stop or []) if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.text = ""
        self.sent = 0
        self.hit = False

    def push(self, text: str, final: bool = False) -> str:
        """The part of the text so far that can be sent now."""
        if self.hit:
            return ""
        self.text += text
        cut = min((i for i in (self.text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.hit = True
            end = cut
        else:
            end = len(self.text) if final or not self.stops else max(self.sent, len(self.text) - self.hold)
        out, self.sent = self.text[self.sent:end], max(self.sent, end)
        return out


def finish_reason(job: Job, result: Finished, stopped_by_string: bool) -> str:
    if stopped_by_string:  # we cancelled it there
        return "stop"
    if result.reason == "error":
        raise APIError(500, f"generation failed: {result.error}", code="generation_failed")
    if result.reason == "cancelled":
        raise APIError(503, "the server is shutting down", code="shutting_down")
    if result.reason == "stop":
        return "tool_calls" if job.request.tokens and job.request.tokens[-1] == CALL_TOKEN else "stop"
    return "length"


def usage_of(job: Job) -> dict:
    u = job.request.usage
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
            "total_tokens": u.prompt_tokens + u.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": u.cached_tokens}}
