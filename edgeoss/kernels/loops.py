"""Numba loops around the C dot-product kernels: row tiling, expert dispatch, attention,
RoPE, norms, routing and sampling.

Everything here is compiled once and cached on disk (`cache=True`). The C kernels are
reached through symbols registered by `edgeoss.kernels.dot` (C or, without a compiler, its
Numba fallback), passed raw addresses; threads come from Numba's prange only, the C side
never threads, so the two never oversubscribe the cores.

Shapes: T tokens, H hidden, R weight rows, K = nb*32 input width, E experts, k experts per token.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .dot import (eo_f32_bf16w_matmul, eo_f32_mxfp4w_matmul, eo_q8_mxfp4w_matmul, eo_q8_q4w_matmul,
                  eo_q8_q8w_matmul, eo_q8_quantize)

ROW_TILE = 16  # weight rows per C call: small enough to balance threads, big enough to amortize

# quantized matrix kinds, as passed to `q8x_matmul` (an int so one compiled loop serves them all)
KIND_Q8, KIND_Q4 = 0, 1

# Offsets (bytes, inside one expert's range) of its six parts, in this order:
EXP_GU_BLOCKS, EXP_GU_SCALES, EXP_GU_BIAS, EXP_DOWN_BLOCKS, EXP_DOWN_SCALES, EXP_DOWN_BIAS = range(6)


# -- activations ------------------------------------------------------------------------

@njit(cache=True, nogil=True)
def q8_quantize(x, xq, xd):
    """x f32 [T, K] -> xq int8 [T, K], xd f32 [T, K/32] (blocks never straddle rows: K % 32 == 0)."""
    eo_q8_quantize(x.ctypes.data, x.size, xq.ctypes.data, xd.ctypes.data)


@njit(parallel=True, cache=True, nogil=True)
def f32_rmsnorm(x, w, eps, out):
    """out[t] = x[t] / sqrt(mean(x[t]^2) + eps) * w   (x [T, H], w [H])."""
    T, H = x.shape
    for t in prange(T):
        ss = 0.0
        for i in range(H):
            ss += np.float64(x[t, i]) * x[t, i]
        inv = 1.0 / math.sqrt(ss / H + eps)
        for i in range(H):
            out[t, i] = np.float32(x[t, i] * inv) * w[i]


# -- dense matrices ---------------------------------------------------------------------

@njit(parallel=True, cache=True, nogil=True)
def q8x_matmul(kind, wq, wd, xq, xd, out):
    """out[T, R] = x @ W^T for a q8 or q4 matrix, activations given as q8 blocks (xq, xd).

    q8: wq int8 [R, nb, 32]; q4: wq uint8 nibbles [R, nb, 16]; wd fp16 scale bits [R, nb].
    The caller quantizes x once when several matrices share an input."""
    T = xq.shape[0]
    R = out.shape[1]
    nb = wq.shape[1]
    row_bytes = wq.shape[1] * wq.shape[2]
    for tile in prange((R + ROW_TILE - 1) // ROW_TILE):
        r0 = tile * ROW_TILE
        n = min(ROW_TILE, R - r0)
        if kind == KIND_Q8:
            eo_q8_q8w_matmul(wq.ctypes.data + r0 * row_bytes, wd.ctypes.data + r0 * nb * 2, n, nb,
                             xq.ctypes.data, xd.ctypes.data, T, out.ctypes.data + r0 * 4, R)
        else:
            eo_q8_q4w_matmul(wq.ctypes.data + r0 * row_bytes, wd.ctypes.data + r0 * nb * 2, n, nb,
                             xq.ctypes.data, xd.ctypes.data, T, out.ctypes.data + r0 * 4, R)


@njit(parallel=True, cache=True, nogil=True)
def f32_bf16w_matmul(w, x, out):
    """out[T, R] = x[T, K] @ W^T with W as bf16 bits [R, K] (attention in the bf16 preset, routers)."""
    T = x.shape[0]
    R, K = w.shape
    for tile in prange((R + ROW_TILE - 1) // ROW_TILE):
        r0 = tile * ROW_TILE
        n = min(ROW_TILE, R - r0)
        eo_f32_bf16w_matmul(w.ctypes.data + r0 * K * 2, n, K, x.ctypes.data, T, out.ctypes.data + r0 * 4, R)


@njit(parallel=True, cache=True, nogil=True)
def mxfp4_matmul(blocks_addr, scales_addr, R, nb, use_q8, x, xq, xd, out):
    """out[T, R] = x @ W^T for one MXFP4 matrix given by addresses (an expert inside a blob)."""
    T = x.shape[0]
    ntiles = (R + ROW_TILE - 1) // ROW_TILE
    for tile in prange(ntiles):
        r0 = tile * ROW_TILE
        n = min(ROW_TILE, R - r0)
        if use_q8:
            eo_q8_mxfp4w_matmul(blocks_addr + r0 * nb * 16, scales_addr + r0 * nb, n, nb,
                                xq.ctypes.data, xd.ctypes.data, T, out.ctypes.data + r0 * 4, R)
        else:
            eo_f32_mxfp4w_matmul(blocks_addr + r0 * nb * 16, scales_addr + r0 * nb, n, nb,
                                 x.ctypes.data, T, out.ctypes.data + r0 * 4, R)


@njit(parallel=True, cache=True, nogil=True)
def add_bias(out, bias):
    for t in prange(out.shape[0]):
        for r in range(out.shape[1]):
            out[t, r] += bias[r]


# -- attention ----------------------------------------------------------------------------

@njit(parallel=True, cache=True, nogil=True)
def rope_inplace(x, cos, sin, pos0):
    """Rotate x [T, heads, hd] at positions pos0.. : halves (x1, x2) -> (x1 c - x2 s, x2 c + x1 s).
    cos/sin [positions, hd/2] already carry YaRN's attention scaling."""
    T, nh, hd = x.shape
    half = hd // 2
    for t in prange(T):
        p = pos0 + t
        for h in range(nh):
            for i in range(half):
                a, b = x[t, h, i], x[t, h, i + half]
                c, s = cos[p, i], sin[p, i]
                x[t, h, i] = a * c - b * s
                x[t, h, i + half] = b * c + a * s


@njit(parallel=True, cache=True, nogil=True)
def attention_sinks(q, k_new, v_new, k_cache, v_cache, pos0, ring, window, sinks, scale, out):
    """Causal attention with a per-head sink logit, optional sliding window, GQA.

    q [T, nh, hd]; k_new/v_new [T, nkv, hd] for positions pos0..pos0+T-1; earlier positions
    come from k_cache/v_cache [cap, nkv, hd] (a ring indexed by position % cap when `ring`).
    window = 0: all earlier keys; else keys j with p - j < window. The sink joins the softmax's
    denominator only. One pass with a running max (online softmax), so no score buffer."""
    T, nh, hd = q.shape
    nkv = k_new.shape[1]
    group = nh // nkv
    cap = k_cache.shape[0]
    for idx in prange(T * nh):
        t, h = idx // nh, idx % nh
        g = h // group
        p = pos0 + t
        lo = 0 if window == 0 else max(0, p - window + 1)
        m = np.float32(sinks[h])
        denom = np.float32(1.0)
        acc = np.zeros(hd, np.float32)
        for j in range(lo, p + 1):
            if j >= pos0:
                kr, vr = k_new[j - pos0, g], v_new[j - pos0, g]
            else:
                c = j % cap if ring else j
                kr, vr = k_cache[c, g], v_cache[c, g]
            s = np.float32(0.0)
            for i in range(hd):
                s += q[t, h, i] * kr[i]
            s *= scale
            if s > m:
                corr = math.exp(m - s)
                denom *= corr
                for i in range(hd):
                    acc[i] *= corr
                m = s
            e = np.float32(math.exp(s - m))
            denom += e
            for i in range(hd):
                acc[i] += e * vr[i]
        inv = 1.0 / denom
        for i in range(hd):
            out[t, h, i] = acc[i] * inv


@njit(cache=True, nogil=True)
def kv_store(k_new, v_new, k_cache, v_cache, pos0, ring):
    """Append positions pos0.. to the cache (a ring keeps only its last `cap` positions)."""
    T = k_new.shape[0]
    cap = k_cache.shape[0]
    first = max(0, T - cap) if ring else 0
    for t in range(first, T):
        c = (pos0 + t) % cap if ring else pos0 + t
        k_cache[c] = k_new[t]
        v_cache[c] = v_new[t]


# -- mixture of experts -------------------------------------------------------------------

@njit(cache=True, nogil=True)
def route_topk(logits, k, idx, wts):
    """Per token: the k largest router logits (ties: lower expert first), softmax over them."""
    T, E = logits.shape
    for t in range(T):
        taken = np.zeros(E, np.bool_)
        for s in range(k):
            best = -1
            for e in range(E):
                if not taken[e] and (best < 0 or logits[t, e] > logits[t, best]):
                    best = e
            taken[best] = True
            idx[t, s] = best
        mx = logits[t, idx[t, 0]]
        tot = 0.0
        for s in range(k):
            wts[t, s] = math.exp(logits[t, idx[t, s]] - mx)
            tot += wts[t, s]
        for s in range(k):
            wts[t, s] /= tot


@njit(parallel=True, cache=True, nogil=True)
def swiglu_clamped(gu, bias, limit, alpha, out):
    """gu [n, 2I] rows interleave gate (even) and linear (odd) outputs, before bias.
    out[n, I] = g * sigmoid(alpha g) * (l + 1) with g clamped above at limit, l to +-limit."""
    n, I = out.shape
    for r in prange(n):
        for j in range(I):
            g = min(gu[r, 2 * j] + bias[2 * j], limit)
            l = min(max(gu[r, 2 * j + 1] + bias[2 * j + 1], -limit), limit)
            out[r, j] = g / (1.0 + math.exp(-alpha * g)) * (l + 1.0)


@njit(cache=True, nogil=True)
def moe(h, idx, wts, blob, slot_of, offs, H, I, use_q8, limit, alpha, out):
    """out[T, H] += sum over each token's experts of weight * expert(h[t]).

    Tokens are grouped by expert so each expert's weights are streamed once per call, however
    many tokens use it (a GEMM over the group, not repeated GEMVs). Expert e's bytes are row
    slot_of[e] of blob [slots, stride]; offs gives the six parts' offsets inside it."""
    T, k = idx.shape
    E = slot_of.shape[0]
    count = np.zeros(E, np.int64)
    for t in range(T):
        for s in range(k):
            count[idx[t, s]] += 1
    maxn = count.max()
    xe = np.empty((maxn, H), np.float32)
    xq = np.empty((maxn, H), np.int8)
    xd = np.empty((maxn, H // 32), np.float32)
    gu = np.empty((maxn, 2 * I), np.float32)
    act = np.empty((maxn, I), np.float32)
    aq = np.empty((maxn, I), np.int8)
    ad = np.empty((maxn, I // 32), np.float32)
    y = np.empty((maxn, H), np.float32)
    tok = np.empty(maxn, np.int64)
    wt = np.empty(maxn, np.float32)
    for e in range(E):
        n = 0
        for t in range(T):
            for s in range(k):
                if idx[t, s] == e:
                    tok[n] = t
                    wt[n] = wts[t, s]
                    xe[n] = h[t]
                    n += 1
        if n == 0:
            continue
        base = blob.ctypes.data + slot_of[e] * blob.shape[1]
        gu_bias = blob[slot_of[e], offs[EXP_GU_BIAS]:offs[EXP_GU_BIAS] + 8 * I].view(np.float32)
        dn_bias = blob[slot_of[e], offs[EXP_DOWN_BIAS]:offs[EXP_DOWN_BIAS] + 4 * H].view(np.float32)
        if use_q8:
            q8_quantize(xe[:n], xq[:n], xd[:n])
        mxfp4_matmul(base + offs[EXP_GU_BLOCKS], base + offs[EXP_GU_SCALES], 2 * I, H // 32, use_q8,
                     xe[:n], xq[:n], xd[:n], gu[:n])
        swiglu_clamped(gu[:n], gu_bias, limit, alpha, act[:n])
        if use_q8:
            q8_quantize(act[:n], aq[:n], ad[:n])
        mxfp4_matmul(base + offs[EXP_DOWN_BLOCKS], base + offs[EXP_DOWN_SCALES], H, I // 32, use_q8,
                     act[:n], aq[:n], ad[:n], y[:n])
        for r in range(n):
            for i in range(H):
                out[tok[r], i] += wt[r] * (y[r, i] + dn_bias[i])


# -- sampling -------------------------------------------------------------------------------

@njit(cache=True, nogil=True)
def sample_token(logits, temperature, top_k, top_p, u):
    """One token id from logits [V]: greedy at temperature 0, else softmax(logits / T) restricted
    to the top_k largest (0 = no limit) and then to the smallest set whose mass reaches top_p,
    drawn with the uniform number u in [0, 1)."""
    V = logits.shape[0]
    best = 0
    for i in range(V):
        if logits[i] > logits[best]:
            best = i
    if temperature <= 0.0:
        return best
    mx = logits[best] / temperature
    # tokens 40 nats below the best carry < 1e-17 of the mass: skip them before sorting
    cand = np.empty(V, np.int64)
    n = 0
    for i in range(V):
        if logits[i] / temperature > mx - 40.0:
            cand[n] = i
            n += 1
    vals = np.empty(n, np.float64)
    for j in range(n):
        vals[j] = -logits[cand[j]]
    order = np.argsort(vals, kind="mergesort")  # descending logits, ties by lower id
    if top_k > 0 and top_k < n:
        n = top_k
    probs = np.empty(n, np.float64)
    tot = 0.0
    for j in range(n):
        probs[j] = math.exp(logits[cand[order[j]]] / temperature - mx)
        tot += probs[j]
    keep, acc = n, 0.0
    if top_p < 1.0:
        for j in range(n):
            acc += probs[j] / tot
            if acc >= top_p:
                keep = j + 1
                break
    tot = 0.0
    for j in range(keep):
        tot += probs[j]
    target, acc = u * tot, 0.0
    for j in range(keep):
        acc += probs[j]
        if acc > target:
            return cand[order[j]]
    return cand[order[keep - 1]]
