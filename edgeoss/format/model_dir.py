"""The edgeoss model directory: the one module that knows docs/FORMAT.md.

A model directory holds `edgeoss.json` (the manifest), `weights.bin` (every tensor, each
starting on a 4 KiB boundary) and, when converted with a tokenizer, `o200k_base.tiktoken`.
The writer (edgeoss.convert) lays tensors out with `Layout`; the runtime opens them with
`ModelFiles`, which validates the manifest against the file before anything is used.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import GptOssConfig
from ..errors import EdgeossError
from .fileio import advise_huge_pages

FORMAT_NAME = "edgeoss"
FORMAT_VERSION = 1
ALIGN = 4096          # every tensor and every expert starts on a page boundary
PART_ALIGN = 64       # parts inside one expert start on a cache-line boundary
MANIFEST = "edgeoss.json"
WEIGHTS = "weights.bin"
VOCAB_FILE = "o200k_base.tiktoken"
BLOCK = 32            # values per quantization block, along the input dimension

PRESETS = ("q8", "q4", "bf16")
MATRIX_TYPES = ("q8", "q4", "bf16")

DTYPES = {"int8": np.int8, "uint8": np.uint8, "uint16": np.uint16, "float16": np.float16,
          "float32": np.float32}


class FormatError(EdgeossError):
    """A model directory that is not a complete, valid edgeoss model."""


def align_up(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def matrix_parts(mtype: str, rows: int, cols: int) -> dict[str, tuple[str, tuple[int, ...]]]:
    """The arrays a [rows, cols] matrix of a given type is stored as: part -> (dtype, shape)."""
    nb = cols // BLOCK
    if mtype == "q8":   # int8 values, one fp16 scale per 32
        return {"qs": ("int8", (rows, nb, BLOCK)), "scales": ("float16", (rows, nb))}
    if mtype == "q4":   # nibbles (value = nibble - 8), byte i = element i | element i+16 << 4
        return {"qs": ("uint8", (rows, nb, BLOCK // 2)), "scales": ("float16", (rows, nb))}
    if mtype == "bf16":
        return {"data": ("uint16", (rows, cols))}
    raise ValueError(f"unknown matrix type {mtype!r}")


def expert_parts(cfg: GptOssConfig) -> dict[str, tuple[str, tuple[int, ...]]]:
    """The arrays of one expert, in file order (MXFP4 blocks in kernel nibble order)."""
    H, I = cfg.hidden_size, cfg.intermediate_size
    return {
        "gate_up_blocks": ("uint8", (2 * I, H // BLOCK, BLOCK // 2)),
        "gate_up_scales": ("uint8", (2 * I, H // BLOCK)),
        "gate_up_bias": ("float32", (2 * I,)),
        "down_blocks": ("uint8", (H, I // BLOCK, BLOCK // 2)),
        "down_scales": ("uint8", (H, I // BLOCK)),
        "down_bias": ("float32", (H,)),
    }


def nbytes_of(dtype: str, shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(DTYPES[dtype]).itemsize


@dataclass
class Layout:
    """Assigns every tensor its byte range in weights.bin, in the order they are added."""

    tensors: dict = field(default_factory=dict)
    size: int = 0

    def _place(self, nbytes: int) -> int:
        off = align_up(self.size, ALIGN)
        self.size = off + nbytes
        return off

    def add_vector(self, name: str, n: int) -> None:
        off = self._place(n * 4)
        self.tensors[name] = {"type": "f32", "shape": [n],
                              "parts": {"data": {"dtype": "float32", "shape": [n], "offset": off, "nbytes": n * 4}}}

    def add_matrix(self, name: str, mtype: str, rows: int, cols: int) -> None:
        parts = {}
        for part, (dtype, shape) in matrix_parts(mtype, rows, cols).items():
            nb = nbytes_of(dtype, shape)
            parts[part] = {"dtype": dtype, "shape": list(shape), "offset": self._place(nb), "nbytes": nb}
        self.tensors[name] = {"type": mtype, "shape": [rows, cols], "parts": parts}

    def add_experts(self, name: str, cfg: GptOssConfig) -> None:
        parts, rel = {}, 0
        for part, (dtype, shape) in expert_parts(cfg).items():
            rel = align_up(rel, PART_ALIGN)
            nb = nbytes_of(dtype, shape)
            parts[part] = {"dtype": dtype, "shape": list(shape), "offset": rel, "nbytes": nb}
            rel += nb
        stride = align_up(rel, ALIGN)
        count = cfg.num_local_experts
        off = self._place(count * stride)
        self.tensors[name] = {"type": "mxfp4_experts", "count": count, "offset": off, "stride": stride,
                              "expert_bytes": rel, "nbytes": count * stride, "parts": parts}


def layer_tensor_names(i: int) -> dict[str, str]:
    p = f"layers.{i}."
    return {k: p + k for k in ("attn_norm", "qkv", "qkv_bias", "o", "o_bias", "sinks",
                               "mlp_norm", "router", "router_bias", "experts")}


def plan_layout(cfg: GptOssConfig, preset: str) -> Layout:
    """The order and placement of every tensor for a config and preset (see FORMAT.md)."""
    mtype = {"q8": "q8", "q4": "q4", "bf16": "bf16"}[preset]
    H, V = cfg.hidden_size, cfg.vocab_size
    lay = Layout()
    lay.add_matrix("embed", mtype, V, H)
    for i in range(cfg.num_hidden_layers):
        n = layer_tensor_names(i)
        lay.add_vector(n["attn_norm"], H)
        lay.add_matrix(n["qkv"], mtype, cfg.qkv_rows, H)
        lay.add_vector(n["qkv_bias"], cfg.qkv_rows)
        lay.add_matrix(n["o"], mtype, H, cfg.q_dim)
        lay.add_vector(n["o_bias"], H)
        lay.add_vector(n["sinks"], cfg.num_attention_heads)
        lay.add_vector(n["mlp_norm"], H)
        lay.add_matrix(n["router"], "bf16", cfg.num_local_experts, H)  # routing decisions: kept exact
        lay.add_vector(n["router_bias"], cfg.num_local_experts)
        lay.add_experts(n["experts"], cfg)
    lay.add_vector("norm", H)
    lay.add_matrix("lm_head", mtype, V, H)
    return lay


class ModelFiles:
    """An opened, validated model directory: manifest, config and memory-mapped tensors."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        mpath = self.path / MANIFEST
        if not self.path.is_dir():
            raise FormatError(f"{self.path} is not a directory; convert a checkpoint first: "
                              f"edgeoss convert openai/gpt-oss-20b {self.path}")
        if not mpath.exists():
            hint = (" (it looks like a Hugging Face checkpoint: convert it with "
                    f"`edgeoss convert {self.path} OUT`)") if (self.path / "config.json").exists() else ""
            raise FormatError(f"{self.path} is not an edgeoss model: it has no {MANIFEST}{hint}")
        try:
            self.manifest = json.loads(mpath.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise FormatError(f"{mpath} is not valid JSON ({e}); re-convert the model") from None
        m = self.manifest
        if m.get("format") != FORMAT_NAME:
            raise FormatError(f"{mpath} is not an edgeoss manifest")
        if m.get("format_version") != FORMAT_VERSION:
            raise FormatError(f"{self.path} uses format version {m.get('format_version')}; this edgeoss "
                              f"reads version {FORMAT_VERSION}: re-convert the model with this version")
        self.config = GptOssConfig.from_dict(m["config"])
        self.preset = m["preset"]
        wpath = self.path / m.get("weights_file", WEIGHTS)
        size = wpath.stat().st_size if wpath.exists() else -1
        if size != m["weights_bytes"]:
            raise FormatError(f"{wpath} has {size} bytes but the manifest expects {m['weights_bytes']}: "
                              "the model is incomplete or damaged; re-convert it")
        self.tensors: dict = m["tensors"]
        for name, t in self.tensors.items():
            end = t["offset"] + t["nbytes"] if t["type"] == "mxfp4_experts" else \
                max(p["offset"] + p["nbytes"] for p in t["parts"].values())
            if end > size:
                raise FormatError(f"{self.path}: tensor {name} lies beyond the end of {wpath.name}")
        self.weights_path = wpath
        self._mm = np.memmap(wpath, dtype=np.uint8, mode="r")
        advise_huge_pages(self._mm._mmap)
        tok = m.get("tokenizer")
        self.vocab_path = self.path / tok["file"] if tok else None

    # -- views ----------------------------------------------------------------------------
    def part(self, name: str, part: str) -> np.ndarray:
        p = self.tensors[name]["parts"][part]
        raw = self._mm[p["offset"]:p["offset"] + p["nbytes"]]
        return raw.view(DTYPES[p["dtype"]]).reshape(p["shape"])

    def vector(self, name: str) -> np.ndarray:
        return self.part(name, "data")

    def matrix(self, name: str) -> tuple[str, dict[str, np.ndarray]]:
        t = self.tensors[name]
        return t["type"], {part: self.part(name, part) for part in t["parts"]}

    def experts(self, name: str) -> np.ndarray:
        """The experts of one layer as uint8 [count, stride]: row e is expert e's byte range."""
        t = self.tensors[name]
        return self._mm[t["offset"]:t["offset"] + t["nbytes"]].reshape(t["count"], t["stride"])

    def expert_part_offsets(self, name: str) -> dict[str, int]:
        return {k: v["offset"] for k, v in self.tensors[name]["parts"].items()}
