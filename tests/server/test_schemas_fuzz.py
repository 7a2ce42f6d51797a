"""Request bodies are untrusted: any JSON given to the schemas' parse (and reject_unsupported) is
accepted or answered with an APIError 4xx, never another exception (which the server would
answer with a 500); the body reader turns any bytes into JSON or a 400."""

import asyncio
import json
import types

import pytest
from hypothesis import given, settings, strategies as st

from edgeoss.server.responses import ResponsesRequest
from edgeoss.server.schemas import APIError, ChatCompletionRequest, CompletionRequest, parse, reject_unsupported

REQUESTS = {
    ChatCompletionRequest: {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5,
                            "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
                            "response_format": {"type": "json_object"}, "stream": False},
    CompletionRequest: {"model": "m", "prompt": "hi", "max_tokens": 5, "stop": ["x"]},
    ResponsesRequest: {"model": "m", "input": [{"role": "user", "content": "hi"}], "max_output_tokens": 5,
                       "text": {"format": {"type": "text"}}, "reasoning": {"effort": "low"}},
}


def outcome(cls, body) -> str:
    try:
        req = parse(cls, body)
        if cls is not ResponsesRequest:
            reject_unsupported(req)
    except APIError as e:
        assert 400 <= e.status < 500, e.status
        assert e.message
        # the answer serializes as Starlette's JSONResponse does it
        json.dumps(e.body(), ensure_ascii=False, allow_nan=False).encode("utf-8")
        return "refused"
    return "ok"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**80, 2**80) | st.floats() | st.text(max_size=6)
    | st.sampled_from(["\ud800", "a\udfffb", "user", "assistant", "tool", "function", "text", "json_schema",
                       "m", "", "input_text", "function_call", "function_call_output"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5) | st.sampled_from(
        ["role", "content", "type", "text", "name", "function", "call_id", "tool_calls", "\ud800"]), inner, max_size=3),
    max_leaves=10)


@settings(max_examples=300, deadline=None)
@given(cls=st.sampled_from(list(REQUESTS)), body=json_values)
def test_any_json_is_accepted_or_a_4xx(cls, body):
    outcome(cls, body)


def _paths(x, prefix=()):
    yield prefix
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from _paths(v, prefix + (i,))


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_valid_requests_with_any_field_replaced_are_accepted_or_a_4xx(data):
    """Random bodies rarely get past the first missing field; these do: a valid request with one
    to three values anywhere replaced by arbitrary JSON (or a new key added)."""
    cls = data.draw(st.sampled_from(list(REQUESTS)))
    body = json.loads(json.dumps(REQUESTS[cls]))
    assert outcome(cls, body) == "ok"
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from([p for p in _paths(body) if p]))
        parent = body
        for k in path[:-1]:
            parent = parent[k]
        if isinstance(parent, dict) and data.draw(st.booleans()):
            parent[data.draw(st.text(max_size=8))] = data.draw(json_values)
        else:
            parent[path[-1]] = data.draw(json_values)
    outcome(cls, body)


@pytest.mark.parametrize("body", [
    {"model": "m", "messages": [{"role": "user", "content": "\ud800"}]},
    {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "a\udfffb"}]}]},
    {"model": "m", "messages": [{"role": "user", "content": "x"}], "metadata": {"\ud800": "v"}},
], ids=["content", "content part", "key"])
def test_a_lone_surrogate_is_a_400_naming_where(body):
    """Such strings passed validation and made the harmony renderer raise ValueError: a 500."""
    with pytest.raises(APIError, match="lone surrogate") as err:
        parse(ChatCompletionRequest, body)
    assert err.value.status == 400 and err.value.param.startswith(("messages.0.content", "metadata"))
    json.dumps(err.value.body(), ensure_ascii=False).encode("utf-8")   # as JSONResponse renders it


def test_paired_surrogates_are_text():
    req = parse(ChatCompletionRequest, json.loads('{"model": "m", "messages": [{"role": "user", '
                                                  '"content": "\\ud83d\\ude00"}]}'))
    assert req.messages[0].content == "\U0001F600"


def test_a_rendered_request_is_plain_unicode():
    """What parse accepts renders (the step that failed on a lone surrogate)."""
    import openai_harmony as oh

    from edgeoss.format.vocab import load_encoding
    from edgeoss.server.messages import chat_messages
    req = parse(ChatCompletionRequest, {"model": "m", "messages": [{"role": "user", "content": "é \U0001F600"}]})
    load_encoding().render_conversation_for_completion(oh.Conversation.from_messages(chat_messages(req)),
                                                       oh.Role.ASSISTANT)


# -- the body reader ------------------------------------------------------------------------------

def read_json(raw: bytes, limit: int = 1 << 20):
    from edgeoss.server.app import ServerState

    async def stream():
        yield raw

    http = types.SimpleNamespace(headers={"content-length": str(len(raw))}, stream=stream)
    state = types.SimpleNamespace(body_limit=limit)
    state._too_large = lambda: ServerState._too_large(state)
    return asyncio.run(ServerState.read_json(state, http))


@pytest.mark.parametrize("raw", [b"[" * 100_000, b'{"a":' * 50_000, b"\xff\xfe", b"", b"1" * 5000, b"{"],
                         ids=["deep array", "deep object", "not utf-8", "empty", "5000-digit number", "cut"])
def test_bodies_that_are_not_json_are_a_400(raw):
    """The deeply nested ones raised RecursionError: a 500."""
    with pytest.raises(APIError, match="not valid JSON") as err:
        read_json(raw)
    assert err.value.status == 400


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
def test_any_body_bytes_are_json_or_a_400(raw):
    try:
        read_json(raw)
    except APIError as e:
        assert e.status == 400
