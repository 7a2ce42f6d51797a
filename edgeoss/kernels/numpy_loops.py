"""The loops of `loops.py` in NumPy around the same C dot-product kernels: nothing to compile.

A first run has no compiled Numba code yet, and compiling loops.py takes ~35 s on a 2-core
laptop. Meanwhile the engine runs these (engine/warmup.py decides): the same functions and
arguments, the same stored weights, KV cache and work buffers, so a forward pass can switch to
the compiled loops between two chunks. The quantized matrices go through the C kernels whole
(on the calling thread); attention forms each query tile's scores over its keys with NumPy
(tiled so the score matrix stays small), norms, RoPE, the activation and sampling are array
expressions. Slower than the compiled loops, well within the logits bounds of the tests.
"""

from __future__ import annotations

import numpy as np

from .dot import get_kernels
from .loops import (EXP_DOWN_BIAS, EXP_DOWN_BLOCKS, EXP_DOWN_SCALES, EXP_GU_BIAS,  # noqa: F401 (re-exported)
                    EXP_GU_BLOCKS, EXP_GU_SCALES, FP16_TO_F32, KIND_BF16, KIND_Q4, KIND_Q8, attention_scratch,
                    moe_scratch)

_K = get_kernels()
# score entries of one attention tile (query heads x tokens x keys): ~64 MB of float32
_SCORE_BUDGET = 16 << 20


def _quantize_into(x, xq, xd):
    """x float32 [T, K] -> q8 blocks in the first T rows of xq, xd (as loops.q8_quantize)."""
    x = np.ascontiguousarray(x, np.float32)
    T, K = x.shape
    q, d = xq.reshape(-1)[:T * K].reshape(T, K), xd.reshape(-1)[:T * K // 32].reshape(T, K // 32)
    _K._fn["eo_q8_quantize"](x.ctypes.data, x.size, q.ctypes.data, d.ctypes.data)
    return q, d


def matmul(kind, qs, scales, bf16, x, xq, xd, out):
    """out [T, R] = x [T, K] @ W^T, as loops.matmul."""
    if kind == KIND_BF16:
        _K.matmul_f32_bf16w(bf16, x, out=out)
        return
    q, d = _quantize_into(x, xq, xd)
    if kind == KIND_Q8:
        _K.matmul_q8_q8w(qs, scales, q, d, out=out)
    else:
        _K.matmul_q8_q4w(qs, scales, q, d, out=out)


def f32_bf16w_matmul(w, x, out):
    _K.matmul_f32_bf16w(w, x, out=out)


def dequant_rows(kind, qs, scales, f16, ids, out):
    """out[i] = row ids[i] of a q8 / q4 matrix as float32 (the embedding lookup)."""
    q, s = qs[ids], f16[scales[ids]]                      # [n, nb, 32 or 16], [n, nb]
    if kind == KIND_Q8:
        vals = q.astype(np.float32)
    else:
        c = q.astype(np.int32)
        vals = np.concatenate([(c & 15) - 8, (c >> 4) - 8], axis=2).astype(np.float32)
    out[:ids.shape[0]] = (vals * s[:, :, None]).reshape(ids.shape[0], -1)


def bf16_rows(w, ids, out_bits):
    out_bits[:ids.shape[0]] = w[ids].astype(np.uint32) << 16


def f32_rmsnorm(x, w, eps, out):
    """out[t] = x[t] / sqrt(mean(x[t]^2) + eps) * w, the sum of squares in float64 as loops'."""
    ss = np.einsum("ij,ij->i", x.astype(np.float64), x.astype(np.float64))
    inv = 1.0 / np.sqrt(ss / x.shape[1] + eps)
    out[:] = (x * inv[:, None]).astype(np.float32) * w


def add_bias_residual(o, bias, x):
    x += o + bias


def qkv_split_rope(qkv, bias, cos, sin, pos0, q, k, v):
    """As loops.qkv_split_rope: bias, split into heads, RoPE on q and k at positions pos0.."""
    T, nh, hd = q.shape
    nkv = k.shape[1]
    half = hd // 2
    heads = (qkv + bias).reshape(T, nh + 2 * nkv, hd)
    c, s = cos[pos0:pos0 + T, None, :], sin[pos0:pos0 + T, None, :]
    rot = heads[:, :nh + nkv]
    a, b = rot[..., :half], rot[..., half:]
    roped = np.concatenate([a * c - b * s, b * c + a * s], axis=2)
    q[:] = roped[:, :nh]
    k[:] = roped[:, nh:]
    v[:] = heads[:, nh + nkv:]


def _f32_to_q8(x):
    """float32 [..., hd] -> q8 rows [..., hd + 4 hd/32] int8 (the C quantizer's rounding)."""
    q, d = _K.q8_quantize(np.ascontiguousarray(x, np.float32))
    return np.concatenate([q, d.view(np.int8).reshape(d.shape[:-1] + (-1,))], axis=-1)


def kv_round_like_cache(k_new, v_new, k_cache):
    if k_cache.itemsize == 2:
        k_new[:] = k_new.astype(np.float16).astype(np.float32)
        v_new[:] = v_new.astype(np.float16).astype(np.float32)
    elif k_cache.itemsize == 1:
        k_new[:] = _K.q8kv_to_f32(_f32_to_q8(k_new))
        v_new[:] = _K.q8kv_to_f32(_f32_to_q8(v_new))


def kv_store(k_new, v_new, k_cache, v_cache, pos0, ring):
    """Append positions pos0.. to the cache [nkv, cap, row] (float32, float16 bits or q8 rows)."""
    T = k_new.shape[0]
    cap = k_cache.shape[1]
    first = max(0, T - cap) if ring else 0
    pos = pos0 + np.arange(first, T)
    slots = pos % cap if ring else pos
    for new, cache in ((k_new, k_cache), (v_new, v_cache)):
        vals = new[first:].transpose(1, 0, 2)
        if cache.itemsize == 1:
            cache[:, slots] = _f32_to_q8(vals)
        else:
            cache[:, slots] = vals.astype(np.float16).view(np.uint16) if cache.itemsize == 2 else vals


def _cached_keys(cache, positions, ring):
    cap = cache.shape[1]
    got = cache[:, positions % cap if ring else positions]
    if cache.itemsize == 1:
        return _K.q8kv_to_f32(got)  # q8 rows [..., hd + 4 hd/32] -> float32 [..., hd]
    return got.view(np.float16).astype(np.float32) if cache.itemsize == 2 else got.astype(np.float32)


def attention_sinks(q, k_new, v_new, k_cache, v_cache, pos0, ring, window, sinks, scale, out, *scratch):
    """As loops.attention_sinks: causal attention with a per-head sink logit in the softmax's
    denominator, an optional sliding window, grouped-query heads; keys before pos0 come from
    the cache (a ring indexed by position % capacity when `ring`). The scratch buffers of the
    compiled version are not needed here."""
    T, nh, hd = q.shape
    nkv = k_new.shape[1]
    group = nh // nkv
    first = 0 if window == 0 else max(0, pos0 - window + 1)   # the earliest key any query sees
    old = np.arange(first, pos0)
    keys = np.concatenate([_cached_keys(k_cache, old, ring), k_new.transpose(1, 0, 2)], axis=1)  # [nkv, L, hd]
    vals = np.concatenate([_cached_keys(v_cache, old, ring), v_new.transpose(1, 0, 2)], axis=1)
    L = keys.shape[1]
    key_pos = first + np.arange(L)
    sink = sinks.astype(np.float32).reshape(nkv, group, 1)
    tile = max(1, min(T, _SCORE_BUDGET // max(1, nh * L)))
    for t0 in range(0, T, tile):
        t1 = min(T, t0 + tile)
        qt = q[t0:t1].reshape(t1 - t0, nkv, group, hd) * np.float32(scale)
        s = np.einsum("tgjd,gld->gjtl", qt, keys)                           # [nkv, group, tq, L]
        p = pos0 + np.arange(t0, t1)[:, None]
        visible = key_pos[None, :] <= p
        if window:
            visible &= p - key_pos[None, :] < window
        s = np.where(visible, s, -np.inf)
        m = np.maximum(s.max(axis=3), sink)                                  # [nkv, group, tq]
        e = np.exp(s - m[..., None])
        denom = e.sum(axis=3) + np.exp(sink - m)
        o = np.einsum("gjtl,gld->tgjd", e, vals) / denom.transpose(2, 0, 1)[..., None]
        out[t0:t1] = o.reshape(t1 - t0, nh, hd)


def attention_block(x, h, hq, hd, qkv, q, k, v, attn, aq, ad, o,
                    norm, qkv_kind, qkv_qs, qkv_scales, qkv_bf16, qkv_bias, o_kind, o_qs, o_scales, o_bf16, o_bias,
                    sinks, eps, cos, sin, pos0, k_cache, v_cache, ring, window, scale, *scratch):
    """x [T, H] += the attention block (as loops.attention_block)."""
    T = x.shape[0]
    f32_rmsnorm(x, norm, eps, h)
    matmul(qkv_kind, qkv_qs, qkv_scales, qkv_bf16, h, hq, hd, qkv)
    qkv_split_rope(qkv, qkv_bias, cos, sin, pos0, q, k, v)
    kv_round_like_cache(k, v, k_cache)
    attention_sinks(q, k, v, k_cache, v_cache, pos0, ring, window, sinks, scale, attn)
    kv_store(k, v, k_cache, v_cache, pos0, ring)
    matmul(o_kind, o_qs, o_scales, o_bf16, attn.reshape((T, attn.shape[1] * attn.shape[2])), aq, ad, o)
    add_bias_residual(o, o_bias, x)


def route_topk(logits, k, idx, wts):
    """Per token: the k largest router logits (ties: lower expert first), softmax over them."""
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    idx[:] = top
    sel = np.take_along_axis(logits, top, axis=1).astype(np.float64)
    w = np.exp(sel - sel[:, :1])
    wts[:] = w / w.sum(axis=1, keepdims=True)


def mlp_norm_route(x, norm, eps, h, router, router_bias, logits, use_router, idx, wts):
    f32_rmsnorm(x, norm, eps, h)
    if use_router:
        _K.matmul_f32_bf16w(router, h, out=logits)
        logits += router_bias
        route_topk(logits, idx.shape[1], idx, wts)


def _expert_part(row, offs, part, rows, width):
    """One MXFP4 matrix of an expert: blocks uint8 [rows, width/32, 16], scales uint8 [rows, width/32]."""
    nb = width // 32
    b0, s0 = offs[part], offs[part + 1]
    return row[b0:b0 + rows * nb * 16].reshape(rows, nb, 16), row[s0:s0 + rows * nb].reshape(rows, nb)


def _mxfp4_matmul(wq, we, x, use_q8):
    if use_q8:
        xq, xd = _K.q8_quantize(np.ascontiguousarray(x))
        return _K.matmul_q8_mxfp4w(wq, we, xq, xd)
    return _K.matmul_f32_mxfp4w(wq, we, np.ascontiguousarray(x))


def moe(h, idx, wts, blob, slot_of, offs, H, I, use_q8, limit, alpha, out, *scratch):
    """out[T, H] += sum over each token's experts of weight * expert(h[t]) (as loops.moe): each
    active expert runs once over all its tokens; the experts' outputs join in s order."""
    T, k = idx.shape
    y = np.zeros((T, k, H), np.float32)
    for e in np.unique(idx):
        ts, ss = np.nonzero(idx == e)
        row = blob[slot_of[e]]
        gu = _mxfp4_matmul(*_expert_part(row, offs, EXP_GU_BLOCKS, 2 * I, H), h[ts], use_q8)
        gu += row[offs[EXP_GU_BIAS]:offs[EXP_GU_BIAS] + 8 * I].view(np.float32)
        g = np.minimum(gu[:, 0::2], np.float32(limit))
        lin = np.clip(gu[:, 1::2], -np.float32(limit), np.float32(limit))
        act = (g * (lin + np.float32(1.0)) / (np.float32(1.0) + np.exp(-np.float32(alpha) * g))).astype(np.float32)
        down = _mxfp4_matmul(*_expert_part(row, offs, EXP_DOWN_BLOCKS, H, I), act, use_q8)
        y[ts, ss] = down + row[offs[EXP_DOWN_BIAS]:offs[EXP_DOWN_BIAS] + 4 * H].view(np.float32)
    for s in range(k):
        out += wts[:, s:s + 1] * y[:, s]


def sample_token(logits, temperature, top_k, top_p, u):
    """As loops.sample_token: greedy at temperature 0, else softmax(logits / T) within top_k
    and top_p, drawn with u in [0, 1)."""
    best = int(np.argmax(logits))
    if temperature <= 0.0:
        return best
    z = logits.astype(np.float64) / temperature
    mx = z[best]
    cand = np.nonzero(z > mx - 40.0)[0]
    n = cand.size
    if (top_k <= 0 or top_k >= n) and top_p >= 1.0:
        p = np.exp(z[cand] - mx)
        j = int(np.searchsorted(np.cumsum(p), u * p.sum(), side="right"))
        return int(cand[min(j, n - 1)])
    order = cand[np.argsort(-z[cand], kind="stable")]
    if 0 < top_k < n:
        order = order[:top_k]
    p = np.exp(z[order] - mx)
    keep = order.size
    if top_p < 1.0:
        keep = min(keep, int(np.searchsorted(np.cumsum(p / p.sum()), top_p, side="left")) + 1)
    c = np.cumsum(p[:keep])
    j = int(np.searchsorted(c, u * c[-1], side="right"))
    return int(order[min(j, keep - 1)])
