"""The reply parser: harmony tokens -> reasoning, content and tool calls, as the API returns them."""

import pytest

from edgeoss.chat.reply import ReplyParser


@pytest.fixture(scope="module")
def encoding():
    from edgeoss.format.vocab import load_encoding
    return load_encoding()


def parse(encoding, text: str):
    p = ReplyParser(encoding)
    pieces = []
    for tok in encoding.encode(text, allowed_special="all"):
        pieces += p.push(tok)
    pieces += p.finish()
    return p.reply, pieces


def test_reasoning_and_answer_are_apart_and_markup_never_leaks(encoding):
    reply, pieces = parse(encoding, "<|channel|>analysis<|message|>Think: é and 日本.<|end|>"
                                    "<|start|>assistant<|channel|>final<|message|>Bonjour, 世界!<|return|>")
    assert reply.reasoning == "Think: é and 日本." and reply.content == "Bonjour, 世界!"
    assert reply.tool_calls == []
    assert "".join(p.text for p in pieces if p.kind == "content") == reply.content
    assert all("<|" not in p.text for p in pieces)


def test_a_tool_call_streams_its_arguments(encoding):
    reply, pieces = parse(encoding, "<|channel|>analysis<|message|>Need weather.<|end|><|start|>assistant"
                                    "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>"
                                    '{"city": "Paris", "days": 3}<|call|>')
    (call,) = reply.tool_calls
    assert call.name == "get_weather" and call.arguments == '{"city": "Paris", "days": 3}'
    kinds = [p.kind for p in pieces]
    assert kinds.count("tool_call") == 1 and kinds.index("tool_call") < kinds.index("arguments")
    assert "".join(p.text for p in pieces if p.kind == "arguments") == call.arguments
    assert reply.content == ""


def test_the_recipient_before_the_channel_is_a_call_too(encoding):
    # after the prompt's "<|start|>assistant" the model may name the recipient first
    reply, _ = parse(encoding, ' to=functions.lookup<|channel|>commentary json<|message|>{"q": 1}<|call|>')
    assert [(c.name, c.arguments) for c in reply.tool_calls] == [("lookup", '{"q": 1}')]


def test_output_outside_the_format_is_plain_content(encoding):
    reply, pieces = parse(encoding, "just some words the model wrote")
    assert reply.content == "just some words the model wrote" and reply.reasoning == ""
    reply, _ = parse(encoding, "<|channel|>final<|message|>fine<|return|><|end|> and then junk")
    assert reply.content.startswith("fine")


def test_text_outside_the_format_streams_before_the_end(encoding):
    p = ReplyParser(encoding)
    words = encoding.encode(" word" * 100)
    streamed = "".join(piece.text for t in words for piece in p.push(t))
    assert streamed.startswith(" word word") and len(streamed) >= 5 * 30
    assert streamed + "".join(piece.text for piece in p.finish()) == " word" * 100
