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


@njit(parallel=True, cache=True, nogil=True)
def add_bias_residual(o, bias, x):
    """x += o + bias (the attention block's output projection joining the residual stream)."""
    for t in prange(x.shape[0]):
        for r in range(x.shape[1]):
            x[t, r] += o[t, r] + bias[r]


# float32 value of every fp16 bit pattern: a 256 KiB table beats converting in jitted code
FP16_TO_F32 = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)


@njit(cache=True, nogil=True)
def dequant_rows(kind, qs, scales, f16, ids, out):
    """out[i] = row ids[i] of a q8 (qs int8 [R, nb, 32]) or q4 (qs uint8 [R, nb, 16]) matrix
    with fp16 scale bits [R, nb] (f16 = FP16_TO_F32), as float32 (the embedding lookup)."""
    nb = qs.shape[1]
    for i in range(ids.shape[0]):
        r = ids[i]
        for b in range(nb):
            d = f16[scales[r, b]]
            if kind == KIND_Q8:
                for j in range(32):
                    out[i, b * 32 + j] = np.float32(qs[r, b, j]) * d
            else:
                for j in range(16):
                    c = np.int32(qs[r, b, j])
                    out[i, b * 32 + j] = np.float32((c & 15) - 8) * d
                    out[i, b * 32 + j + 16] = np.float32((c >> 4) - 8) * d


@njit(cache=True, nogil=True)
def bf16_rows(w, ids, out_bits):
    """Row ids[i] of bf16 bits w [R, K] into out_bits[i] (uint32 view of a float32 array)."""
    for i in range(ids.shape[0]):
        r = ids[i]
        for j in range(w.shape[1]):
            out_bits[i, j] = np.uint32(w[r, j]) << 16


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


# Query tokens per attention tile and keys per block: a tile's group of query heads (8 in
# gpt-oss) times ATT_BQ tokens share every gathered key/value block, so each block is read once
# per tile, not once per query row.
ATT_BQ = 16
ATT_BK = 64
# Relaxed float rules for the attention loops only: lets LLVM vectorize the dot products and
# reductions (reassociation); no "no-NaN/no-inf" assumptions, which masking could break.
_ATT_MATH = {"reassoc", "contract", "nsz", "arcp"}


def attention_scratch(T: int, nh: int, nkv: int, hd: int) -> tuple:
    """Per-tile work buffers of `attention_sinks` for T query tokens (allocate once, reuse)."""
    items = nkv * ((T + ATT_BQ - 1) // ATT_BQ)
    rows = ATT_BQ * (nh // nkv)
    return (np.empty((items, rows, hd), np.float32), np.empty((items, rows, hd), np.float32),
            np.empty((items, 2, rows), np.float32), np.empty((items, ATT_BK, hd), np.float32),
            np.empty((items, ATT_BK, hd), np.float32), np.empty((items, ATT_BK), np.float32))


@njit(parallel=True, cache=True, nogil=True)
def qkv_split_rope(qkv, bias, cos, sin, pos0, q, k, v):
    """Fused q|k|v projection [T, (nh + 2 nkv) hd] plus bias -> q [T, nh, hd], k, v [T, nkv, hd],
    with RoPE applied to q and k (as `rope_inplace`)."""
    T, nh, hd = q.shape
    nkv = k.shape[1]
    half = hd // 2
    kofs, vofs = nh * hd, (nh + nkv) * hd
    for t in prange(T):
        p = pos0 + t
        for h in range(nh + nkv):
            c0 = h * hd
            for i in range(half):
                a = qkv[t, c0 + i] + bias[c0 + i]
                b = qkv[t, c0 + i + half] + bias[c0 + i + half]
                c, s = cos[p, i], sin[p, i]
                if h < nh:
                    q[t, h, i] = a * c - b * s
                    q[t, h, i + half] = b * c + a * s
                else:
                    k[t, h - nh, i] = a * c - b * s
                    k[t, h - nh, i + half] = b * c + a * s
        for h in range(nkv):
            for i in range(hd):
                v[t, h, i] = qkv[t, vofs + h * hd + i] + bias[vofs + h * hd + i]


@njit(parallel=True, cache=True, nogil=True, fastmath=_ATT_MATH)
def attention_sinks(q, k_new, v_new, k_cache, v_cache, pos0, ring, window, sinks, scale, out,
                    qs, acc, ml, kb, vb, sc):
    """Causal attention with a per-head sink logit, optional sliding window, GQA.

    q [T, nh, hd]; k_new/v_new [T, nkv, hd] for positions pos0..pos0+T-1; earlier positions
    come from k_cache/v_cache [cap, nkv, hd] (a ring indexed by position % cap when `ring`).
    window = 0: all earlier keys; else keys j with p - j < window. The sink joins the softmax's
    denominator only.

    Blocked ("flash") form: work items are (kv head, tile of ATT_BQ query tokens); an item
    gathers ATT_BK keys and values at a time into contiguous buffers, keeps a
    running max and denominator per query row (online softmax) and never materializes the
    T x T score matrix. Buffers qs..sc come from `attention_scratch` (no allocation here)."""
    T, nh, hd = q.shape
    nkv = k_new.shape[1]
    group = nh // nkv
    cap = k_cache.shape[0]
    ntiles = (T + ATT_BQ - 1) // ATT_BQ
    for item in prange(nkv * ntiles):
        # causal tiles grow with position: pair the first with the last so that each
        # thread's contiguous share of the items (prange's static split) holds equal work
        g, k = item % nkv, item // nkv
        tile = k // 2 if k % 2 == 0 else ntiles - 1 - k // 2
        t0 = tile * ATT_BQ
        nt = min(ATT_BQ, T - t0)
        R = nt * group
        Q, A, K, V, S = qs[item], acc[item], kb[item], vb[item], sc[item]
        M, L = ml[item, 0], ml[item, 1]
        for r in range(R):  # row r: token t0 + r // group, head g * group + r % group
            t, h = t0 + r // group, g * group + r % group
            for i in range(hd):
                Q[r, i] = q[t, h, i] * scale
                A[r, i] = 0.0
            M[r] = sinks[h]
            L[r] = 1.0
        p_first, p_last = pos0 + t0, pos0 + t0 + nt - 1
        j_first = 0 if window == 0 else max(0, p_first - window + 1)
        for j0 in range(j_first, p_last + 1, ATT_BK):
            n = min(ATT_BK, p_last + 1 - j0)
            for jj in range(n):
                j = j0 + jj
                if j >= pos0:
                    for i in range(hd):
                        K[jj, i] = k_new[j - pos0, g, i]
                        V[jj, i] = v_new[j - pos0, g, i]
                else:
                    c = j % cap if ring else j
                    for i in range(hd):
                        K[jj, i] = k_cache[c, g, i]
                        V[jj, i] = v_cache[c, g, i]
            for r in range(R):
                p = p_first + r // group
                a = j0 if window == 0 else max(j0, p - window + 1)
                b = min(j0 + n, p + 1)
                if a >= b:
                    continue
                a -= j0
                b -= j0
                for jj in range(a, b):  # a reduction per key: the form LLVM vectorizes here
                    s = np.float32(0.0)
                    for i in range(hd):
                        s += Q[r, i] * K[jj, i]
                    S[jj] = s
                mx = M[r]
                for jj in range(a, b):
                    mx = max(mx, S[jj])
                if mx > M[r]:
                    corr = np.float32(math.exp(M[r] - mx))
                    L[r] *= corr
                    for i in range(hd):
                        A[r, i] *= corr
                    M[r] = mx
                tot = np.float32(0.0)
                for jj in range(a, b):
                    e = np.float32(math.exp(S[jj] - mx))
                    S[jj] = e
                    tot += e
                L[r] += tot
                for jj in range(a, b):
                    e = S[jj]
                    for i in range(hd):
                        A[r, i] += e * V[jj, i]
        for r in range(R):
            t, h = t0 + r // group, g * group + r % group
            inv = np.float32(1.0) / L[r]
            for i in range(hd):
                out[t, h, i] = A[r, i] * inv


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


def moe_scratch(T: int, H: int, I: int, E: int) -> tuple:
    """Work buffers of `moe` for up to T tokens (allocate once, reuse)."""
    f32 = np.float32
    return (np.empty((T, H), f32), np.empty((T, H), np.int8), np.empty((T, H // 32), f32),
            np.empty((T, 2 * I), f32), np.empty((T, I), f32), np.empty((T, I), np.int8),
            np.empty((T, I // 32), f32), np.empty((T, H), f32), np.empty(T, np.int64),
            np.empty(T, f32), np.empty(E, np.int64))


@njit(cache=True, nogil=True)
def moe(h, idx, wts, blob, slot_of, offs, H, I, use_q8, limit, alpha, out,
        xe, xq, xd, gu, act, aq, ad, y, tok, wt, count):
    """out[T, H] += sum over each token's experts of weight * expert(h[t]).

    Tokens are grouped by expert so each expert's weights are streamed once per call, however
    many tokens use it (a GEMM over the group, not repeated GEMVs). Expert e's bytes are row
    slot_of[e] of blob [slots, stride]; offs gives the six parts' offsets inside it.
    xe..count are work buffers from `moe_scratch` (no allocation here)."""
    T, k = idx.shape
    E = slot_of.shape[0]
    count[:] = 0
    for t in range(T):
        for s in range(k):
            count[idx[t, s]] += 1
    for e in range(E):
        if count[e] == 0:
            continue
        n = 0
        for t in range(T):
            for s in range(k):
                if idx[t, s] == e:
                    tok[n] = t
                    wt[n] = wts[t, s]
                    xe[n] = h[t]
                    n += 1
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
