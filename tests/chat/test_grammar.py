"""Constrained decoding: whatever the logits say (random ones here), a constrained reply is a
well-formed harmony reply whose JSON parses and validates."""

import json

import jsonschema
import numpy as np
import pytest

from edgeoss.chat.grammar import Constraint, GrammarError, ToolSpec, lltokenizer, reply_grammar
from edgeoss.chat.reply import ReplyParser
from edgeoss.format.vocab import BUNDLED_VOCAB_DIR, VOCAB_FILE, load_encoding

CITY = {"type": "object", "additionalProperties": False, "required": ["city", "days"],
        "properties": {"city": {"type": "string", "maxLength": 16},
                       "days": {"type": "integer", "minimum": 1, "maximum": 9}}}
STOP = (200002, 200012)


@pytest.fixture(scope="module")
def enc():
    return load_encoding()


@pytest.fixture(scope="module")
def tok(enc):
    return lltokenizer(enc, str(BUNDLED_VOCAB_DIR / VOCAB_FILE))


def sample(enc, tok, grammar: str, seed: int, limit: int = 3000):
    """Random logits, masked: the reply, and the token that ended it."""
    c = Constraint(tok, grammar)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(limit):
        logits = rng.standard_normal(201088).astype(np.float32) * 3
        c.mask(logits)
        t = int(np.argmax(logits))
        c.accept(t)
        out.append(t)
        if t in STOP:
            break
    parser = ReplyParser(enc)
    for t in out:
        parser.push(t)
    parser.finish()
    return parser.reply, out[-1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_required_call_validates(enc, tok, seed):
    empty = {"type": "object", "properties": {}, "additionalProperties": False}
    g = reply_grammar(tools=[ToolSpec("get_weather", CITY), ToolSpec("noop", empty)], calls="required",
                      analysis_tokens=40)
    reply, last = sample(enc, tok, g, seed)
    assert last == 200012 and len(reply.tool_calls) == 1 and reply.content == ""
    call = reply.tool_calls[0]
    assert call.name in ("get_weather", "noop")
    args = json.loads(call.arguments)
    jsonschema.validate(args, CITY if call.name == "get_weather" else empty)


@pytest.mark.parametrize("seed", [0, 1])
def test_json_schema_answer_validates(enc, tok, seed):
    reply, last = sample(enc, tok, reply_grammar(final="schema", final_schema=CITY, analysis_tokens=40), seed)
    assert last == 200002 and reply.tool_calls == []
    jsonschema.validate(json.loads(reply.content), CITY)


def test_reasoning_is_bounded(enc, tok):
    reply, _ = sample(enc, tok, reply_grammar(final="schema", final_schema=CITY, analysis_tokens=25), 5)
    assert len(enc.encode(reply.reasoning, allowed_special=set())) <= 30


def test_none_forbids_calls(enc, tok):
    c = Constraint(tok, reply_grammar(tools=[ToolSpec("get_weather", CITY)], calls="none", analysis_tokens=5))
    assert not c.matcher.consume_tokens(enc.encode("<|channel|>commentary to=functions.get_weather",
                                                    allowed_special="all"))


def test_bad_schema_or_no_tool_is_a_clear_error(tok):
    with pytest.raises(GrammarError):
        Constraint(tok, reply_grammar(final="schema", final_schema={"type": "object", "properties": {
            "a": {"type": "string", "pattern": "(?<=x)y"}}}))
    with pytest.raises(GrammarError):
        reply_grammar(tools=[], calls="required")
