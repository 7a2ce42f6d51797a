"""POST /v1/chat/completions: harmony underneath, OpenAI's chat shape on the wire.

Reasoning comes back as `reasoning_content`, the final channel as `content`, harmony tool calls
as `tool_calls` with JSON arguments (streamed as deltas), and usage with the prefix cache's
`cached_tokens`.
"""

from __future__ import annotations

import json
import secrets
import time

import openai_harmony as oh
from sse_starlette import EventSourceResponse
from starlette.requests import Request as HTTPRequest
from starlette.responses import JSONResponse

from ..chat.reply import ReplyParser
from . import generation as gen
from .messages import chat_constraint, chat_messages
from .schemas import ChatCompletionRequest, ChatMessage, parse, reject_unsupported
from .worker import Finished


def _prepare_next_turn(state, req: ChatCompletionRequest, reply: dict, reason: str) -> None:
    """The next request of this conversation starts with its messages and the reply as we
    returned it, rendered the same way: bring that into the prefix cache while the user reads
    (or the tool runs), so the next turn runs only what it adds."""
    if reason not in ("stop", "tool_calls", "length"):
        return
    try:
        messages = list(req.messages) + [ChatMessage.model_validate(reply)]
        conversation = oh.Conversation.from_messages(chat_messages(req.model_copy(update={"messages": messages})))
        gen.prepare(state, state.encoding.render_conversation(conversation))
    except Exception:  # noqa: BLE001 - only a head start: the next request runs whatever this did not
        pass


def _call_id() -> str:
    return "call_" + secrets.token_hex(12)


async def chat_completions(http: HTTPRequest):
    state = http.app.state.edgeoss
    req: ChatCompletionRequest = parse(ChatCompletionRequest, await state.read_json(http))
    reject_unsupported(req)
    state.check_model(req.model)
    conversation = oh.Conversation.from_messages(chat_messages(req))
    prompt = state.encoding.render_conversation_for_completion(conversation, oh.Role.ASSISTANT)
    sampling = gen.sampling_of(req, len(prompt), state.context, req.max_completion_tokens or req.max_tokens)
    constraint = await gen.make_constraint(state, chat_constraint(req, sampling.max_tokens))
    job = gen.submit(state, prompt, sampling, constraint)
    head = {"id": "chatcmpl-" + secrets.token_hex(12), "created": int(time.time()), "model": state.model_name,
            "system_fingerprint": state.fingerprint}
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return EventSourceResponse(_stream(state, job, req, head, include_usage), ping=15, send_timeout=30)
    return JSONResponse(await _complete(state, job, req, head, http))


async def _complete(state, job, req, head, http) -> dict:
    parser = ReplyParser(state.encoding)
    stops = gen.StopStrings(req.stop)
    content = []
    async for item in gen.tokens(state, job, http):
        if isinstance(item, Finished):
            result = item
            break
        for piece in parser.push(item):
            if piece.kind == "content":
                content.append(stops.push(piece.text))
                if stops.hit:
                    state.worker.cancel(job)
    for piece in parser.finish():
        if piece.kind == "content":
            content.append(stops.push(piece.text))
    content.append(stops.push("", final=True))
    reason = gen.finish_reason(job, result, stops.hit)
    reply = parser.reply
    message = {"role": "assistant", "content": "".join(content) or None, "refusal": None}
    if reply.reasoning:
        message["reasoning_content"] = reply.reasoning
    if reply.tool_calls:
        message["tool_calls"] = [{"id": _call_id(), "type": "function",
                                  "function": {"name": c.name, "arguments": c.arguments}} for c in reply.tool_calls]
    _prepare_next_turn(state, req, message, reason)
    return {**head, "object": "chat.completion",
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": reason}],
            "usage": gen.usage_of(job)}


def _chunk(head, delta: dict, finish=None) -> dict:
    return {"data": json.dumps({**head, "object": "chat.completion.chunk",
                                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]})}


async def _stream(state, job, req, head, include_usage: bool):
    parser = ReplyParser(state.encoding)
    stops = gen.StopStrings(req.stop)
    call_ids: list[str] = []
    try:
        yield _chunk(head, {"role": "assistant", "content": ""})
        result = None
        async for item in gen.tokens(state, job):
            if isinstance(item, Finished):
                result = item
                break
            for chunk in _pieces(head, parser.push(item), stops, call_ids):
                yield chunk
            if stops.hit:
                state.worker.cancel(job)
        for chunk in _pieces(head, parser.finish(), stops, call_ids, final=True):
            yield chunk
        try:
            reason = gen.finish_reason(job, result, stops.hit)
        except gen.APIError as e:  # mid-stream: the error goes out as an event, the stream ends
            yield {"data": json.dumps(e.body())}
            return
        reply = parser.reply
        message = {"role": "assistant", "content": stops.text[:stops.sent] or None}
        if reply.reasoning:
            message["reasoning_content"] = reply.reasoning
        if reply.tool_calls:
            message["tool_calls"] = [{"id": cid, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                                     for cid, c in zip(call_ids, reply.tool_calls)]
        _prepare_next_turn(state, req, message, reason)
        yield _chunk(head, {}, reason)
        if include_usage:
            yield {"data": json.dumps({**head, "object": "chat.completion.chunk", "choices": [],
                                       "usage": gen.usage_of(job)})}
        yield {"data": "[DONE]"}
    finally:
        state.worker.cancel(job)


def _pieces(head, pieces, stops: gen.StopStrings, call_ids: list, final: bool = False):
    for piece in pieces:
        if piece.kind == "reasoning":
            yield _chunk(head, {"reasoning_content": piece.text})
        elif piece.kind == "content":
            text = stops.push(piece.text)
            if text:
                yield _chunk(head, {"content": text})
        elif piece.kind == "tool_call":
            call_ids.append(_call_id())
            yield _chunk(head, {"tool_calls": [{"index": piece.call, "id": call_ids[-1], "type": "function",
                                                "function": {"name": piece.text, "arguments": ""}}]})
        else:
            yield _chunk(head, {"tool_calls": [{"index": piece.call, "function": {"arguments": piece.text}}]})
    if final:
        text = stops.push("", final=True)
        if text:
            yield _chunk(head, {"content": text})
