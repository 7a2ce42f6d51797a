"""Harmony chat: render -> generate -> parse, with the real gpt-oss vocabulary."""

import io

import pytest


class ScriptedModel:
    """Stands in for Model.generate with a scripted reply, honouring `stop` like the engine."""

    def __init__(self, encoding, reply: str):
        self.tokenizer = encoding
        self.script = encoding.encode(reply, allowed_special="all")
        self.prompts = []
        self.prepared = []

    def new_sequence(self):
        return None

    def prefill(self, ids, sequence=None):
        self.prepared.append(list(ids))

    def generate(self, ids, max_tokens=256, stop=None, sequence=None, **sampling):
        self.prompts.append(list(ids))
        for tok in self.script[:max_tokens]:
            yield tok
            if stop is not None and tok in stop:
                return


@pytest.fixture(scope="module")
def encoding():
    from edgeoss.format.vocab import load_encoding
    return load_encoding()  # the vocabulary shipped with edgeoss


def test_final_channel_streams_and_end_does_not_stop(encoding):
    from edgeoss.chat.harmony import Chat
    reply = ("<|channel|>analysis<|message|>The user greets me.<|end|>"
             "<|start|>assistant<|channel|>final<|message|>Hello there!<|return|>"
             "<|start|>assistant<|channel|>final<|message|>never reached")
    model = ScriptedModel(encoding, reply)
    chat = Chat(model, reasoning="low")
    deltas = list(chat.send("Hi"))
    text = {ch: "".join(d.text for d in deltas if d.channel == ch) for ch in ("analysis", "final")}
    assert text == {"analysis": "The user greets me.", "final": "Hello there!"}
    assert chat.last_stop_token == 200002  # <|return|>
    assert [m.channel for m in chat.messages[1:]] == ["analysis", "final"]
    prompt = encoding.decode(model.prompts[0])
    assert prompt.startswith("<|start|>system<|message|>") and "Reasoning: low" in prompt
    assert prompt.endswith("<|start|>user<|message|>Hi<|end|><|start|>assistant")


def test_tool_call_stops_on_call_and_takes_the_result(encoding):
    import openai_harmony as oh
    from edgeoss.chat.harmony import Chat
    reply = ('<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}'
             '<|call|>')
    model = ScriptedModel(encoding, reply)
    tool = oh.ToolDescription.new("get_weather", "Current weather in a city",
                                  parameters={"type": "object", "properties": {"city": {"type": "string"}}})
    chat = Chat(model, reasoning="medium", tools=[tool])
    list(chat.send("Weather in Paris?"))
    call = chat.last_tool_call()
    assert chat.last_stop_token == 200012 and call is not None
    assert call.recipient == "functions.get_weather" and '"Paris"' in call.content[0].text
    chat.add_tool_result("functions.get_weather", '{"temp_c": 18}')
    prompt = encoding.decode(chat.prompt_tokens())
    assert "get_weather" in prompt and '{"temp_c": 18}' in prompt


def test_chat_with_the_engine_on_a_tiny_model(tmp_path):
    """The real engine end to end: vocabulary bundled by the converter, harmony prompt, stop
    tokens and parsing. The weights are random, so only the mechanics are checked."""
    from edgeoss.chat.harmony import Chat
    from edgeoss.convert import convert
    from edgeoss.engine.model import load
    from edgeoss.convert.synthetic import make_checkpoint
    hf = make_checkpoint(tmp_path / "hf", preset="tiny", seed=0, tokenizer_dir=None, num_hidden_layers=2)
    model = load(convert(str(hf), tmp_path / "m", progress=False))
    chat = Chat(model, reasoning="high", instructions="Answer briefly.")
    prompt = chat.prompt_tokens()
    assert model.tokenizer.decode(prompt).count("Answer briefly.") == 1
    chat.add_user("What is 2+2?")
    sent = chat.prompt_tokens()
    assert len(sent) > len(prompt)
    deltas = list(chat.stream(max_tokens=12, temperature=0))
    chat.wait()  # the history, re-rendered as the next turn will show it, is in the cache
    assert chat.sequence.tokens == chat.encoding.render_conversation(chat._conversation())
    assert all(isinstance(d.text, str) for d in deltas)


def test_every_turn_after_the_first_reuses_the_whole_history(tmp_path):
    """A 4-turn chat with reasoning: each turn's prompt drops the previous reply's analysis and
    ends it with <|end|>, yet everything before the new user message comes from the cache."""
    from edgeoss.chat.harmony import Chat
    from edgeoss.convert import convert
    from edgeoss.convert.synthetic import make_checkpoint
    from edgeoss.engine.model import load
    hf = make_checkpoint(tmp_path / "hf", preset="tiny", seed=2, tokenizer_dir=None, num_hidden_layers=2)
    model = load(convert(str(hf), tmp_path / "m", progress=False))
    chat = Chat(model, reasoning="high", instructions="Answer briefly.")
    for turn, text in enumerate(["Hi", "What is 2+2?", "And 3+3?", "Thanks"]):
        before = chat.encoding.render_conversation(chat._conversation())  # the history so far
        chat.add_user(text)
        prompt = chat.prompt_tokens()
        assert prompt[:len(before)] == before
        list(chat.stream(max_tokens=16, temperature=0.8, seed=turn))
        u = chat.usage
        assert (u.prompt_tokens, u.completion_tokens) == (len(prompt), len(chat.last_tokens))
        assert u.cached_tokens == (len(before) if turn else 0), f"turn {turn + 1}"


def test_cli_generate_and_chat(tmp_path, capsys, monkeypatch):
    from edgeoss.cli.main import main
    from edgeoss.convert import convert
    from edgeoss.convert.synthetic import make_checkpoint
    hf = make_checkpoint(tmp_path / "hf", preset="tiny", seed=1, tokenizer_dir=None, num_hidden_layers=2)
    m = convert(str(hf), tmp_path / "m", progress=False)
    assert main(["generate", str(m), "Hello", "--max-tokens", "5", "--ignore-eos"]) == 0
    captured = capsys.readouterr()
    assert "5 generated" in captured.err
    monkeypatch.setattr("sys.stdin", io.StringIO("Hi there\n\n"))
    assert main(["chat", str(m), "--max-tokens", "6", "--seed", "3", "--show-reasoning"]) == 0
    assert main(["info", str(m)]) == 0
    out = capsys.readouterr().out
    assert "o200k_harmony (bundled)" in out and "kernels:" in out
