"""gpt-oss's vocabulary (o200k_base.tiktoken) as its harmony encoding: openai-harmony builds it
offline from that file, the copy in a model directory or the one shipped in this package (data/),
so nothing ever asks the network for it."""

from __future__ import annotations

import os
from pathlib import Path

import openai_harmony as oh

_ENCODINGS: dict[str, oh.HarmonyEncoding] = {}

# o200k_base.tiktoken as tiktoken publishes it (sha256 446a9538...1a2d, MIT): gpt-oss's base vocabulary
BUNDLED_VOCAB_DIR = Path(__file__).resolve().parent / "data"
VOCAB_FILE = "o200k_base.tiktoken"


def load_encoding(vocab_dir: str | os.PathLike | None = None) -> oh.HarmonyEncoding:
    """gpt-oss's harmony encoding, built offline from `vocab_dir`/o200k_base.tiktoken (default:
    the vocabulary shipped with edgeoss)."""
    vocab_dir = str(Path(vocab_dir if vocab_dir is not None else BUNDLED_VOCAB_DIR).absolute())
    if vocab_dir not in _ENCODINGS:
        # openai-harmony reads the vocabulary from this folder instead of the network
        previous = os.environ.get("TIKTOKEN_ENCODINGS_BASE")
        os.environ["TIKTOKEN_ENCODINGS_BASE"] = vocab_dir
        try:
            _ENCODINGS[vocab_dir] = oh.load_harmony_encoding(oh.HarmonyEncodingName.HARMONY_GPT_OSS)
        finally:
            if previous is None:
                os.environ.pop("TIKTOKEN_ENCODINGS_BASE", None)
            else:
                os.environ["TIKTOKEN_ENCODINGS_BASE"] = previous
    return _ENCODINGS[vocab_dir]
