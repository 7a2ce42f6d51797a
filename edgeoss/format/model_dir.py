"""The edgeoss model directory: the one module that knows docs/FORMAT.md.

A model directory holds `edgeoss.json` (the manifest), `weights.bin` (every tensor, each
starting on a 4 KiB boundary) and, when converted with a tokenizer, `o200k_base.tiktoken`.
The writer (edgeoss.convert) lays tensors out with `Layout`; the runtime opens them with
`ModelFiles`, which validates the manifest against the file before anything is used.
"""

from __future__ import annotations

import json
import math
import os
import re
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
    return math.prod(shape) * np.dtype(DTYPES[dtype]).itemsize  # Python ints: exact for any shape


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


# ---------------------------------------------------------------------------------------------
# Manifest validation (FORMAT.md, "Validation"): every field's presence and type, the config's
# counts, and every tensor's type, shape, parts, sizes and byte range, before a weight is used.

CHECKSUM_RE = re.compile(r"[a-z0-9_]+:[0-9a-f]+")   # "<algorithm>:<lowercase hex digest>"
LAYER_TYPES = ("sliding_attention", "full_attention")
CONFIG_INTS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "head_dim", "num_local_experts", "num_experts_per_tok",
               "vocab_size", "sliding_window")   # required, each a positive integer
ADVICE = "the manifest is damaged or was edited: reconvert the model"


def _kind(v) -> str:
    if v is None:
        return "null"
    for t, name in ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"),
                    (list, "a list"), (dict, "an object")):
        if isinstance(v, t):
            return name
    return type(v).__name__


def _show(v) -> str:
    text = json.dumps(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _at(parent: str, key: str) -> str:
    return f"{parent}[{json.dumps(key)}]"


class _Checker:
    """Type checks that raise FormatError naming the field (`config.hidden_size`,
    `tensors["embed"].parts["qs"].offset`) and what to do."""

    def __init__(self, where: Path):
        self.where = where

    def fail(self, field_path: str | None, msg: str, advice: str = ADVICE):
        at = f"{field_path}: " if field_path else ""
        raise FormatError(f"{self.where}: {at}{msg}; {advice}")

    def need(self, d: dict, key: str, field_path: str):
        if key not in d:
            self.fail(field_path, "missing")
        return d[key]

    def int_(self, v, field_path: str, lo: int = 0) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            self.fail(field_path, f"expected an integer, got {_kind(v)} ({_show(v)})")
        if v < lo:
            self.fail(field_path, f"{v} is less than {lo}")
        return v

    def num(self, v, field_path: str) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            self.fail(field_path, f"expected a number, got {_kind(v)} ({_show(v)})")
        if not math.isfinite(v):
            self.fail(field_path, f"{v} is not a finite number")
        return v

    def typed(self, v, t: type, field_path: str):
        if not isinstance(v, t):
            self.fail(field_path, f"expected {_kind(t())}, got {_kind(v)} ({_show(v)})")
        return v

    def filename(self, v, field_path: str) -> str:
        self.typed(v, str, field_path)
        if v in ("", ".", "..") or "/" in v or "\\" in v or "\0" in v:
            self.fail(field_path, f"{_show(v)} is not a file name inside the model directory")
        return v

    def shape(self, v, field_path: str) -> list[int]:
        self.typed(v, list, field_path)
        if not v or any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in v):
            self.fail(field_path, f"{_show(v)} is not a list of positive integers")
        return v

    def checksum(self, v, field_path: str) -> str:
        self.typed(v, str, field_path)
        if not CHECKSUM_RE.fullmatch(v):
            self.fail(field_path, f"{_show(v)} is not \"<algorithm>:<lowercase hex digest>\"")
        return v


def _check_config(c: _Checker, d: dict) -> GptOssConfig:
    v = {k: c.int_(c.need(d, k, f"config.{k}"), f"config.{k}", lo=1) for k in CONFIG_INTS}
    types = c.typed(c.need(d, "layer_types", "config.layer_types"), list, "config.layer_types")
    for i, t in enumerate(types):
        if t not in LAYER_TYPES:
            c.fail(f"config.layer_types[{i}]", f"{_show(t)}, expected \"sliding_attention\" or \"full_attention\"")
    if len(types) != v["num_hidden_layers"]:
        c.fail("config.num_hidden_layers", f"{v['num_hidden_layers']}, but config.layer_types lists "
               f"{len(types)} layers")
    for k, low in (("rope_theta", 1), ("swiglu_limit", 0), ("rms_norm_eps", None), ("swiglu_alpha", None)):
        if k in d:
            x = c.num(d[k], f"config.{k}")
            if low is not None and not x > low:
                c.fail(f"config.{k}", f"{x} must be more than {low}")
            if k == "rms_norm_eps" and x < 0:
                c.fail(f"config.{k}", f"{x} is negative")
    if "max_position_embeddings" in d:
        c.int_(d["max_position_embeddings"], "config.max_position_embeddings", lo=1)
    limit = d.get("max_position_embeddings", GptOssConfig.max_position_embeddings)
    if v["sliding_window"] > limit:
        c.fail("config.sliding_window", f"{v['sliding_window']} is more than config.max_position_embeddings ({limit})")
    for i, e in enumerate(c.typed(d.get("eos_token_ids", []), list, "config.eos_token_ids")):
        # an id past a small test vocabulary is harmless (it is never sampled), so no upper bound
        c.int_(e, f"config.eos_token_ids[{i}]", lo=0)
    rs = d.get("rope_scaling")
    if rs is not None:
        c.typed(rs, dict, "config.rope_scaling")
        for k in ("factor", "beta_fast", "beta_slow", "original_max_position_embeddings"):
            if k in rs and not c.num(rs[k], f"config.rope_scaling.{k}") > 0:
                c.fail(f"config.rope_scaling.{k}", f"{rs[k]} must be positive")
        if "truncate" in rs:
            c.typed(rs["truncate"], bool, "config.rope_scaling.truncate")
        for k in ("rope_type", "type"):
            if k in rs:
                c.typed(rs[k], str, f"config.rope_scaling.{k}")
    for k in ("hidden_size", "intermediate_size"):
        if v[k] % BLOCK:
            c.fail(f"config.{k}", f"{v[k]} is not a multiple of {BLOCK} (quantization blocks)")
    if v["num_attention_heads"] % v["num_key_value_heads"]:
        c.fail("config.num_attention_heads", f"{v['num_attention_heads']} is not a multiple of "
               f"config.num_key_value_heads ({v['num_key_value_heads']})")
    if v["head_dim"] % 2:
        c.fail("config.head_dim", f"{v['head_dim']} is odd (rotary embedding needs pairs)")
    if v["num_experts_per_tok"] > v["num_local_experts"]:
        c.fail("config.num_experts_per_tok", f"{v['num_experts_per_tok']} is more than "
               f"config.num_local_experts ({v['num_local_experts']})")
    return GptOssConfig.from_dict(d)


def _check_parts(c: _Checker, P: str, parts, want: dict, kind: str) -> dict:
    c.typed(parts, dict, f"{P}.parts")
    for pn in want:
        if pn not in parts:
            c.fail(_at(f"{P}.parts", pn), "missing")
    for pn, p in parts.items():
        PP = _at(f"{P}.parts", pn)
        if pn not in want:
            c.fail(PP, f"is not a part of a {kind} tensor (it has {', '.join(want)})")
        c.typed(p, dict, PP)
        w = want[pn]
        dtype = c.need(p, "dtype", f"{PP}.dtype")
        if not isinstance(dtype, str) or dtype not in DTYPES:
            c.fail(f"{PP}.dtype", f"{_show(dtype)} is not a known dtype ({', '.join(DTYPES)})")
        if dtype != w["dtype"]:
            c.fail(f"{PP}.dtype", f"{_show(dtype)}, but a {kind} tensor stores this part as {_show(w['dtype'])}")
        shape = c.shape(c.need(p, "shape", f"{PP}.shape"), f"{PP}.shape")
        if shape != w["shape"]:
            c.fail(f"{PP}.shape", f"{shape}, but the config implies {w['shape']}")
        nb = c.int_(c.need(p, "nbytes", f"{PP}.nbytes"), f"{PP}.nbytes")
        if nb != w["nbytes"]:
            c.fail(f"{PP}.nbytes", f"{nb}, but {dtype} {shape} takes {w['nbytes']} bytes")
        c.int_(c.need(p, "offset", f"{PP}.offset"), f"{PP}.offset")
        if "checksum" in p:
            c.checksum(p["checksum"], f"{PP}.checksum")
    return parts


def _check_tensors(c: _Checker, tensors: dict, cfg: GptOssConfig, preset: str, size: int, wname: str) -> None:
    want = plan_layout(cfg, preset).tensors
    for name in want:
        if name not in tensors:
            c.fail(_at("tensors", name), "missing")
    ranges = []   # (start, end, field path) of every byte range, to find overlaps

    def within(P: str, off: int, nb: int) -> None:
        if off + nb > size:
            c.fail(f"{P}.offset", f"{off} + {nb} bytes runs past the end of {wname} ({size} bytes)")
        ranges.append((off, off + nb, P))

    first_experts = None
    for name, t in tensors.items():
        P = _at("tensors", name)
        if name not in want:
            c.fail(P, "is not a tensor of this format (docs/FORMAT.md lists them)")
        c.typed(t, dict, P)
        w = want[name]
        typ = c.need(t, "type", f"{P}.type")
        if typ != w["type"]:
            why = f" (preset {preset})" if w["type"] == preset else ""
            c.fail(f"{P}.type", f"{_show(typ)}, but this tensor is {_show(w['type'])}{why}")
        wparts = {pn: {"dtype": p["dtype"], "shape": p["shape"], "nbytes": p["nbytes"]} for pn, p in w["parts"].items()}
        if typ != "mxfp4_experts":
            shape = c.shape(c.need(t, "shape", f"{P}.shape"), f"{P}.shape")
            if shape != w["shape"]:
                c.fail(f"{P}.shape", f"{shape}, but the config implies {w['shape']}")
            parts = _check_parts(c, P, c.need(t, "parts", f"{P}.parts"), wparts, typ)
            for pn, p in parts.items():
                PP = _at(f"{P}.parts", pn)
                if p["offset"] % ALIGN:
                    c.fail(f"{PP}.offset", f"{p['offset']} is not a multiple of {ALIGN}")
                within(PP, p["offset"], p["nbytes"])
            continue
        # experts: `count` expert ranges of `stride` bytes, parts at offsets relative to each
        count = c.int_(c.need(t, "count", f"{P}.count"), f"{P}.count", lo=1)
        if count != cfg.num_local_experts:
            c.fail(f"{P}.count", f"{count}, but config.num_local_experts is {cfg.num_local_experts}")
        off = c.int_(c.need(t, "offset", f"{P}.offset"), f"{P}.offset")
        stride = c.int_(c.need(t, "stride", f"{P}.stride"), f"{P}.stride", lo=1)
        eb = c.int_(c.need(t, "expert_bytes", f"{P}.expert_bytes"), f"{P}.expert_bytes", lo=1)
        nb = c.int_(c.need(t, "nbytes", f"{P}.nbytes"), f"{P}.nbytes")
        for k, x in (("offset", off), ("stride", stride)):
            if x % ALIGN:
                c.fail(f"{P}.{k}", f"{x} is not a multiple of {ALIGN}")
        if eb > stride:
            c.fail(f"{P}.expert_bytes", f"{eb} is more than the stride ({stride})")
        if nb != count * stride:
            c.fail(f"{P}.nbytes", f"{nb}, but count × stride is {count * stride}")
        parts = _check_parts(c, P, c.need(t, "parts", f"{P}.parts"), wparts, typ)
        inner = []
        for pn, p in parts.items():
            PP = _at(f"{P}.parts", pn)
            if p["offset"] % PART_ALIGN:
                c.fail(f"{PP}.offset", f"{p['offset']} is not a multiple of {PART_ALIGN}")
            if p["offset"] + p["nbytes"] > eb:
                c.fail(f"{PP}.offset", f"{p['offset']} + {p['nbytes']} bytes runs past the expert's "
                       f"expert_bytes ({eb})")
            inner.append((p["offset"], p["offset"] + p["nbytes"], PP))
        inner.sort()
        for (a0, a1, pa), (b0, b1, pb) in zip(inner, inner[1:]):
            if b0 < a1:
                c.fail(f"{pb}.offset", f"bytes {b0}-{b1} of each expert overlap {pa} (bytes {a0}-{a1})")
        if "checksums" in t:
            sums = c.typed(t["checksums"], list, f"{P}.checksums")
            if len(sums) != count:
                c.fail(f"{P}.checksums", f"{len(sums)} checksums for {count} experts")
            for e, s in enumerate(sums):
                c.checksum(s, f"{P}.checksums[{e}]")
        shape_of = (stride, eb, {pn: p["offset"] for pn, p in parts.items()})
        if first_experts is None:
            first_experts = (P, shape_of)
        elif shape_of != first_experts[1]:   # the expert cache lays every layer out as the first
            c.fail(P, f"stride, expert_bytes or part offsets differ from {first_experts[0]}'s: every "
                   "layer's experts must share one layout")
        within(P, off, nb)
    ranges.sort()
    for (a0, a1, pa), (b0, b1, pb) in zip(ranges, ranges[1:]):
        if b0 < a1:
            c.fail(f"{pb}.offset", f"bytes {b0}-{b1} overlap {pa} (bytes {a0}-{a1})")


def validate_manifest(m, model_dir: str | os.PathLike) -> GptOssConfig:
    """Check a parsed edgeoss.json against docs/FORMAT.md and the directory it describes; return
    its config. A fault raises FormatError naming the field (`config.num_hidden_layers: ...`)."""
    model_dir = Path(model_dir)
    c = _Checker(model_dir / MANIFEST)
    if not isinstance(m, dict):
        c.fail(None, f"expected a JSON object, got {_kind(m)}")
    if m.get("format") != FORMAT_NAME:
        raise FormatError(f"{c.where} is not an edgeoss manifest (its \"format\" is {_show(m.get('format'))}, "
                          f"not \"{FORMAT_NAME}\")")
    version = c.int_(c.need(m, "format_version", "format_version"), "format_version")
    if version != FORMAT_VERSION:
        raise FormatError(f"{model_dir} uses format version {version}; this edgeoss reads version "
                          f"{FORMAT_VERSION}: re-convert the model with this version")
    preset = c.need(m, "preset", "preset")
    if preset not in PRESETS:
        c.fail("preset", f"{_show(preset)}, expected one of {', '.join(PRESETS)}")
    alignment = c.int_(c.need(m, "alignment", "alignment"), "alignment")
    if alignment != ALIGN:
        c.fail("alignment", f"{alignment}, but this format aligns to {ALIGN}")
    wname = c.filename(m.get("weights_file", WEIGHTS), "weights_file")
    wbytes = c.int_(c.need(m, "weights_bytes", "weights_bytes"), "weights_bytes")
    wpath = model_dir / wname
    size = wpath.stat().st_size if wpath.is_file() else -1
    if size != wbytes:
        have = f"has {size} bytes" if size >= 0 else "is missing"
        c.fail("weights_bytes", f"{wname} {have} but the manifest expects {wbytes}",
               "the model is incomplete or damaged: reconvert it")
    cfg = _check_config(c, c.typed(c.need(m, "config", "config"), dict, "config"))
    tok = m.get("tokenizer")
    if tok is not None:
        c.typed(tok, dict, "tokenizer")
        vfile = c.filename(c.need(tok, "file", "tokenizer.file"), "tokenizer.file")
        c.typed(c.need(tok, "encoding", "tokenizer.encoding"), str, "tokenizer.encoding")
        digest = c.typed(c.need(tok, "sha256", "tokenizer.sha256"), str, "tokenizer.sha256")
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            c.fail("tokenizer.sha256", f"{_show(digest)} is not 64 lowercase hex digits")
        if not (model_dir / vfile).is_file():
            c.fail("tokenizer.file", f"{vfile} is missing from {model_dir}", "the model is incomplete: reconvert it")
    c.typed(c.need(m, "source", "source"), dict, "source")
    tensors = c.typed(c.need(m, "tensors", "tensors"), dict, "tensors")
    _check_tensors(c, tensors, cfg, preset, size, wname)
    return cfg


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
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            # ValueError: bad JSON or a number of more digits than Python converts; RecursionError:
            # nesting deeper than the JSON decoder's recursion allows
            raise FormatError(f"{mpath} is not valid JSON ({str(e)[:200]}); re-convert the model") from None
        m = self.manifest
        self.config = validate_manifest(m, self.path)  # FormatError naming the field, before any weight is touched
        wpath = self.path / m.get("weights_file", WEIGHTS)
        self.preset = m["preset"]
        self.tensors: dict = m["tensors"]
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
