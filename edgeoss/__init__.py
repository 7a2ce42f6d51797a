"""edgeoss: run OpenAI's gpt-oss models offline on a CPU.

    import edgeoss
    model = edgeoss.load("~/models/gpt-oss-20b")       # made by `edgeoss convert`
    logits = model.logits([1, 2, 3])                     # float32 [3, vocab]
    for tok in model.generate(ids, max_tokens=64, temperature=0): ...

    chat = edgeoss.Chat(model, reasoning="low")         # harmony format
    for delta in chat.send("Hello"): print(delta.text, end="")
"""

__version__ = "0.1.0"


def load(path, context: int = 4096, threads: int | None = None):
    """Open a converted model directory; see edgeoss.model.Model."""
    from .engine.model import load as _load
    return _load(path, context=context, threads=threads)


def __getattr__(name):
    if name == "Chat":
        from .chat.harmony import Chat
        return Chat
    raise AttributeError(name)
