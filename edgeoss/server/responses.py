"""POST /v1/responses: the Responses API, what gpt-oss's reference server and agents speak.

`input` is text or items (messages, function_call, function_call_output, reasoning);
`instructions` is the developer message; function `tools`, `tool_choice`, `reasoning.effort`,
`text.format` (json_object, json_schema) and `max_output_tokens` work as in chat completions.
Output items are reasoning, message and function_call; streaming sends the Responses events.
`previous_response_id` continues a stored response: the last responses are kept in memory
(a bounded number, least recently used dropped first).
"""

from __future__ import annotations

import collections
import json
import secrets
import threading
import time
from typing import Any, Literal, Optional, Union

import openai_harmony as oh
from pydantic import Field
from sse_starlette import EventSourceResponse
from starlette.requests import Request as HTTPRequest
from starlette.responses import JSONResponse

from ..chat.reply import ReplyParser
from . import generation as gen
from .messages import (developer_message, drop_stale_reasoning, reply_constraint, system_message, tool_call_message,
                       tool_result_message)
from .schemas import APIError, Lenient, Reasoning, Strict, bad_request, parse
from .worker import Finished

STORED_RESPONSES = 256


class FunctionTool(Strict):
    type: Literal["function"]
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: Optional[str] = None
    parameters: Optional[dict[str, Any]] = None
    strict: Optional[bool] = None


class NamedTool(Strict):
    type: Literal["function"]
    name: str


class TextFormat(Strict):
    type: Literal["text", "json_object", "json_schema"]
    name: Optional[str] = None
    description: Optional[str] = None
    schema_: Optional[dict[str, Any]] = Field(default=None, alias="schema")
    strict: Optional[bool] = None


class TextOptions(Strict):
    format: Optional[TextFormat] = None
    verbosity: Optional[str] = None


class InputItem(Lenient):
    type: Optional[str] = None           # "message" when absent with a role
    role: Optional[str] = None
    content: Any = None
    call_id: Optional[str] = None
    name: Optional[str] = None
    arguments: Optional[str] = None
    output: Any = None
    id: Optional[str] = None
    status: Optional[str] = None
    summary: Any = None
    encrypted_content: Optional[str] = None


class ResponsesRequest(Strict):
    model: str
    input: Union[str, list[InputItem]]
    instructions: Optional[str] = None
    tools: Optional[list[FunctionTool]] = None
    tool_choice: Union[Literal["none", "auto", "required"], NamedTool, None] = None
    parallel_tool_calls: Optional[bool] = None
    reasoning: Optional[Reasoning] = None
    text: Optional[TextOptions] = None
    max_output_tokens: Optional[int] = Field(default=None, ge=1)
    temperature: Optional[float] = Field(default=None, ge=0, le=2)
    top_p: Optional[float] = Field(default=None, gt=0, le=1)
    top_k: Optional[int] = Field(default=None, ge=0)
    seed: Optional[int] = None
    stream: Optional[bool] = False
    stream_options: Optional[dict[str, Any]] = None
    previous_response_id: Optional[str] = None
    store: Optional[bool] = None
    metadata: Optional[dict[str, Any]] = None
    user: Optional[str] = None
    include: Optional[list[str]] = None
    truncation: Optional[Literal["auto", "disabled"]] = None
    service_tier: Optional[str] = None
    safety_identifier: Optional[str] = None
    prompt_cache_key: Optional[str] = None
    background: Optional[bool] = None
    top_logprobs: Optional[int] = None
    max_tool_calls: Optional[int] = None
    conversation: Optional[Any] = None
    prompt: Optional[Any] = None


class ResponseStore:
    """The last responses, for previous_response_id: their whole conversation as input items."""

    def __init__(self, limit: int = STORED_RESPONSES):
        self.limit = limit
        self._items: collections.OrderedDict[str, tuple[dict, list[dict]]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def put(self, response: dict, conversation: list[dict]) -> None:
        with self._lock:
            self._items[response["id"]] = (response, conversation)
            while len(self._items) > self.limit:
                self._items.popitem(last=False)

    def get(self, response_id: str) -> tuple[dict, list[dict]] | None:
        with self._lock:
            found = self._items.get(response_id)
            if found is not None:
                self._items.move_to_end(response_id)
            return found


def _text(content, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for i, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in ("input_text", "output_text", "text", "reasoning_text", "summary_text") or \
                    not isinstance(part.get("text"), str):
                raise bad_request(f"content parts of type '{kind}' are not supported: this model reads text only",
                                  param=f"{where}.content.{i}", code="unsupported_content")
            out.append(part["text"])
        return "".join(out)
    raise bad_request("content must be a string or a list of text parts", param=f"{where}.content")


def _items_of(req: ResponsesRequest) -> list[dict]:
    if isinstance(req.input, str):
        return [{"type": "message", "role": "user", "content": req.input}]
    items = []
    for i, item in enumerate(req.input):
        d = item.model_dump(exclude_none=True, by_alias=True)
        if "type" not in d and "role" in d:
            d["type"] = "message"
        extras = item.unsupported_extras()
        if extras:
            raise bad_request(f"input.{i}.{extras[0]} is not supported by this server", param=f"input.{i}.{extras[0]}")
        items.append(d)
    return items


def harmony_turns(items: list[dict]) -> tuple[list[str], list[oh.Message]]:
    """Input items as (developer instructions, harmony messages)."""
    instructions, turns, names = [], [], {}
    for i, it in enumerate(items):
        kind = it.get("type")
        where = f"input.{i}"
        if kind == "message":
            role = it.get("role")
            text = _text(it.get("content"), where)
            if role in ("system", "developer"):
                instructions.append(text)
            elif role == "user":
                turns.append(oh.Message.from_role_and_content(oh.Role.USER, text))
            elif role == "assistant":
                turns.append(oh.Message.from_role_and_content(oh.Role.ASSISTANT, text).with_channel("final"))
            else:
                raise bad_request(f"unknown role '{role}'", param=f"{where}.role")
        elif kind == "reasoning":
            text = _text(it.get("content"), where) or _text(it.get("summary"), where)
            if text:
                turns.append(oh.Message.from_role_and_content(oh.Role.ASSISTANT, text).with_channel("analysis"))
        elif kind == "function_call":
            if not it.get("name") or it.get("call_id") is None:
                raise bad_request("a function_call item needs name and call_id", param=where)
            names[it["call_id"]] = it["name"]
            turns.append(tool_call_message(it["name"], it.get("arguments") or "{}"))
        elif kind == "function_call_output":
            name = names.get(it.get("call_id"))
            if name is None:
                raise bad_request(f"{where} answers call '{it.get('call_id')}', which no function_call item made",
                                  param=f"{where}.call_id")
            output = it.get("output")
            turns.append(tool_result_message(name, output if isinstance(output, str) else json.dumps(output)))
        else:
            raise bad_request(f"input items of type '{kind}' are not supported by this server", param=f"{where}.type",
                              code="unsupported_parameter")
    return instructions, drop_stale_reasoning(turns)


def _grammar(req: ResponsesRequest, max_tokens: int) -> str | None:
    """The grammar of a response's reply (messages.reply_constraint), or None."""
    choice = req.tool_choice or "auto"
    fmt = req.text.format if req.text and req.text.format else None
    return reply_constraint([(t.name, t.parameters, bool(t.strict)) for t in req.tools or []],
                            choice if isinstance(choice, str) else "required",
                            None if isinstance(choice, str) else choice.name,
                            fmt.type if fmt else "text", fmt.schema_ if fmt else None,
                            req.reasoning.effort if req.reasoning else None, max_tokens, "text.format.schema")


def _reject_unsupported(req: ResponsesRequest) -> None:
    def no(param, what):
        raise bad_request(f"{what} is not supported by this server", param=param, code="unsupported_parameter")
    if req.background:
        no("background", "background responses")
    if req.top_logprobs:
        no("top_logprobs", "top_logprobs")
    if req.conversation is not None:
        no("conversation", "stored conversations (use previous_response_id)")
    if req.prompt is not None:
        no("prompt", "prompt templates")


async def responses_create(http: HTTPRequest):
    state = http.app.state.edgeoss
    req: ResponsesRequest = parse(ResponsesRequest, await state.read_json(http))
    _reject_unsupported(req)
    state.check_model(req.model)
    history: list[dict] = []
    if req.previous_response_id:
        found = state.responses.get(req.previous_response_id)
        if found is None:
            raise APIError(404, f"Previous response with id '{req.previous_response_id}' not found: this server keeps "
                                f"the last {state.responses.limit} responses in memory", param="previous_response_id",
                           code="previous_response_not_found")
        history = found[1]
    items = history + _items_of(req)
    instructions, turns = harmony_turns(items)
    if req.instructions:
        instructions = [req.instructions] + instructions
    head = [system_message(req.reasoning.effort if req.reasoning else None)]
    dev = developer_message(instructions, req.tools or [])
    if dev is not None:
        head.append(dev)
    prompt = state.encoding.render_conversation_for_completion(oh.Conversation.from_messages(head + turns),
                                                               oh.Role.ASSISTANT)
    sampling = gen.sampling_of(req, len(prompt), state.context, req.max_output_tokens)
    constraint = await gen.make_constraint(state, _grammar(req, sampling.max_tokens))
    job = gen.submit(state, prompt, sampling, constraint)
    response = {
        "id": "resp_" + secrets.token_hex(16), "object": "response", "created_at": int(time.time()),
        "status": "in_progress", "model": state.model_name, "output": [], "error": None, "incomplete_details": None,
        "instructions": req.instructions, "previous_response_id": req.previous_response_id,
        "tools": [t.model_dump(exclude_none=True) for t in req.tools or []],
        "tool_choice": req.tool_choice if isinstance(req.tool_choice, str) else
        (req.tool_choice.model_dump() if req.tool_choice else "auto"),
        "parallel_tool_calls": bool(req.parallel_tool_calls) if req.parallel_tool_calls is not None else True,
        "temperature": sampling.temperature, "top_p": sampling.top_p, "max_output_tokens": req.max_output_tokens,
        "reasoning": {"effort": req.reasoning.effort if req.reasoning else None, "summary": None},
        "text": {"format": {"type": "text"}}, "metadata": req.metadata or {}, "usage": None,
        "store": req.store is not False, "truncation": "disabled",
    }
    run = _Run(state, job, response, items, store=req.store is not False)
    if req.stream:
        return EventSourceResponse(run.events(), ping=15, send_timeout=30)
    return JSONResponse(await run.complete(http))


async def responses_get(http: HTTPRequest):
    state = http.app.state.edgeoss
    found = state.responses.get(http.path_params["response_id"])
    if found is None:
        raise APIError(404, f"No response with id '{http.path_params['response_id']}' is stored here",
                       param="response_id", code="not_found")
    return JSONResponse(found[0])


class _Run:
    """One response being generated: output items as they form, and the events that show them."""

    def __init__(self, state, job, response: dict, items: list[dict], store: bool):
        self.state, self.job, self.response, self.items, self.store = state, job, response, items, store
        self.parser = ReplyParser(state.encoding)
        self.seq = 0
        self.current: dict | None = None   # the output item being written
        self.index = -1

    # -- output items ---------------------------------------------------------------------------
    def _event(self, kind: str, **fields) -> dict:
        self.seq += 1
        return {"event": kind, "data": json.dumps({"type": kind, "sequence_number": self.seq, **fields})}

    def _open(self, item: dict) -> list[dict]:
        events = self._close()
        self.current = item
        self.response["output"].append(item)
        self.index = len(self.response["output"]) - 1
        events.append(self._event("response.output_item.added", output_index=self.index, item=item))
        if item["type"] == "message":
            item["content"].append({"type": "output_text", "text": "", "annotations": []})
            events.append(self._event("response.content_part.added", item_id=item["id"], output_index=self.index,
                                      content_index=0, part=item["content"][0]))
        elif item["type"] == "reasoning":
            item["content"].append({"type": "reasoning_text", "text": ""})
        return events

    def _close(self) -> list[dict]:
        item, self.current = self.current, None
        if item is None:
            return []
        item["status"] = "completed"
        events = []
        if item["type"] == "message":
            part = item["content"][0]
            events.append(self._event("response.output_text.done", item_id=item["id"], output_index=self.index,
                                      content_index=0, text=part["text"]))
            events.append(self._event("response.content_part.done", item_id=item["id"], output_index=self.index,
                                      content_index=0, part=part))
        elif item["type"] == "reasoning":
            events.append(self._event("response.reasoning_text.done", item_id=item["id"], output_index=self.index,
                                      content_index=0, text=item["content"][0]["text"]))
        else:
            events.append(self._event("response.function_call_arguments.done", item_id=item["id"],
                                      output_index=self.index, arguments=item["arguments"]))
        events.append(self._event("response.output_item.done", output_index=self.index, item=item))
        return events

    def _pieces(self, pieces) -> list[dict]:
        events = []
        for p in pieces:
            if p.kind == "reasoning":
                if self.current is None or self.current["type"] != "reasoning":
                    events += self._open({"type": "reasoning", "id": "rs_" + secrets.token_hex(12), "summary": [],
                                          "content": [], "status": "in_progress"})
                self.current["content"][0]["text"] += p.text
                events.append(self._event("response.reasoning_text.delta", item_id=self.current["id"],
                                          output_index=self.index, content_index=0, delta=p.text))
            elif p.kind == "content":
                if self.current is None or self.current["type"] != "message":
                    events += self._open({"type": "message", "id": "msg_" + secrets.token_hex(12), "role": "assistant",
                                          "status": "in_progress", "content": []})
                self.current["content"][0]["text"] += p.text
                events.append(self._event("response.output_text.delta", item_id=self.current["id"],
                                          output_index=self.index, content_index=0, delta=p.text, logprobs=[]))
            elif p.kind == "tool_call":
                events += self._open({"type": "function_call", "id": "fc_" + secrets.token_hex(12),
                                      "call_id": "call_" + secrets.token_hex(12), "name": p.text, "arguments": "",
                                      "status": "in_progress"})
            else:
                self.current["arguments"] += p.text
                events.append(self._event("response.function_call_arguments.delta", item_id=self.current["id"],
                                          output_index=self.index, delta=p.text))
        return events

    def _finish(self, result: Finished) -> list[dict]:
        events = self._pieces(self.parser.finish()) + self._close()
        reason = gen.finish_reason(self.job, result, False)
        r = self.response
        r["status"] = "incomplete" if reason == "length" else "completed"
        if reason == "length":
            r["incomplete_details"] = {"reason": "max_output_tokens"}
        u = self.job.request.usage
        reasoning_tokens = sum(len(self.state.encoding.encode(it["content"][0]["text"], allowed_special=set()))
                               for it in r["output"] if it["type"] == "reasoning" and it["content"])
        r["usage"] = {"input_tokens": u.prompt_tokens, "input_tokens_details": {"cached_tokens": u.cached_tokens},
                      "output_tokens": u.completion_tokens,
                      "output_tokens_details": {"reasoning_tokens": min(reasoning_tokens, u.completion_tokens)},
                      "total_tokens": u.prompt_tokens + u.completion_tokens}
        if self.store:
            self.state.responses.put(r, self.items + [_as_input(it) for it in r["output"]])
        return events

    async def complete(self, http) -> dict:
        async for item in gen.tokens(self.state, self.job, http):
            if isinstance(item, Finished):
                self._finish(item)
                break
            self._pieces(self.parser.push(item))
        return self.response

    async def events(self):
        try:
            yield self._event("response.created", response=dict(self.response))
            yield self._event("response.in_progress", response=dict(self.response))
            async for item in gen.tokens(self.state, self.job):
                if isinstance(item, Finished):
                    try:
                        for e in self._finish(item):
                            yield e
                    except APIError as err:
                        self.response["status"] = "failed"
                        self.response["error"] = {"code": err.code or "server_error", "message": err.message}
                        yield self._event("response.failed", response=self.response)
                        return
                    break
                for e in self._pieces(self.parser.push(item)):
                    yield e
            kind = "response.completed" if self.response["status"] == "completed" else "response.incomplete"
            yield self._event(kind, response=self.response)
        finally:
            self.state.worker.cancel(self.job)


def _as_input(item: dict) -> dict:
    """An output item as the input item that continues the conversation."""
    if item["type"] == "message":
        return {"type": "message", "role": "assistant", "content": item["content"]}
    if item["type"] == "reasoning":
        return {"type": "reasoning", "content": item["content"]}
    return {"type": "function_call", "call_id": item["call_id"], "name": item["name"], "arguments": item["arguments"]}
