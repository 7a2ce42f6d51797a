"""Synthetic gpt-oss checkpoints: random weights in the exact layout of the Hugging Face repos.

The real weights cannot be downloaded where edgeoss is tested, so every test and benchmark runs
on checkpoints made here: the tensor names, shapes, dtypes, shard files, index, config and
tokenizer files of openai/gpt-oss-20b (or -120b, or a smaller variant), filled with random
values whose scales keep a forward pass finite and non-degenerate through every layer.

    make_checkpoint("/tmp/tiny")                        # 4 layers, hidden 128: ~100 MB, a second
    make_checkpoint("/tmp/20b", preset="20b")           # the real 13.76 GB layout
    make_checkpoint("/tmp/x", layers=2, experts=4, hidden=2880, intermediate=2880,
                    heads=64, kv_heads=8, vocab=1024)   # real widths, few layers

Layout, as in openai/gpt-oss-20b:
  config.json, generation_config.json, tokenizer.json / tokenizer_config.json /
  special_tokens_map.json (copied from a tokenizer folder), model-0000K-of-0000M.safetensors
  (zero-based, "of" the last index: the real repos' quirk) and model.safetensors.index.json in
  the real order (layers sorted as strings, embed/norm/lm_head last). Within a shard the data
  is ordered as the safetensors library orders it (BF16 tensors before U8, each by name).
  A single-shard checkpoint is written as model.safetensors with no index, as transformers does.
  edgeoss_synthetic.json records how the checkpoint was made; nothing needs to read it.

Randomness. Every tensor draws from its own PCG64 stream keyed by (seed, tensor name) and read
by position (`PCG64.advance`), so the bytes depend only on the seed and the config, never on
how the writer chunks the rows. BF16 values come from 65,536-level quantile tables (a uniform
16-bit draw indexes the table), so "normal" values are exact quantiles truncated at ~4.3 sigma.
MXFP4 expert weights: uniformly random e2m1 codes (two per byte, low nibble = earlier element),
and for each 32-value block the e8m0 scale that brings the block's RMS closest (in log2) to the
target std, the rounding of log2 dithered (target * 2**u, u uniform in [-1/2, 1/2]) so each
tensor's blocks use the scales on both sides of the target in proportion; never 255. The dense-experts variant stores exactly the
dequantized values of the same codes and scales (BF16 holds every e2m1 * 2**k exactly),
transposed to transformers' [E, in, out], so a dense checkpoint and its MXFP4 twin with the
same seed are the same model. Since streams are keyed by tensor name, variants that differ
only in depth share their common layers (and embeddings, if the vocabulary is the same).

Scales (fan_in = the input width of a matrix; normal(mean, std) unless noted):
  embed_tokens 0 +- 1                      norms 1 +- 0.1
  q/k/v/o weights 0 +- 1/sqrt(fan_in)      q/k/v biases 0 +- 0.1, o bias 0 +- 0.05
  sinks uniform(-1, 4)                     router weight 0 +- 1/sqrt(H), bias 0 +- 0.1
  gate_up 1.5/sqrt(H) (MXFP4 block RMS)    gate_up bias 0 +- 0.1  (a few 1e-4 reach the clamp)
  down 0.3/sqrt(I) (MXFP4 block RMS)       down bias 0 +- 0.05
  lm_head 0 +- 2/sqrt(H)                   (logits of std ~2 over the vocabulary)
With these, the hidden state's RMS goes from 1 after the embedding to about 3.5 after 24 layers
(tests/test_synthetic.py checks this through tests/reference.py).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import statistics
import struct
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..format.safetensors import TensorSpec, f32_to_bf16_bits, write_safetensors

GENERATOR_VERSION = 1  # bump when the bytes produced for a given (seed, config) change

# ---------------------------------------------------------------------------------------
# Configs

# The structural hyperparameters of each preset, under config.json's names.
PRESETS: dict[str, dict] = {
    "tiny": dict(hidden_size=128, intermediate_size=128, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                 num_local_experts=8, num_experts_per_tok=4, vocab_size=201088, sliding_window=8),
    "20b": dict(hidden_size=2880, intermediate_size=2880, num_hidden_layers=24,
                num_attention_heads=64, num_key_value_heads=8, head_dim=64,
                num_local_experts=32, num_experts_per_tok=4, vocab_size=201088, sliding_window=128),
    "120b": dict(hidden_size=2880, intermediate_size=2880, num_hidden_layers=36,
                 num_attention_heads=64, num_key_value_heads=8, head_dim=64,
                 num_local_experts=128, num_experts_per_tok=4, vocab_size=201088,
                 sliding_window=128),
}

# Short override names (the CLI's flags) -> config.json keys.
OVERRIDE_KEYS: dict[str, str] = {
    "layers": "num_hidden_layers",
    "hidden": "hidden_size",
    "intermediate": "intermediate_size",
    "heads": "num_attention_heads",
    "kv_heads": "num_key_value_heads",
    "head_dim": "head_dim",
    "experts": "num_local_experts",
    "experts_per_token": "num_experts_per_tok",
    "vocab": "vocab_size",
    "sliding_window": "sliding_window",
}

# Special token ids of the real tokenizer (o200k_harmony).
BOS_ID, PAD_ID, RETURN_ID, CALL_ID = 199998, 199999, 200002, 200012
TOKENIZER_VOCAB = 200019  # ids the tokenizer can produce; the embedding has 201088 rows
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
TRANSFORMERS_VERSION = "4.55.0.dev0"  # what the real config.json and generation_config.json say

# Where openai/gpt-oss-20b's index cuts its three shards: each named tensor opens a new shard.
REAL_20B_SHARD_STARTS = ("model.layers.18.self_attn.q_proj.weight",
                         "model.layers.6.mlp.experts.gate_up_proj_blocks")
REAL_20B_TOTAL_SIZE = 13_761_264_768
MAX_SHARD_BYTES = 5_000_000_000  # "auto" sharding for 120b: 15 shards, as the real repo has


def _special_ids(vocab: int) -> dict[str, int]:
    """The real special ids when they fit the vocabulary, else the top ids of a small one."""
    if vocab >= TOKENIZER_VOCAB:
        return dict(bos=BOS_ID, pad=PAD_ID, eos=RETURN_ID, call=CALL_ID)
    return dict(bos=vocab - 3, pad=vocab - 1, eos=vocab - 2, call=vocab - 4)


def make_config(preset: str = "tiny", *, dense_experts: bool = False, **overrides) -> dict:
    """config.json for a preset, with overrides given by short name (layers=2, experts=4, ...)
    or by config.json key (rope_theta=..., num_hidden_layers=...)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    shape = dict(PRESETS[preset])
    extra = {}
    for key, value in overrides.items():
        if value is None:
            continue
        key = OVERRIDE_KEYS.get(key, key)
        (shape if key in shape else extra)[key] = value
    _check_shape(shape)
    L = shape["num_hidden_layers"]
    ids = _special_ids(shape["vocab_size"])
    config = {
        "architectures": ["GptOssForCausalLM"],
        "attention_bias": True,
        "attention_dropout": 0.0,
        "eos_token_id": ids["eos"],
        "experts_per_token": shape["num_experts_per_tok"],
        "head_dim": shape["head_dim"],
        "hidden_act": "silu",
        "hidden_size": shape["hidden_size"],
        "initial_context_length": 4096,
        "initializer_range": 0.02,
        "intermediate_size": shape["intermediate_size"],
        "layer_types": ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(L)],
        "max_position_embeddings": 131072,
        "model_type": "gpt_oss",
        "num_attention_heads": shape["num_attention_heads"],
        "num_experts_per_tok": shape["num_experts_per_tok"],
        "num_hidden_layers": L,
        "num_key_value_heads": shape["num_key_value_heads"],
        "num_local_experts": shape["num_local_experts"],
        "output_router_logits": False,
        "pad_token_id": ids["pad"],
        "quantization_config": {
            "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                       "model.embed_tokens", "lm_head"],
            "quant_method": "mxfp4",
        },
        "rms_norm_eps": 1e-05,
        "rope_scaling": {"beta_fast": 32.0, "beta_slow": 1.0, "factor": 32.0,
                         "original_max_position_embeddings": 4096, "rope_type": "yarn",
                         "truncate": False},
        "rope_theta": 150000,
        "router_aux_loss_coef": 0.9,
        "sliding_window": shape["sliding_window"],
        "swiglu_limit": 7.0,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": TRANSFORMERS_VERSION,
        "use_cache": True,
        "vocab_size": shape["vocab_size"],
    }
    if dense_experts:
        del config["quantization_config"]
    for key, value in extra.items():
        if key == "quantization_config" and dense_experts:
            raise ValueError("dense experts have no quantization_config")
        config[key] = value
    return config


def _check_shape(s: dict) -> None:
    for key, value in s.items():
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")
    if s["hidden_size"] % 32 or s["intermediate_size"] % 32:
        raise ValueError("hidden_size and intermediate_size must be multiples of 32 "
                         f"(MXFP4 blocks), got {s['hidden_size']} and {s['intermediate_size']}")
    if s["num_attention_heads"] % s["num_key_value_heads"]:
        raise ValueError(f"num_attention_heads ({s['num_attention_heads']}) must be a multiple "
                         f"of num_key_value_heads ({s['num_key_value_heads']})")
    if s["head_dim"] % 2:
        raise ValueError(f"head_dim must be even for rotary embeddings, got {s['head_dim']}")
    if s["num_experts_per_tok"] > s["num_local_experts"]:
        raise ValueError(f"num_experts_per_tok ({s['num_experts_per_tok']}) exceeds "
                         f"num_local_experts ({s['num_local_experts']})")
    if s["vocab_size"] < 8:
        raise ValueError(f"vocab_size must be at least 8, got {s['vocab_size']}")


def generation_config(config: dict) -> dict:
    ids = _special_ids(config["vocab_size"])
    return {"bos_token_id": ids["bos"], "do_sample": True,
            "eos_token_id": [ids["eos"], ids["pad"], ids["call"]],
            "pad_token_id": ids["pad"], "transformers_version": TRANSFORMERS_VERSION}


# ---------------------------------------------------------------------------------------
# Random streams and value tables


def _stream(seed: int, key: str) -> np.random.PCG64:
    digest = hashlib.blake2b(key.encode(), digest_size=16).digest()
    return np.random.PCG64(np.random.SeedSequence([seed, *struct.unpack("<4I", digest)]))


def random_bytes(seed: int, key: str, begin: int, end: int) -> np.ndarray:
    """Bytes [begin, end) of the stream named `key`: the same bytes however the range is cut."""
    w0, w1 = begin // 8, -(-end // 8)
    raw = _stream(seed, key).advance(w0).random_raw(w1 - w0)
    return raw.astype("<u8", copy=False).view(np.uint8)[begin - 8 * w0:end - 8 * w0]


@lru_cache(maxsize=1)
def _normal_quantiles() -> np.ndarray:
    """The 65,536 standard-normal quantiles at (i + 0.5) / 65536, float64, symmetric."""
    inv = statistics.NormalDist().inv_cdf
    return np.array([inv((i + 0.5) / 65536) for i in range(65536)], dtype=np.float64)


@lru_cache(maxsize=None)
def _bf16_table(kind: str, a: float, b: float) -> np.ndarray:
    """uint16 draw -> bf16 bits. normal: mean a, std b; uniform: [a, b)."""
    if kind == "normal":
        values = a + b * _normal_quantiles()
    elif kind == "uniform":
        values = a + (b - a) * (np.arange(65536, dtype=np.float64) + 0.5) / 65536
    else:
        raise ValueError(kind)
    return f32_to_bf16_bits(values.astype(np.float32))


# e2m1: magnitudes indexed by bits 0-2 of a code, bit 3 the sign.
E2M1 = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0], dtype=np.float32)
_FP4 = np.concatenate([E2M1, -E2M1])
# byte -> its two values (low nibble first), and uint16 (two bytes) -> sum of (2*value)**2
# over its four codes: an exact integer, 0..576.
_BYTE_VALUES = np.stack([_FP4[np.arange(256) & 15], _FP4[np.arange(256) >> 4]], axis=1)
_SQ4 = (2 * _FP4) ** 2
_U16_SUMSQ4 = (_SQ4[np.arange(65536) & 15] + _SQ4[(np.arange(65536) >> 4) & 15]
               + _SQ4[(np.arange(65536) >> 8) & 15] + _SQ4[np.arange(65536) >> 12]).astype(np.float32)


@lru_cache(maxsize=None)
def _scale_table(target_std: float) -> np.ndarray:
    """[block sum of (2*value)**2 (0..4608), jitter byte j] -> the e8m0 byte whose 2**(s-127)
    brings the block's RMS closest, in log2, to target_std * 2**((j - 127.5) / 256): the
    rounding of log2 is dithered, so a tensor's blocks use the two scales around the target in
    proportion (no systematic bias, and scales that vary). Never 255 (NaN) or 0."""
    s = np.arange(4609, dtype=np.float64)[:, None]
    rms = np.sqrt(np.maximum(s, 1.0) / 128.0)  # an all-zero block counts as RMS 0.09
    jitter = (np.arange(256, dtype=np.float64)[None, :] - 127.5) / 256.0
    exponent = np.rint(np.log2(target_std / rms) + jitter)
    return np.clip(127 + exponent, 1, 254).astype(np.uint8).ravel()


def mxfp4_scales(blocks: np.ndarray, jitter: np.ndarray, target_std: float) -> np.ndarray:
    """uint8 codes [..., G, 16] and one random byte per block [..., G] -> uint8 scales [..., G]
    giving each block an RMS of about target_std (times its jitter)."""
    sums = _U16_SUMSQ4[blocks.reshape(-1, 8 * 2).view("<u2")] @ np.ones(8, dtype=np.float32)
    index = sums.astype(np.int64) * 256 + jitter.reshape(-1)
    return _scale_table(float(target_std))[index].reshape(blocks.shape[:-1])


def mxfp4_dequantize(blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """uint8 [..., G, 16] + [..., G] -> float32 [..., G*32], exact."""
    values = _BYTE_VALUES[blocks].reshape(*blocks.shape[:-1], 32)
    values *= np.ldexp(np.float32(1.0), scales.astype(np.int32) - 127)[..., None]
    return values.reshape(*blocks.shape[:-2], blocks.shape[-2] * 32)


# ---------------------------------------------------------------------------------------
# Tensors


def _bf16_spec(seed: int, name: str, shape: tuple[int, ...], kind: str, a: float, b: float) -> TensorSpec:
    table = _bf16_table(kind, float(a), float(b))
    row = int(np.prod(shape[1:], dtype=np.int64))

    def fill(start: int, stop: int) -> np.ndarray:
        draws = random_bytes(seed, name, 2 * start * row, 2 * stop * row).view("<u2")
        return table[draws].reshape((stop - start, *shape[1:]))

    return TensorSpec(name, "BF16", tuple(shape), fill)


class _Experts:
    """One expert matrix (gate_up or down) of one layer: MXFP4 codes drawn per expert from the
    stream `key`, scales derived from them. Scales computed while writing the blocks are kept
    until the scales tensor asks for them, so each expert's codes are drawn once."""

    def __init__(self, seed: int, key: str, E: int, rows: int, cols: int, target_std: float):
        self.seed, self.key, self.E, self.rows, self.cols = seed, key, E, rows, cols
        self.G = cols // 32
        self.per_expert = rows * self.G * 16
        self.target_std = target_std
        self._scales: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def blocks_of(self, e: int) -> np.ndarray:
        b = random_bytes(self.seed, self.key, e * self.per_expert, (e + 1) * self.per_expert)
        return b.reshape(self.rows, self.G, 16)

    def compute_scales(self, e: int, blocks: np.ndarray) -> np.ndarray:
        n = self.rows * self.G
        jitter = random_bytes(self.seed, self.key + "#scale-jitter", e * n, (e + 1) * n)
        return mxfp4_scales(blocks, jitter, self.target_std)

    def fill_blocks(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, self.rows, self.G, 16), dtype=np.uint8)
        for e in range(start, stop):
            out[e - start] = b = self.blocks_of(e)
            with self._lock:
                self._scales[e] = self.compute_scales(e, b)
        return out

    def scales_of(self, e: int) -> np.ndarray:
        with self._lock:
            s = self._scales.pop(e, None)
        return s if s is not None else self.compute_scales(e, self.blocks_of(e))

    def fill_scales(self, start: int, stop: int) -> np.ndarray:
        return np.stack([self.scales_of(e) for e in range(start, stop)])

    def fill_dense(self, start: int, stop: int) -> np.ndarray:
        """transformers' dense layout [E, in, out] in BF16: the exact dequantized values."""
        out = np.empty((stop - start, self.cols, self.rows), dtype=np.uint16)
        for e in range(start, stop):
            b = self.blocks_of(e)
            w = mxfp4_dequantize(b, self.compute_scales(e, b))  # [out, in]
            out[e - start] = f32_to_bf16_bits(np.ascontiguousarray(w.T))
        return out


def tensor_specs(config: dict, seed: int = 0, dense_experts: bool | None = None) -> list[TensorSpec]:
    """Every tensor of the checkpoint, in the order of the real model.safetensors.index.json."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    if dense_experts is None:
        dense_experts = "quantization_config" not in config
    H, I = config["hidden_size"], config["intermediate_size"]
    nh, nkv, hd = config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]
    E, V, L = config["num_local_experts"], config["vocab_size"], config["num_hidden_layers"]
    q, kv = nh * hd, nkv * hd

    def bf16(name, shape, kind, a, b):
        return _bf16_spec(seed, name, shape, kind, a, b)

    def normal(name, shape, std, mean=0.0):
        return bf16(name, shape, "normal", mean, std)

    def experts(x: _Experts) -> list[TensorSpec]:
        if dense_experts:  # transformers' layout: [E, in, out]
            return [TensorSpec(x.key, "BF16", (E, x.cols, x.rows), x.fill_dense)]
        return [TensorSpec(x.key + "_blocks", "U8", (E, x.rows, x.G, 16), x.fill_blocks),
                TensorSpec(x.key + "_scales", "U8", (E, x.rows, x.G), x.fill_scales)]

    specs: list[TensorSpec] = []
    for layer in sorted(range(L), key=str):
        p = f"model.layers.{layer}."
        gate_up = _Experts(seed, p + "mlp.experts.gate_up_proj", E, 2 * I, H, 1.5 / math.sqrt(H))
        down = _Experts(seed, p + "mlp.experts.down_proj", E, H, I, 0.3 / math.sqrt(I))
        specs += [
            normal(p + "input_layernorm.weight", (H,), 0.1, mean=1.0),
            normal(p + "self_attn.o_proj.bias", (H,), 0.05),
            normal(p + "self_attn.o_proj.weight", (H, q), 1 / math.sqrt(q)),
            normal(p + "self_attn.q_proj.bias", (q,), 0.1),
            normal(p + "self_attn.k_proj.bias", (kv,), 0.1),
            normal(p + "self_attn.v_proj.bias", (kv,), 0.1),
            normal(p + "self_attn.q_proj.weight", (q, H), 1 / math.sqrt(H)),
            normal(p + "self_attn.k_proj.weight", (kv, H), 1 / math.sqrt(H)),
            normal(p + "self_attn.v_proj.weight", (kv, H), 1 / math.sqrt(H)),
            bf16(p + "self_attn.sinks", (nh,), "uniform", -1.0, 4.0),
            normal(p + "mlp.router.bias", (E,), 0.1),
            normal(p + "mlp.router.weight", (E, H), 1 / math.sqrt(H)),
            normal(p + "mlp.experts.gate_up_proj_bias", (E, 2 * I), 0.1),
        ]
        specs += experts(gate_up)
        specs.append(normal(p + "mlp.experts.down_proj_bias", (E, H), 0.05))
        specs += experts(down)
        specs.append(normal(p + "post_attention_layernorm.weight", (H,), 0.1, mean=1.0))
    specs += [
        normal("model.embed_tokens.weight", (V, H), 1.0),
        normal("model.norm.weight", (H,), 0.1, mean=1.0),
        normal("lm_head.weight", (V, H), 2 / math.sqrt(H)),
    ]
    return specs


# ---------------------------------------------------------------------------------------
# Shards


def shard_filenames(n: int, naming: str = "openai") -> list[str]:
    """openai: model-00000-of-00002 ... model-00002-of-00002 (the real repos, zero-based, "of"
    the last index); hf: model-00001-of-00003 ... (transformers' own naming)."""
    if n == 1:
        return ["model.safetensors"]
    if naming == "openai":
        return [f"model-{i:05d}-of-{n - 1:05d}.safetensors" for i in range(n)]
    if naming == "hf":
        return [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    raise ValueError(f"unknown shard naming {naming!r}; use 'openai' or 'hf'")


def split_shards(specs: list[TensorSpec], shards: int | str) -> list[list[TensorSpec]]:
    """Cut the ordered tensors into contiguous shards: an int asks for that many, balanced by
    bytes; "auto" packs shards of at most MAX_SHARD_BYTES; "real-20b" cuts where the real
    openai/gpt-oss-20b index does."""
    n = len(specs)
    if shards == "real-20b":
        names = [s.name for s in specs]
        cuts = [names.index(name) for name in REAL_20B_SHARD_STARTS]
    elif shards == "auto":
        cuts, size = [], 0
        for i, s in enumerate(specs):
            if size and size + s.nbytes > MAX_SHARD_BYTES:
                cuts.append(i)
                size = 0
            size += s.nbytes
    else:
        k = int(shards)
        if not 1 <= k <= n:
            raise ValueError(f"shards must be between 1 and {n} (the number of tensors), got {k}")
        total = sum(s.nbytes for s in specs)
        mids, acc = [], 0
        for s in specs:
            mids.append(acc + s.nbytes / 2)
            acc += s.nbytes
        cuts, prev = [], 0
        for j in range(1, k):
            c = next((i for i, m in enumerate(mids) if m >= total * j / k), n)
            c = min(max(c, prev + 1), n - (k - j))  # every shard holds at least one tensor
            cuts.append(c)
            prev = c
    bounds = [0, *cuts, n]
    return [specs[a:b] for a, b in zip(bounds, bounds[1:])]


def _data_order(specs: Iterable[TensorSpec]) -> list[TensorSpec]:
    """How the safetensors library lays out a file: larger dtypes first, then by name."""
    rank = {"F64": 0, "F32": 1, "BF16": 2, "F16": 3, "U8": 4}
    return sorted(specs, key=lambda s: (rank.get(s.dtype, 9), s.name))


def plan_checkpoint(preset: str = "tiny", seed: int = 0, *, shards: int | str | None = None,
                    dense_experts: bool = False, shard_naming: str = "openai",
                    **overrides) -> tuple[dict, dict[str, list[TensorSpec]]]:
    """(config, {shard file name: tensors in file order}) without writing anything.

    shards=None picks the preset's default: the real cuts for the unmodified 20b (also with
    shards=3), "auto" (<= 5 GB each: 15 for 120b) for other 20b/120b variants, 2 for tiny."""
    config = make_config(preset, dense_experts=dense_experts, **overrides)
    specs = tensor_specs(config, seed, dense_experts)
    real_20b = (preset == "20b" and not dense_experts and config["num_hidden_layers"] == 24
                and sum(s.nbytes for s in specs) == REAL_20B_TOTAL_SIZE)
    if real_20b and shards in (None, 3):
        shards = "real-20b"
    elif shards is None:
        shards = min(2, len(specs)) if preset == "tiny" else "auto"
    groups = split_shards(specs, shards)
    names = shard_filenames(len(groups), shard_naming)
    return config, {name: _data_order(group) for name, group in zip(names, groups)}


# ---------------------------------------------------------------------------------------
# Tokenizer


def default_tokenizer_dir() -> Path | None:
    """$EDGEOSS_TOKENIZER_DIR, else ../shared/tokenizer beside the repository, if it holds the
    tokenizer files."""
    env = os.environ.get("EDGEOSS_TOKENIZER_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2].parent / "shared" / "tokenizer")
    for c in candidates:
        if all((c / f).is_file() for f in TOKENIZER_FILES):
            return c
    return None


def _resolve_tokenizer(tokenizer_dir, vocab: int, say: Callable[[str], None]) -> Path | None:
    if tokenizer_dir is None or tokenizer_dir is False:
        return None
    if tokenizer_dir == "auto":
        found = default_tokenizer_dir()
        if found is None:
            say("no tokenizer found ($EDGEOSS_TOKENIZER_DIR or ../shared/tokenizer): "
                "writing the checkpoint without tokenizer files")
            return None
        if vocab < TOKENIZER_VOCAB:
            say(f"vocab_size {vocab} cannot hold the tokenizer's {TOKENIZER_VOCAB} ids: "
                "writing the checkpoint without tokenizer files")
            return None
        return found
    path = Path(tokenizer_dir)
    missing = [f for f in TOKENIZER_FILES if not (path / f).is_file()]
    if missing:
        raise FileNotFoundError(f"tokenizer folder {path} lacks {', '.join(missing)}")
    if vocab < TOKENIZER_VOCAB:
        raise ValueError(f"vocab_size {vocab} cannot hold the tokenizer's {TOKENIZER_VOCAB} ids; "
                         "raise --vocab or pass --no-tokenizer")
    return path


# ---------------------------------------------------------------------------------------
# Writing


class _Progress:
    """A bar on a terminal; elsewhere (a log) nothing until make_checkpoint's one closing line."""

    def __init__(self, total: int, enabled: bool, stop: threading.Event):
        self.stop = stop
        self.lock = threading.Lock()
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                            desc="writing", file=sys.stderr, dynamic_ncols=True)

    def __call__(self, nbytes: int) -> None:
        if self.stop.is_set():
            raise _Stopped()
        if self.bar is not None:
            with self.lock:
                self.bar.update(nbytes)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _Stopped(Exception):
    """Raised inside a writer thread when another one failed."""


def _looks_replaceable(path: Path) -> bool:
    if not path.is_dir():
        return False
    entries = list(path.iterdir())
    return not entries or (path / "config.json").exists() or any(
        e.suffix == ".safetensors" for e in entries)


def _remove_stale_partials(out: Path) -> None:
    """Partial folders of earlier runs that were killed (their process is gone)."""
    for p in out.parent.glob(f".{out.name}.partial-*"):
        try:
            pid = int(p.name.rsplit("-", 1)[1])
            os.kill(pid, 0)  # signal 0 only asks whether the process exists
            continue
        except ProcessLookupError:
            pass
        except (ValueError, PermissionError, OSError):
            continue
        shutil.rmtree(p, ignore_errors=True)


def make_checkpoint(out_dir, preset: str = "tiny", seed: int = 0, tokenizer_dir="auto", *,
                    shards: int | str | None = None, dense_experts: bool = False,
                    shard_naming: str = "openai", force: bool = False, progress: bool = True,
                    workers: int | None = None, chunk_bytes: int = 32 << 20,
                    **overrides) -> Path:
    """Write a synthetic gpt-oss checkpoint to out_dir and return its path.

    preset: "tiny" | "20b" | "120b"; overrides by short name (layers, hidden, intermediate,
    heads, kv_heads, head_dim, experts, experts_per_token, vocab, sliding_window) or by
    config.json key. tokenizer_dir: "auto" (EDGEOSS_TOKENIZER_DIR or ../shared/tokenizer, none if
    not found), a folder, or None for no tokenizer. dense_experts: BF16 [E, in, out] experts
    and no quantization_config, as fine-tunes are published. shards: see plan_checkpoint.
    The files are written into a hidden folder beside out_dir, renamed into place at the end;
    an existing out_dir is refused unless force=True. Shards are written by `workers` threads.
    """
    out = Path(out_dir).absolute()
    say = (lambda msg: print(msg, file=sys.stderr)) if progress else (lambda msg: None)
    config, plan = plan_checkpoint(preset, seed, shards=shards, dense_experts=dense_experts,
                                   shard_naming=shard_naming, **overrides)
    if out.exists() or out.is_symlink():
        if not force:
            raise FileExistsError(f"{out} already exists; pass force=True (--force) to replace it")
        if not _looks_replaceable(out):
            raise FileExistsError(f"{out} exists and does not look like a checkpoint folder "
                                  "(no config.json or .safetensors); not replacing it")
    tok = _resolve_tokenizer(tokenizer_dir, config["vocab_size"],
                             lambda msg: print(msg, file=sys.stderr))
    total = sum(s.nbytes for specs in plan.values() for s in specs)
    out.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out.parent).free
    if free < total + (256 << 20):
        raise OSError(f"{out.parent} has {free / 1e9:.2f} GB free; the checkpoint needs "
                      f"{total / 1e9:.2f} GB")
    _remove_stale_partials(out)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    t0 = time.perf_counter()
    stop = threading.Event()
    bar = _Progress(total, progress, stop)
    try:
        _write_json(tmp / "config.json", config, indent=2, sort_keys=True)
        _write_json(tmp / "generation_config.json", generation_config(config), indent=2, sort_keys=True)
        if tok is not None:
            for f in TOKENIZER_FILES:
                shutil.copyfile(tok / f, tmp / f)
        if len(plan) > 1:
            weight_map = {s.name: None for s in tensor_specs(config, seed, dense_experts)}
            for fname, specs in plan.items():
                for s in specs:
                    weight_map[s.name] = fname
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (tmp / "model.safetensors.index.json").write_text(json.dumps(index))
        _write_json(tmp / "edgeoss_synthetic.json", {
            "generator": "edgeoss.synthetic", "version": GENERATOR_VERSION, "preset": preset,
            "seed": int(seed), "dense_experts": dense_experts,
            "overrides": {k: v for k, v in overrides.items() if v is not None},
            "tokenizer": str(tok) if tok else None,
            "shards": {name: sum(s.nbytes for s in specs) for name, specs in plan.items()},
        }, indent=2, sort_keys=True)

        def write(item):
            name, specs = item
            write_safetensors(tmp / name, specs, metadata={"format": "pt"},
                              chunk_bytes=chunk_bytes, progress=bar)

        n_workers = max(1, min(len(plan), workers or os.cpu_count() or 1))
        with ThreadPoolExecutor(n_workers) as pool:
            futures = [pool.submit(write, item) for item in plan.items()]
            try:
                for fut in futures:
                    fut.result()
            except BaseException:
                stop.set()
                for fut in futures:
                    fut.cancel()
                raise
        bar.close()
        if out.exists() or out.is_symlink():
            old = out.parent / f".{out.name}.replaced-{os.getpid()}"
            out.rename(old)
            tmp.rename(out)
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            else:
                old.unlink()
        else:
            tmp.rename(out)
    except BaseException:
        stop.set()
        bar.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    dt = time.perf_counter() - t0
    say(f"wrote {out} ({total / 1e9:.2f} GB in {len(plan)} shard{'s' * (len(plan) > 1)}, "
        f"{dt:.1f} s{', no tokenizer' if tok is None else ''})")
    return out


def _write_json(path: Path, obj, **kw) -> None:
    path.write_text(json.dumps(obj, **kw) + "\n")


__all__ = ["PRESETS", "OVERRIDE_KEYS", "make_config", "generation_config", "tensor_specs",
           "plan_checkpoint", "split_shards", "shard_filenames", "make_checkpoint",
           "default_tokenizer_dir", "mxfp4_scales", "mxfp4_dequantize", "random_bytes",
           "REAL_20B_TOTAL_SIZE"]


# ---------------------------------------------------------------------------------------
# Straight into the runtime's format


class SyntheticCheckpoint:
    """The checkpoint make_checkpoint would write, read without writing it: each tensor's rows
    are generated on demand by the same functions, so converting this gives the bytes that
    converting the written shards would. For models too large to keep both the checkpoint and
    the converted model on one disk (the 120b: 65 GB of shards beside 63 GB converted). `path`
    holds only the config and tokenizer files."""

    def __init__(self, path: Path, config: dict, seed: int = 0):
        from ..config import GptOssConfig

        self.path = Path(path)
        self.hf_config = config
        self.config = GptOssConfig.from_hf(config, generation_config(config))
        self.dense_experts = "quantization_config" not in config
        self.specs = {s.name: s for s in tensor_specs(config, seed, self.dense_experts)}

    def rows(self, name: str) -> int:
        return self.specs[name].shape[0]

    def _rows(self, name: str, start: int, stop: int | None) -> np.ndarray:
        spec = self.specs[name]
        stop = spec.shape[0] if stop is None else stop
        return spec.fill(start, stop)

    def read(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """As HFCheckpoint.read: float tensors as float32, others raw."""
        raw = self._rows(name, start, stop)
        if self.specs[name].dtype == "BF16":
            return (raw.astype(np.uint32) << 16).view(np.float32)
        return raw

    def read_bf16_bits(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray | None:
        return self._rows(name, start, stop) if self.specs[name].dtype == "BF16" else None


def make_model(out_dir, preset: str = "tiny", seed: int = 0, quant: str = "q8", tokenizer_dir="auto", *,
               force: bool = False, progress: bool = True, **overrides) -> Path:
    """Write a synthetic model straight in edgeoss's format (what `make_checkpoint` then
    `edgeoss convert --preset quant` would give, without the checkpoint ever on disk). Refused
    before anything is written when the disk lacks the room."""
    from ..format import model_dir as fmt
    from . import ConvertError, convert_checkpoint

    out = Path(out_dir).expanduser().absolute()
    if out.exists() and not force:
        raise ConvertError(f"{out} already exists; pass --force to replace it")
    config = make_config(preset, **overrides)
    tok = _resolve_tokenizer(tokenizer_dir, config["vocab_size"], lambda msg: print(msg, file=sys.stderr))
    out.parent.mkdir(parents=True, exist_ok=True)
    src = out.parent / f".{out.name}.source-{os.getpid()}"  # config and tokenizer only
    ck = SyntheticCheckpoint(src, config, seed)  # reads nothing from src until converting
    need = fmt.plan_layout(ck.config, quant).size
    free = shutil.disk_usage(out.parent).free
    if free < need + (256 << 20):
        raise ConvertError(f"{out.parent} has {free / 1e9:.2f} GB free; the model needs {need / 1e9:.2f} GB: free "
                           "some space or choose another folder. Nothing was written.")
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir()
    try:
        _write_json(src / "config.json", config, indent=2, sort_keys=True)
        if tok is not None:
            for f in TOKENIZER_FILES:
                shutil.copyfile(tok / f, src / f)
        return convert_checkpoint(ck, out, quant, no_tokenizer=tok is None,
                                  source=f"synthetic {preset} (seed {seed})", progress=progress)
    finally:
        shutil.rmtree(src, ignore_errors=True)
