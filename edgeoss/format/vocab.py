"""The vocabulary bundled in a model directory (o200k_base.tiktoken), as gpt-oss's harmony
encoding: openai-harmony builds it offline from that file."""

from __future__ import annotations

import os
from pathlib import Path

import openai_harmony as oh

_ENCODINGS: dict[str, oh.HarmonyEncoding] = {}


def load_encoding(vocab_dir: str | os.PathLike) -> oh.HarmonyEncoding:
    """gpt-oss's harmony encoding, built offline from `vocab_dir`/o200k_base.tiktoken."""
    vocab_dir = str(Path(vocab_dir).absolute())
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
