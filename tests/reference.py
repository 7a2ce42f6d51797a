"""Independent float64 NumPy reference of the gpt-oss forward pass.

This module is the test suite's correctness oracle, so it deliberately does NOT
import edgeoss: it reads Hugging Face checkpoints itself and computes logits in
plain float64 NumPy, written for readability rather than speed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

# --------------------------------------------------------------------------
# safetensors
# --------------------------------------------------------------------------

# Byte-exact NumPy dtypes for the safetensors dtype names (BF16 handled apart,
# since NumPy has no bfloat16).
_ST_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def read_safetensors(path) -> dict[str, tuple[str, np.ndarray]]:
    """Return {name: (safetensors dtype name, array)} for one .safetensors file.

    Arrays keep their stored bytes (BF16 comes back as raw uint16 bits, see
    `bf16_to_float64`) and are views onto a read-only memmap, so nothing is
    copied until the caller converts it.
    """
    path = Path(path)
    with open(path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(header_len))
    data_start = 8 + header_len
    raw = np.memmap(path, dtype=np.uint8, mode="r")

    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]  # relative to the data section
        buf = raw[data_start + begin : data_start + end]
        dtype = info["dtype"]
        np_dtype = np.uint16 if dtype == "BF16" else _ST_DTYPES[dtype]
        arr = buf.view(np_dtype).reshape(info["shape"])
        tensors[name] = (dtype, arr)
    return tensors


def bf16_to_float64(bits: np.ndarray) -> np.ndarray:
    """bfloat16 is the top 16 bits of a float32, so widening is exact."""
    as_f32 = (bits.astype(np.uint32) << 16).view(np.float32)
    return as_f32.astype(np.float64)


def _to_float64(dtype: str, arr: np.ndarray) -> np.ndarray:
    if dtype == "BF16":
        return bf16_to_float64(arr)
    return np.asarray(arr, dtype=np.float64)


# --------------------------------------------------------------------------
# MXFP4
# --------------------------------------------------------------------------

# e2m1 magnitudes indexed by the low 3 bits of a code; bit 3 is the sign.
_E2M1 = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0], dtype=np.float64)
_FP4_LUT = np.concatenate([_E2M1, -_E2M1])  # all 16 codes


def dequant_mxfp4(blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Dequantize MXFP4 exactly to float64.

    blocks: uint8 [..., G, 16] (two e2m1 codes per byte, 32 values per group)
    scales: uint8 [..., G]     (e8m0 exponent, bias 127, one per group)
    returns float64 [..., G*32]
    """
    blocks = np.asarray(blocks, dtype=np.uint8)
    lo = _FP4_LUT[blocks & 0x0F]  # the LOW nibble is the earlier element
    hi = _FP4_LUT[blocks >> 4]
    # Interleave lo/hi -> [..., G, 16, 2] -> [..., G, 32].
    vals = np.stack([lo, hi], axis=-1).reshape(*blocks.shape[:-1], 32)
    # Powers of two are exact in float64 for every e8m0 exponent.
    scale = np.ldexp(1.0, np.asarray(scales, dtype=np.int64) - 127)
    vals = vals * scale[..., None]
    return vals.reshape(*blocks.shape[:-2], blocks.shape[-2] * 32)


# --------------------------------------------------------------------------
# Checkpoint loading
# --------------------------------------------------------------------------


def _read_all_tensors(ckpt: Path) -> dict:
    """{name: (dtype, array)} across one or many safetensors shards."""
    index = ckpt / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        shards = ["model.safetensors"]
    tensors = {}
    for shard in shards:
        tensors.update(read_safetensors(ckpt / shard))
    return tensors


def load_checkpoint(path) -> tuple[dict, dict[str, np.ndarray]]:
    """Load a Hugging Face gpt-oss checkpoint directory.

    Returns (config, weights), with every weight as float64. Expert weights are
    normalised to the [out, in] convention under the names
    `model.layers.N.mlp.experts.gate_up_proj` [E, 2I, H] and
    `model.layers.N.mlp.experts.down_proj` [E, H, I], whether the checkpoint
    stores them as MXFP4 blocks/scales or as dense (input-dim-first) tensors.
    """
    ckpt = Path(path)
    config = json.loads((ckpt / "config.json").read_text())
    raw = _read_all_tensors(ckpt)

    weights: dict[str, np.ndarray] = {}
    for name, (dtype, arr) in raw.items():
        if name.endswith("_blocks"):
            base = name[: -len("_blocks")]
            _, scales = raw[base + "_scales"]
            # [E, out, G, 16] -> [E, out, in]: already row = output feature.
            weights[base] = dequant_mxfp4(arr, scales)
        elif name.endswith("_scales"):
            continue  # consumed together with its _blocks
        elif name.endswith(("mlp.experts.gate_up_proj", "mlp.experts.down_proj")):
            # transformers' dense layout is [E, in, out]; flip to [E, out, in].
            weights[name] = np.ascontiguousarray(
                _to_float64(dtype, arr).transpose(0, 2, 1)
            )
        else:
            weights[name] = _to_float64(dtype, arr)
    return config, weights


# --------------------------------------------------------------------------
# Model pieces
# --------------------------------------------------------------------------


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def rope_parameters(config: dict) -> tuple[np.ndarray, float]:
    """(inv_freq [head_dim/2], attention_factor) following YaRN if configured."""
    dim = config["head_dim"]
    base = float(config["rope_theta"])
    pos_freqs = base ** (np.arange(0, dim, 2, dtype=np.float64) / dim)

    scaling = config.get("rope_scaling")
    if not scaling:
        return 1.0 / pos_freqs, 1.0

    factor = float(scaling["factor"])
    orig_max = float(scaling["original_max_position_embeddings"])
    extrap = 1.0 / pos_freqs  # original frequencies (high-frequency dims)
    interp = 1.0 / (factor * pos_freqs)  # stretched frequencies (low-frequency dims)

    def correction_dim(n_rotations: float) -> float:
        # Dimension whose wavelength fits n_rotations times in the original context.
        return dim * math.log(orig_max / (n_rotations * 2 * math.pi)) / (2 * math.log(base))

    low = correction_dim(float(scaling["beta_fast"]))
    high = correction_dim(float(scaling["beta_slow"]))
    if scaling.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low = max(low, 0)
    high = min(high, dim - 1)
    if low == high:
        high += 0.001  # avoid division by zero in the ramp

    ramp = np.clip((np.arange(dim // 2, dtype=np.float64) - low) / (high - low), 0.0, 1.0)
    extrap_factor = 1.0 - ramp
    inv_freq = interp * (1.0 - extrap_factor) + extrap * extrap_factor
    attention_factor = 0.1 * math.log(factor) + 1.0
    return inv_freq, attention_factor


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Non-interleaved rotary embedding. x [T, heads, hd]; cos/sin [T, hd/2]."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    c, s = cos[:, None, :], sin[:, None, :]  # broadcast over heads
    return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)


def layer_type(config: dict, i: int) -> str:
    types = config.get("layer_types")
    if types is not None:
        return types[i]
    return "sliding_attention" if i % 2 == 0 else "full_attention"


def attention_mask(T: int, sliding_window: int | None) -> np.ndarray:
    """Boolean [T, T]; True where query i may attend to key j."""
    i = np.arange(T)[:, None]
    j = np.arange(T)[None, :]
    allowed = j <= i
    if sliding_window is not None:
        allowed &= (i - j) < sliding_window  # window includes the token itself
    return allowed


def attention(config, weights, prefix, h, cos, sin, sliding_window):
    T = h.shape[0]
    n_heads = config["num_attention_heads"]
    n_kv = config["num_key_value_heads"]
    hd = config["head_dim"]

    def proj(name):
        return h @ weights[f"{prefix}.{name}.weight"].T + weights[f"{prefix}.{name}.bias"]

    q = apply_rope(proj("q_proj").reshape(T, n_heads, hd), cos, sin)
    k = apply_rope(proj("k_proj").reshape(T, n_kv, hd), cos, sin)
    v = proj("v_proj").reshape(T, n_kv, hd)
    sinks = weights[f"{prefix}.sinks"]
    mask = attention_mask(T, sliding_window)
    group = n_heads // n_kv

    out = np.empty((T, n_heads, hd))
    for head in range(n_heads):
        kv = head // group  # grouped-query attention
        scores = q[:, head] @ k[:, kv].T / math.sqrt(hd)
        scores = np.where(mask, scores, -np.inf)
        # The sink is one extra logit per row that absorbs probability mass
        # but contributes no value vector.
        row = np.concatenate([scores, np.full((T, 1), sinks[head])], axis=1)
        row = np.exp(row - row.max(axis=1, keepdims=True))
        probs = (row / row.sum(axis=1, keepdims=True))[:, :T]
        out[:, head] = probs @ v[:, kv]

    o_w = weights[f"{prefix}.o_proj.weight"]
    return out.reshape(T, n_heads * hd) @ o_w.T + weights[f"{prefix}.o_proj.bias"]


def moe(config, weights, prefix, h, forced=None, chosen=None):
    """forced: optional int [T, k] expert ids to use instead of the router's top-k (their
    weights still come from the router's logits), to compare with an engine whose rounding
    flipped a near-tied routing decision. chosen: optional list that receives the ids used."""
    k = config.get("num_experts_per_tok", config.get("experts_per_token"))
    limit = config.get("swiglu_limit", 7.0)
    alpha = 1.702

    router = h @ weights[f"{prefix}.router.weight"].T + weights[f"{prefix}.router.bias"]
    w_gu = weights[f"{prefix}.experts.gate_up_proj"]  # [E, 2I, H]
    b_gu = weights[f"{prefix}.experts.gate_up_proj_bias"]  # [E, 2I]
    w_dn = weights[f"{prefix}.experts.down_proj"]  # [E, H, I]
    b_dn = weights[f"{prefix}.experts.down_proj_bias"]  # [E, H]

    out = np.zeros_like(h)
    for t in range(h.shape[0]):
        # Stable sort so ties resolve deterministically (lowest index first).
        top = np.argsort(-router[t], kind="stable")[:k] if forced is None else np.asarray(forced[t])
        if chosen is not None:
            chosen.append(top)
        logits = router[t, top]
        gate_w = np.exp(logits - logits.max())
        gate_w /= gate_w.sum()  # softmax over the chosen k only
        for e, w in zip(top, gate_w):
            gu = w_gu[e] @ h[t] + b_gu[e]
            gate, lin = gu[0::2], gu[1::2]  # rows alternate gate / linear
            gate = np.minimum(gate, limit)
            lin = np.clip(lin, -limit, limit)
            glu = gate / (1.0 + np.exp(-alpha * gate))  # gate * sigmoid(alpha*gate)
            y = w_dn[e] @ ((lin + 1.0) * glu) + b_dn[e]
            out[t] += w * y
    return out


# --------------------------------------------------------------------------
# Forward
# --------------------------------------------------------------------------


def forward(config: dict, weights: dict[str, np.ndarray], ids, routing=None, chosen=None) -> np.ndarray:
    """float64 logits [len(ids), vocab] for a fresh context of token ids.

    routing: optional int [T, layers, k] expert choices to force (see `moe`); chosen: optional
    list that receives the experts used, one [T, k] array per layer."""
    ids = np.asarray(ids, dtype=np.int64)
    T = len(ids)
    eps = config["rms_norm_eps"]

    inv_freq, attn_factor = rope_parameters(config)
    angles = np.arange(T, dtype=np.float64)[:, None] * inv_freq[None, :]
    cos = np.cos(angles) * attn_factor
    sin = np.sin(angles) * attn_factor

    x = weights["model.embed_tokens.weight"][ids]
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}"
        window = config["sliding_window"] if layer_type(config, i) == "sliding_attention" else None

        h = rms_norm(x, weights[f"{p}.input_layernorm.weight"], eps)
        x = x + attention(config, weights, f"{p}.self_attn", h, cos, sin, window)

        h = rms_norm(x, weights[f"{p}.post_attention_layernorm.weight"], eps)
        used = []
        x = x + moe(config, weights, f"{p}.mlp", h, None if routing is None else routing[:, i], used)
        if chosen is not None:
            chosen.append(np.array(used))

    x = rms_norm(x, weights["model.norm.weight"], eps)
    return x @ weights["lm_head.weight"].T


def rel_l2(a, b) -> float:
    """||a - b|| / ||b||, in float64."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))
