"""edgeoss: run OpenAI's gpt-oss models offline on a CPU.

    import edgeoss
    model = edgeoss.load("~/models/gpt-oss-20b")       # made by `edgeoss convert`
    logits = model.logits([1, 2, 3])                     # float32 [3, vocab]
    for tok in model.generate(ids, max_tokens=64, temperature=0): ...

    chat = edgeoss.Chat(model, reasoning="low")         # harmony format
    for delta in chat.send("Hello"): print(delta.text, end="")

    edgeoss.serve("~/models/gpt-oss-20b", port=8000)    # OpenAI-compatible server on 127.0.0.1
"""

import os as _os
import sys as _sys

__version__ = "0.1.0"


def _user_dir(kind: str = "cache") -> str:
    """This platform's per-user folder for edgeoss's caches ("cache") or its data ("data": models)."""
    data = kind == "data"
    if _sys.platform == "win32":
        base = _os.environ.get("LOCALAPPDATA") or _os.path.expanduser("~\\AppData\\Local")
    elif _sys.platform == "darwin":
        base = _os.path.expanduser("~/Library/Application Support" if data else "~/Library/Caches")
    else:
        base = (_os.environ.get("XDG_DATA_HOME") or _os.path.expanduser("~/.local/share")) if data else \
            (_os.environ.get("XDG_CACHE_HOME") or _os.path.expanduser("~/.cache"))
    return _os.path.join(base, "edgeoss")


# Numba's compiled kernels go to a per-user folder, never beside the installed package: a cache in
# site-packages outlives `pip uninstall` there (a leftover folder that shadows a later editable
# install) and cannot be written where site-packages is read-only. Set before anything imports
# numba; NUMBA_CACHE_DIR set by the user wins.
_os.environ.setdefault("NUMBA_CACHE_DIR", _os.path.join(_user_dir("cache"), "numba"))


def load(path, context: int = 4096, threads: int | None = None):
    """Open a converted model directory; see edgeoss.model.Model."""
    from .engine.model import load as _load
    return _load(path, context=context, threads=threads)


def serve(model, host: str = "127.0.0.1", port: int = 8000, **options):
    """Serve a model over OpenAI's API until interrupted; see edgeoss.server.serve."""
    from .server import serve as _serve
    return _serve(model, host=host, port=port, **options)


def __getattr__(name):
    if name == "Chat":
        from .chat.harmony import Chat
        return Chat
    raise AttributeError(name)
