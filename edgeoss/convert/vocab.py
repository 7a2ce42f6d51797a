"""The vocabulary bundled with a converted model, so the runtime never touches the network.

openai-harmony builds gpt-oss's o200k_harmony encoding from `o200k_base.tiktoken` (base64
token bytes and rank, one a line) and checks that file's sha256. A Hugging Face checkpoint
ships the same vocabulary as `tokenizer.json` (byte-level BPE: every byte shown as a printable
character); we rebuild the tiktoken file from it and accept it only if the hash matches.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from ..errors import EdgeossError
from ..format.vocab import BUNDLED_VOCAB_DIR, VOCAB_FILE

O200K_BASE_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
O200K_BASE_TOKENS = 199998  # ranks 0..199997; 199998.. are the special tokens


class VocabError(EdgeossError):
    """A tokenizer that is not gpt-oss's: converting with it would silently produce garbage."""


def _byte_level_alphabet() -> dict[str, int]:
    """Byte-level BPE shows byte b as a printable character: printable Latin-1 bytes as
    themselves, the other 68 bytes as chr(256 + n) in byte order. Returns char -> byte."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[chr(b)] = b
        else:
            table[chr(256 + extra)] = b
            extra += 1
    return table


def tiktoken_from_tokenizer_json(path: Path) -> bytes:
    """The o200k_base.tiktoken bytes equivalent to a tokenizer.json's BPE vocabulary."""
    try:
        tok = json.loads(Path(path).read_text(encoding="utf-8"))
        vocab = tok["model"]["vocab"]
        if tok["model"].get("type") != "BPE":
            raise KeyError
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        raise VocabError(f"{path} is not a Hugging Face byte-level BPE tokenizer.json") from None
    alphabet = _byte_level_alphabet()
    by_rank: dict[int, bytes] = {}
    for text, rank in vocab.items():
        try:
            by_rank[int(rank)] = bytes(alphabet[c] for c in text)
        except KeyError:
            raise VocabError(f"{path}: token {text!r} is not byte-level BPE") from None
    if sorted(by_rank) != list(range(len(by_rank))):
        raise VocabError(f"{path}: token ranks are not 0..{len(by_rank) - 1}")
    lines = [base64.b64encode(by_rank[r]) + b" " + str(r).encode() for r in range(len(by_rank))]
    return b"\n".join(lines) + b"\n"


def bundle_vocab(src_dir: Path, out_path: Path) -> str:
    """Write out_path (o200k_base.tiktoken) from src_dir's tokenizer; returns its sha256.

    Takes an o200k_base.tiktoken shipped beside the checkpoint as it is, else derives it from
    tokenizer.json, else (a checkpoint with no tokenizer files) takes the copy shipped with
    edgeoss: gpt-oss has one vocabulary. Refuses anything but gpt-oss's vocabulary."""
    shipped = src_dir / VOCAB_FILE
    if not has_tokenizer(src_dir):
        shipped = BUNDLED_VOCAB_DIR / VOCAB_FILE
    if shipped.exists():
        data, origin = shipped.read_bytes(), shipped
    else:
        origin = src_dir / "tokenizer.json"
        data = tiktoken_from_tokenizer_json(origin)
    digest = hashlib.sha256(data).hexdigest()
    if digest != O200K_BASE_SHA256:
        raise VocabError(
            f"{origin} is not gpt-oss's o200k vocabulary (its tiktoken form hashes to {digest[:12]}…, "
            f"expected {O200K_BASE_SHA256[:12]}…). edgeoss's chat format needs exactly that vocabulary; "
            "convert with --no-tokenizer to drive the model with token ids only.")
    out_path.write_bytes(data)
    return digest


def has_tokenizer(src_dir: Path) -> bool:
    return (src_dir / "tokenizer.json").exists() or (src_dir / VOCAB_FILE).exists()
