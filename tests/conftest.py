"""Shared fixtures: synthetic checkpoints (made once per session) and the ../shared folder."""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # `import reference` from any test
# Tests measure the compiled loops: compile them in the test process on first use, rather than
# start on the NumPy ones while a background process compiles (engine/warmup.py; its own tests
# choose the mode they test). Servers and CLIs the tests start inherit it.
os.environ.setdefault("EDGEOSS_JIT", "wait")

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    return Path(os.environ.get("EDGEOSS_SHARED", REPO.parent / "shared"))


def tokenizer_dir() -> Path | None:
    d = Path(os.environ.get("EDGEOSS_TOKENIZER_DIR", shared_dir() / "tokenizer"))
    return d if (d / "tokenizer.json").exists() and (d / "o200k_base.tiktoken").exists() else None


# Small shapes that still exercise every path: several layers of both attention kinds,
# grouped-query attention, a sliding window shorter than the test sequences, and a vocabulary
# small enough for a float64 reference. Overrides are make_checkpoint keyword arguments.
SMALL = dict(vocab_size=1024)
SHAPES = {
    "tiny-s0": dict(seed=0, **SMALL),
    "odd-s1": dict(seed=1, vocab_size=777, hidden_size=96, intermediate_size=64, num_hidden_layers=3,
                   num_attention_heads=6, num_key_value_heads=2, num_local_experts=6,
                   num_experts_per_tok=4, sliding_window=5),
    "tiny-s2": dict(seed=2, **SMALL),
}


@pytest.fixture(scope="session")
def hf_checkpoints(tmp_path_factory):
    """name -> Hugging Face layout checkpoint directory (random weights, no tokenizer)."""
    from edgeoss.convert.synthetic import make_checkpoint
    root = tmp_path_factory.mktemp("hf")
    out = {}
    for name, kw in SHAPES.items():
        kw = dict(kw)
        seed = kw.pop("seed")
        out[name] = make_checkpoint(root / name, preset="tiny", seed=seed, tokenizer_dir=False, **kw)
    return out


@pytest.fixture(scope="session")
def converted(hf_checkpoints, tmp_path_factory):
    """(shape name, preset) -> converted edgeoss model directory, made on first use."""
    from edgeoss.convert import convert
    root = tmp_path_factory.mktemp("models")
    cache = {}

    def get(name: str, preset: str) -> Path:
        if (name, preset) not in cache:
            cache[(name, preset)] = convert(str(hf_checkpoints[name]), root / f"{name}-{preset}", preset=preset,
                                            no_tokenizer=True, progress=False)
        return cache[(name, preset)]
    return get


# -- the server's tests (tests/server): a tiny model with gpt-oss's vocabulary, a real process --------
@pytest.fixture(scope="session")
def chat_model(tmp_path_factory):
    """A tiny model with gpt-oss's vocabulary (the server speaks harmony): the checkpoint has no
    tokenizer files, so the conversion bundles the copy shipped with edgeoss."""
    from edgeoss.convert import convert
    from edgeoss.convert.synthetic import make_checkpoint
    root = tmp_path_factory.mktemp("served")
    make_checkpoint(root / "hf", preset="tiny", seed=0, tokenizer_dir=None)
    return convert(str(root / "hf"), root / "gpt-oss-tiny", preset="q8", progress=False)


@pytest.fixture(scope="session")
def server(chat_model):
    from server.harness import Server
    s = Server(chat_model, "--parallel", "4")
    yield s
    code = s.stop()
    assert code == 0, "".join(s.log)


@pytest.fixture(scope="session")
def big_experts_model(tmp_path_factory):
    """Experts large enough (4 layers x 32 x 3.3 MB) that keeping them all would break a budget
    sized for a few slots: the measurement can fail."""
    from edgeoss.convert import convert
    from edgeoss.convert.synthetic import make_checkpoint
    root = tmp_path_factory.mktemp("bigexp")
    hf = make_checkpoint(root / "hf", preset="tiny", seed=7, tokenizer_dir=False, vocab_size=512,
                         hidden_size=1024, intermediate_size=2048, num_hidden_layers=4, num_local_experts=32,
                         num_attention_heads=8, num_key_value_heads=2, progress=False)
    return convert(str(hf), root / "q8", preset="q8", no_tokenizer=True, progress=False)
