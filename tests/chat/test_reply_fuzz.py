"""The harmony parsing path fed arbitrary token sequences (random weights write anything): the
reply parser and Chat.stream never raise, and what they stream adds up to the reply they keep."""

import pytest
from hypothesis import given, settings, strategies as st

from edgeoss.chat.harmony import Chat
from edgeoss.chat.reply import SPECIAL_FROM, ReplyParser


@pytest.fixture(scope="module")
def encoding():
    from edgeoss.format.vocab import load_encoding
    return load_encoding()


SNIPPETS = ["<|channel|>analysis<|message|>", "<|channel|>final<|message|>", "<|end|>", "<|start|>assistant",
            "<|channel|>commentary to=functions.f <|constrain|>json<|message|>", "<|call|>", "<|return|>",
            " to=", "functions.", "{\"a\": 1}", "日本", "é", "<|constrain|>", "<|message|>", "assistant"]


def token_lists(encoding):
    pieces = st.one_of(
        st.integers(0, SPECIAL_FROM - 1).map(lambda t: [t]),                 # any ordinary token
        st.integers(SPECIAL_FROM, 201087).map(lambda t: [t]),                # special and unused ids
        st.sampled_from([-1, -2**31, 201088, 2**32, 2**40]).map(lambda t: [t]),  # not ids of this vocabulary
        st.sampled_from(SNIPPETS).map(lambda s: encoding.encode(s, allowed_special="all")),
    )
    return st.lists(pieces, max_size=40).map(lambda ls: [t for piece in ls for t in piece])


def feed(encoding, tokens):
    p = ReplyParser(encoding)
    pieces = []
    for t in tokens:
        pieces += p.push(t)
    pieces += p.finish()
    return p.reply, pieces


@pytest.mark.parametrize("tokens", [[-1], [2**40, 5], [200005, -7, 1000], [1000, 2**32, 1001]],
                         ids=["negative", "huge", "negative after a special", "u32 overflow midway"])
def test_ids_outside_the_vocabulary_do_not_raise(encoding, tokens):
    """These raised OverflowError (the harmony parser takes u32 ids, decode as well) before."""
    reply, pieces = feed(encoding, tokens)
    plain = [t for t in tokens if 0 <= t < SPECIAL_FROM]
    if plain and tokens[0] != 200005:
        assert reply.content == encoding.decode(plain)


def test_plain_text_then_garbage_ids_keeps_the_text(encoding):
    ids = encoding.encode("Hello there") + [-3]
    reply, _ = feed(encoding, ids)
    assert reply.content == "Hello there"


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_tokens_give_a_consistent_reply(encoding, data):
    tokens = data.draw(token_lists(encoding))
    reply, pieces = feed(encoding, tokens)
    assert "".join(p.text for p in pieces if p.kind == "content") == reply.content
    assert "".join(p.text for p in pieces if p.kind == "reasoning") == reply.reasoning
    calls = [p for p in pieces if p.kind == "tool_call"]
    assert [p.text for p in calls] == [c.name for c in reply.tool_calls]
    for i, c in enumerate(reply.tool_calls):
        assert "".join(p.text for p in pieces if p.kind == "arguments" and p.call == i) == c.arguments


class FakeModel:
    """What Chat needs of a model, generating the given tokens."""

    def __init__(self, encoding, tokens):
        self.tokenizer, self.tokens = encoding, tokens

    def new_sequence(self):
        return object()

    def generate(self, prompt, max_tokens, stop, sequence, **sampling):
        for t in self.tokens[:max_tokens]:
            yield t
            if t in stop:
                return

    def prefill(self, history, sequence):
        pass


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_chat_stream_survives_any_tokens(encoding, data):
    tokens = data.draw(token_lists(encoding))
    chat = Chat(FakeModel(encoding, tokens), prepare_next_turn=False)
    deltas = list(chat.send("hi", max_tokens=64))
    assert all(isinstance(d.text, str) for d in deltas)
    chat.prompt_tokens()   # the history it kept renders again
