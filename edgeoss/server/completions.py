"""POST /v1/completions: a raw prompt (text, with harmony's special tokens allowed, or token ids)
continued as plain text until the model's end-of-sequence tokens."""

from __future__ import annotations

import json
import secrets
import time

from sse_starlette import EventSourceResponse
from starlette.requests import Request as HTTPRequest
from starlette.responses import JSONResponse

from . import generation as gen
from .schemas import CompletionRequest, bad_request, parse, reject_unsupported
from .worker import Finished


class _Text:
    """Token ids to text as they come, holding back a character split across tokens."""

    def __init__(self, encoding):
        self.encoding, self.tokens, self.sent = encoding, [], 0

    def push(self, token: int | None) -> str:
        if token is not None:
            self.tokens.append(token)
        text = self.encoding.decode(self.tokens, errors="replace")
        if token is not None:
            text = text.rstrip("\ufffd")
        new, self.sent = text[self.sent:], max(self.sent, len(text))
        return new


def _prompt_ids(state, prompt) -> list[int]:
    if isinstance(prompt, str):
        ids = state.encoding.encode(prompt, allowed_special="all")
    elif prompt and all(isinstance(p, int) for p in prompt):
        ids = list(prompt)
    elif len(prompt) == 1:
        return _prompt_ids(state, prompt[0])
    else:
        raise bad_request("several prompts in one request are not supported by this server: send one each",
                          param="prompt", code="unsupported_parameter")
    if not ids:
        raise bad_request("the prompt is empty", param="prompt")
    vocab = state.model.config.vocab_size
    bad = next((t for t in ids if not 0 <= t < vocab), None)
    if bad is not None:
        raise bad_request(f"token id {bad} is outside the vocabulary (0 to {vocab - 1})", param="prompt")
    return ids


async def completions(http: HTTPRequest):
    state = http.app.state.edgeoss
    req: CompletionRequest = parse(CompletionRequest, await state.read_json(http))
    reject_unsupported(req)
    state.check_model(req.model)
    ids = _prompt_ids(state, req.prompt)
    sampling = gen.sampling_of(req, len(ids), state.context, req.max_tokens)
    job = gen.submit(state, ids, sampling, stop_tokens=state.model.config.eos_token_ids)
    head = {"id": "cmpl-" + secrets.token_hex(12), "object": "text_completion", "created": int(time.time()),
            "model": state.model_name, "system_fingerprint": state.fingerprint}
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return EventSourceResponse(_stream(state, job, req, head, include_usage), ping=15, send_timeout=30)
    text, stops = _Text(state.encoding), gen.StopStrings(req.stop)
    out = []
    async for item in gen.tokens(state, job, http):
        if isinstance(item, Finished):
            result = item
            break
        if item not in job.request.stop:
            out.append(stops.push(text.push(item)))
            if stops.hit:
                state.worker.cancel(job)
    out.append(stops.push(text.push(None), final=True))
    reason = gen.finish_reason(job, result, stops.hit)
    return JSONResponse({**head, "choices": [{"index": 0, "text": "".join(out), "logprobs": None,
                                              "finish_reason": reason}], "usage": gen.usage_of(job)})


def _chunk(head, text: str, finish=None) -> dict:
    return {"data": json.dumps({**head, "choices": [{"index": 0, "text": text, "logprobs": None,
                                                     "finish_reason": finish}]})}


async def _stream(state, job, req, head, include_usage: bool):
    text, stops = _Text(state.encoding), gen.StopStrings(req.stop)
    result = None
    try:
        async for item in gen.tokens(state, job):
            if isinstance(item, Finished):
                result = item
                break
            if item in job.request.stop:
                continue
            piece = stops.push(text.push(item))
            if piece:
                yield _chunk(head, piece)
            if stops.hit:
                state.worker.cancel(job)
        piece = stops.push(text.push(None), final=True)
        if piece:
            yield _chunk(head, piece)
        try:
            reason = gen.finish_reason(job, result, stops.hit)
        except gen.APIError as e:
            yield {"data": json.dumps(e.body())}
            return
        yield _chunk(head, "", reason)
        if include_usage:
            yield {"data": json.dumps({**head, "choices": [], "usage": gen.usage_of(job)})}
        yield {"data": "[DONE]"}
    finally:
        state.worker.cancel(job)
