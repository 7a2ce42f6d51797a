"""The engine's work buffers: the arrays a forward chunk of T tokens uses, allocated once and
reused, so decoding a token allocates nothing. Their shapes live here, beside the planner, so
the memory plan reserves exactly what the engine will allocate."""

from __future__ import annotations

import numpy as np

from ..config import GptOssConfig

PREFILL_CHUNK = 512  # tokens per forward chunk: bounds the work buffers; experts get ~64 tokens each
# When the experts stream, a long prompt runs in blocks of this many tokens layer by layer, each
# layer's experts read once a block rather than once a chunk (Model._forward_long)
LONG_PREFILL = 2048
# A sliding layer's ring keeps this many positions beyond its window, so a sequence can step back
# that far (a rewritten tail) without recomputing; further back it needs a checkpoint.
SLIDING_ROLLBACK = 256
# Checkpoints a sequence keeps of its sliding layers (their last `window` positions), taken where
# each prompt ends: the next harmony turn rewrites what came after (the reply), so that is where
# it steps back to. The latest few cover a turn and the tool calls inside it.
SEQUENCE_CHECKPOINTS = 4
# How the KV cache stores keys and values: float16 bits by default (half of float32's bytes,
# which attention reads at every position; logits move ~1e-5), float32 exactly, or "q8": each
# head's row of a position as 8-bit blocks of 32 values, its int8 values followed by one float32
# scale per block (hd + 4 hd / 32 bytes: 72 for gpt-oss's 64, 0.56x float16).
KV_DTYPES = {"f16": np.uint16, "f32": np.float32, "q8": np.int8}
DEFAULT_KV = "f16"


def kv_row_width(kv: str, head_dim: int) -> int:
    """Elements of KV_DTYPES[kv] per (head, position) row of the cache."""
    return head_dim + 4 * (head_dim // 32) if kv == "q8" else head_dim


class Buffers:
    """Work arrays reused by every forward call, grown (never shrunk) to the largest chunk
    seen: decoding a token allocates no array data."""

    def __init__(self):
        self._arrays: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple, dtype=np.float32) -> np.ndarray:
        n = int(np.prod(shape))
        a = self._arrays.get(name)
        if a is None or a.size < n or a.dtype != dtype:
            a = self._arrays[name] = np.empty(n, dtype)
        return a[:n].reshape(shape)


def work_arrays(cfg: GptOssConfig, T: int, buf: Buffers) -> dict[str, np.ndarray]:
    """The work arrays of a forward chunk of T tokens, from `buf`."""
    H, nh, nkv, hd = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    qd, kvd, k = cfg.q_dim, cfg.kv_dim, cfg.num_experts_per_tok
    i8, i64 = np.int8, np.int64
    shapes = {"x": ((T, H),), "h": ((T, H),), "hq": ((T, H), i8), "hd": ((T, H // 32),),
              "qkv": ((T, qd + 2 * kvd),), "q": ((T, nh, hd),), "k": ((T, nkv, hd),), "v": ((T, nkv, hd),),
              "attn": ((T, nh, hd),), "aq": ((T, qd), i8), "ad": ((T, qd // 32),), "o": ((T, H),),
              "router": ((T, cfg.num_local_experts),), "idx": ((T, k), i64), "wts": ((T, k),)}
    return {name: buf.get(name, *spec) for name, spec in shapes.items()}


def long_prefill_arrays(cfg: GptOssConfig, buf: Buffers) -> dict[str, np.ndarray]:
    """The arrays of a long prompt's LONG_PREFILL-token block run layer by layer when the experts
    stream (Model._forward_long): its residual, normed inputs and routing, every (token, expert)
    pair's output, and one batch of pairs as one-expert pseudo-tokens (ExpertCache.run_layer_pairs)."""
    arrays = {name: buf.get(name, *spec) for name, spec in _long_prefill_shapes(cfg).items()}
    arrays["lrows"][:] = np.arange(arrays["lrows"].size)  # pair (t, s) keeps its output in row t * k + s
    return arrays


def _long_prefill_shapes(cfg: GptOssConfig) -> dict:
    H, k, S = cfg.hidden_size, cfg.num_experts_per_tok, LONG_PREFILL
    R = PREFILL_CHUNK * k  # the pairs the expert scratch of a chunk holds
    return {"lx": ((S, H),), "lh": ((S, H),), "lidx": ((S, k), np.int64), "lwts": ((S, k),),
            "ly": ((S * k, H),), "lrows": ((S * k,), np.int64), "pair_h": ((R, H),), "pair_y": ((R, H),),
            "pair_idx": ((R, 1), np.int64), "pair_w": ((R, 1),), "pair_hq": ((R, H), np.int8),
            "pair_hd": ((R, H // 32),)}


def long_prefill_bytes(cfg: GptOssConfig) -> int:
    """What long_prefill_arrays adds to a streaming plan's work memory (the embedding rows of a
    block beyond a chunk's too, and a replayed routing trace's rows for a block)."""
    n = sum(int(np.prod(shape)) * np.dtype(dtype[0] if dtype else np.float32).itemsize
            for shape, *dtype in _long_prefill_shapes(cfg).values())
    S, k, L = LONG_PREFILL, cfg.num_experts_per_tok, cfg.num_hidden_layers
    return n + (S - PREFILL_CHUNK) * (cfg.hidden_size * 5 + 8) + S * L * k * 12


def work_bytes(cfg: GptOssConfig, T: int, context: int) -> int:
    """Bytes of every work array a forward pass of up to T-token chunks keeps, for a context of
    `context` positions (what the memory planner reserves as scratch): the chunk's arrays, the
    attention and expert scratch, the embedding rows, one row of logits, RoPE tables and the
    per-token routing record."""
    from ..kernels import loops  # compiled code: imported only by what sizes or runs a forward pass
    arrays = list(work_arrays(cfg, T, Buffers()).values())
    arrays += loops.attention_scratch(T, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim)
    arrays += loops.moe_scratch(T, cfg.hidden_size, cfg.intermediate_size, cfg.num_local_experts,
                                cfg.num_experts_per_tok)
    n = sum(a.nbytes for a in arrays)
    H, V = cfg.hidden_size, cfg.vocab_size
    n += T * (H + H // 32 * 2 + 8) + T * H * 4       # embedding rows as stored (q8 at most) + ids
    n += H * 4 * 2 + H + H // 32 * 4 + V * 4          # final norm, its quantized copy, the logits
    n += 2 * max(context, 256) * (cfg.head_dim // 2) * 4 * 2  # cos/sin tables (grown by doubling)
    n += context * cfg.num_hidden_layers * cfg.num_experts_per_tok * 8  # routing record
    return n


def kv_dtype(kv: str):
    if kv not in KV_DTYPES:
        raise ValueError(f"unknown KV cache type {kv!r}: choose one of {', '.join(KV_DTYPES)}")
    return KV_DTYPES[kv]


def kv_bytes(cfg: GptOssConfig, context: int, kv: str = DEFAULT_KV) -> int:
    """Bytes of one sequence's KV cache for `context` positions: k and v (`kv`: f16, f32 or q8) on
    every layer (a full layer holds every position, a sliding one its window plus
    SLIDING_ROLLBACK), and SEQUENCE_CHECKPOINTS copies of the sliding layers' windows."""
    # k and v, one position of one layer
    row = 2 * cfg.num_key_value_heads * kv_row_width(kv, cfg.head_dim) * np.dtype(kv_dtype(kv)).itemsize
    sliding = sum(cfg.is_sliding(i) for i in range(cfg.num_hidden_layers))
    full = cfg.num_hidden_layers - sliding
    ring = cfg.sliding_window + SLIDING_ROLLBACK
    return row * (full * context + sliding * (ring + SEQUENCE_CHECKPOINTS * cfg.sliding_window))
