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
from numba import njit, prange, types
from numba.extending import intrinsic

from .dot import (eo_f16_round, eo_f16_to_f32, eo_f32_attention_block, eo_f32_bf16w_matmul,
                  eo_f32_mxfp4w_matmul, eo_f32_to_f16, eo_q8_mxfp4w_matmul, eo_q8_q4w_matmul,
                  eo_q8_q8w_matmul, eo_q8_quantize, eo_q8kv_to_f32)

ROW_TILE = 16  # fewest weight rows per C call (bf16 matrices, small one-token tiles)
# Most rows per C call over one token (decoding). Each call restarts the weight stream, which
# the prefetchers take a while to follow: 20b q8, 2 threads, A/B passes in one process, the 4
# experts' gate_up and down: 16-row tiles 24-26 GB/s, 128 ~34, 256-360 ~36-37 GB/s, ~512 +8 %
# over 256 / 176, 720-2880 no better; q8 o (2880 rows): 32-row tiles 34.6 GB/s, 176 39.3,
# 368 40.3; q8 qkv (5120 rows): 80 rows 33.2, 256 37.7, 640 39.3 (medians of 12 passes).
DECODE_TILE_ROWS = 512
# One-token tiles of a parallel loop (a matrix, or a layer's active experts together) come in
# multiples of this, so that 1, 2, 4, 8 or 16 threads get as many rows each; fewer, longer
# streams beat more, shorter ones (above), and 16 tiles of o / qkv measured as fast as 8.
DECODE_TILE_GRAIN = 16
# Rows per C call of a dense matrix over several tokens: a panel that stays in L2 while every
# token tile goes over it (q8 qkv, 512 tokens: ~150 -> ~185 G int-ops/s a core against 16 rows)
PANEL_ROWS = 256
# Rows per C call of an expert matrix when its experts average 8+ tokens (prompts): fewer
# activation preps per weight row. pp512 experts, A/B rounds: 16 rows ~8.1 s, 64 ~7.0 s,
# 128 ~6.2 s, 256 the same as 128.
EXPERT_PANEL_ROWS = 128


@njit(cache=True, nogil=True)
def decode_tiles(rows, groups):
    """Tiles per matrix when a call sees a token or so, for `groups` matrices of `rows` rows
    run in one parallel loop: as few as keep tiles within DECODE_TILE_ROWS rows while all the
    groups' tiles together make a multiple of DECODE_TILE_GRAIN (see `tile_span`); never a tile
    under ROW_TILE rows."""
    most = max(1, rows // ROW_TILE)
    n = (rows + DECODE_TILE_ROWS - 1) // DECODE_TILE_ROWS
    while (n * groups) % DECODE_TILE_GRAIN and n < most:
        n += 1
    return min(n, most)


@intrinsic
def _fetch_add(typingctx, counter, n):
    """counter[0] += n atomically (counter: an int64 array); returns the value before."""
    sig = types.int64(counter, types.int64)

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        return builder.atomic_rmw("add", ary.data, args[1], "monotonic")
    return sig, codegen


# Loops whose items are claimed one at a time from a shared counter run as this many prange
# lanes (at least as many as there are threads; a lane that finds the counter spent ends at once)
CLAIM_LANES = 64


@njit(cache=True, nogil=True)
def tile_span(tile, ntiles, rows):
    """(first row, row count) of tile `tile` of `ntiles` nearly equal tiles of `rows` rows. Tiles
    start at multiples of ROW_TILE, so two threads never write one cache line of the output."""
    r0 = rows * tile // ntiles // ROW_TILE * ROW_TILE
    r1 = rows if tile == ntiles - 1 else rows * (tile + 1) // ntiles // ROW_TILE * ROW_TILE
    return r0, r1 - r0


# stored matrix kinds, as passed to `q8x_matmul` and `matmul` (an int so one compiled loop serves them all)
KIND_Q8, KIND_Q4, KIND_BF16 = 0, 1, 2

# Offsets (bytes, inside one expert's range) of its six parts, in this order:
EXP_GU_BLOCKS, EXP_GU_SCALES, EXP_GU_BIAS, EXP_DOWN_BLOCKS, EXP_DOWN_SCALES, EXP_DOWN_BIAS = range(6)


# -- activations ------------------------------------------------------------------------

@njit(cache=True, nogil=True)
def q8_quantize(x, xq, xd):
    """x f32 [T, K] -> xq int8 [T, K], xd f32 [T, K/32] (blocks never straddle rows: K % 32 == 0)."""
    eo_q8_quantize(x.ctypes.data, x.size, xq.ctypes.data, xd.ctypes.data)


@njit(cache=True, nogil=True)
def _rmsnorm_row(x, w, eps, out):
    H = x.shape[0]
    ss = 0.0
    for i in range(H):
        ss += np.float64(x[i]) * x[i]
    inv = 1.0 / math.sqrt(ss / H + eps)
    for i in range(H):
        out[i] = np.float32(x[i] * inv) * w[i]


# The row-wise loops below run a single token (decoding) on the calling thread: a parallel
# region for one row would only add its launch and the other thread's wake-up.

@njit(parallel=True, cache=True, nogil=True)
def f32_rmsnorm(x, w, eps, out):
    """out[t] = x[t] / sqrt(mean(x[t]^2) + eps) * w   (x [T, H], w [H])."""
    T = x.shape[0]
    if T == 1:
        _rmsnorm_row(x[0], w, eps, out[0])
        return
    for t in prange(T):
        _rmsnorm_row(x[t], w, eps, out[t])


# -- dense matrices ---------------------------------------------------------------------

@njit(parallel=True, cache=True, nogil=True)
def q8x_matmul(kind, wq, wd, xq, xd, out):
    """out[T, R] = x @ W^T for a q8 or q4 matrix, activations given as q8 blocks (xq, xd).

    q8: wq int8 [R, nb, 32]; q4: wq uint8 nibbles [R, nb, 16]; wd fp16 scale bits [R, nb].
    The caller quantizes x once when several matrices share an input."""
    T, R = out.shape
    ntiles = decode_tiles(R, 1) if T < 8 else (R + PANEL_ROWS - 1) // PANEL_ROWS
    # Tiles are claimed one by one rather than split in advance: the two vCPUs of a shared
    # machine stream at different speeds, and a static split left one waiting 10-20 % of each
    # matrix's time (20b q8 decode, 2 threads; claiming measured +3 % on o, qkv and lm_head).
    claimed = np.zeros(1, np.int64)
    for lane in prange(CLAIM_LANES):
        tile = _fetch_add(claimed, 1)
        while tile < ntiles:
            _q8x_tile(kind, wq, wd, xq, xd, out, tile, ntiles)
            tile = _fetch_add(claimed, 1)


@njit(cache=True, nogil=True)
def _q8x_tile(kind, wq, wd, xq, xd, out, tile, ntiles):
    T, R = out.shape
    nb = wq.shape[1]
    row_bytes = wq.shape[1] * wq.shape[2]
    r0, n = tile_span(tile, ntiles, R)
    if kind == KIND_Q8:
        eo_q8_q8w_matmul(wq.ctypes.data + r0 * row_bytes, wd.ctypes.data + r0 * nb * 2, n, nb,
                         xq.ctypes.data, xd.ctypes.data, T, out.ctypes.data + r0 * 4, R)
    else:
        eo_q8_q4w_matmul(wq.ctypes.data + r0 * row_bytes, wd.ctypes.data + r0 * nb * 2, n, nb,
                         xq.ctypes.data, xd.ctypes.data, T, out.ctypes.data + r0 * 4, R)


@njit(cache=True, nogil=True)
def matmul(kind, qs, scales, bf16, x, xq, xd, out):
    """out [T, R] = x [T, K] @ W^T for a stored matrix: KIND_Q8 / KIND_Q4 blocks (qs, fp16 scale
    bits; x is first quantized into the work buffers xq, xd) or KIND_BF16 bits (bf16). The
    arrays of the other kind are placeholders."""
    if kind == KIND_BF16:
        f32_bf16w_matmul(bf16, x, out)
    else:
        q8_quantize(x, xq, xd)
        q8x_matmul(kind, qs, scales, xq, xd, out)


@njit(parallel=True, cache=True, nogil=True)
def f32_bf16w_matmul(w, x, out):
    """out[T, R] = x[T, K] @ W^T with W as bf16 bits [R, K] (attention in the bf16 preset, routers)."""
    T = x.shape[0]
    R, K = w.shape
    for tile in prange((R + ROW_TILE - 1) // ROW_TILE):
        r0 = tile * ROW_TILE
        n = min(ROW_TILE, R - r0)
        eo_f32_bf16w_matmul(w.ctypes.data + r0 * K * 2, n, K, x.ctypes.data, T, out.ctypes.data + r0 * 4, R)


@njit(cache=True, nogil=True)
def add_bias(out, bias):
    for t in range(out.shape[0]):
        for r in range(out.shape[1]):
            out[t, r] += bias[r]


@njit(cache=True, nogil=True)
def _add_bias_residual_row(o, bias, x):
    for r in range(x.shape[0]):
        x[r] += o[r] + bias[r]


@njit(parallel=True, cache=True, nogil=True)
def add_bias_residual(o, bias, x):
    """x += o + bias (the attention block's output projection joining the residual stream)."""
    T = x.shape[0]
    if T == 1:
        _add_bias_residual_row(o[0], bias, x[0])
        return
    for t in prange(T):
        _add_bias_residual_row(o[t], bias, x[t])


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


# Relaxed float rules for the attention and activation loops only: lets LLVM vectorize the dot
# products and reductions (reassociation); no "no-NaN/no-inf" assumptions, which masking could break.
_VEC_MATH = {"reassoc", "contract", "nsz", "arcp"}


@njit(cache=True, nogil=True, fastmath=_VEC_MATH)
def exp_inplace(x, bits, a, b):
    """x[a:b] = exp(x[a:b]) as 2^n * 2^f with |f| <= 1/2, n clamped to [-126, 126]: unlike
    calls to exp() this vectorizes. Relative error: the degree-6 polynomial and float32 steps
    (<= 2e-7) plus the float32 rounding of x log2(e), which grows with |x| (measured slope
    7.1e-8): <= 2e-7 at |x| <= 1, 1.1e-6 at |x| <= 20 (softmax and sigmoid arguments).
    bits: int32 work array as long as x."""
    f32 = bits.view(np.float32)
    for j in range(a, b):
        t = x[j] * np.float32(1.4426950408889634)
        t = min(max(t, np.float32(-126.0)), np.float32(126.0))
        n = np.floor(t + np.float32(0.5))
        f = t - n
        p = np.float32(1.5403530393381608e-4)
        p = p * f + np.float32(1.3333558146428443e-3)
        p = p * f + np.float32(9.618129107628477e-3)
        p = p * f + np.float32(5.550410866482158e-2)
        p = p * f + np.float32(2.402265069591007e-1)
        p = p * f + np.float32(6.931471805599453e-1)
        x[j] = p * f + np.float32(1.0)
        bits[j] = (np.int32(n) + 127) << 23
    for j in range(a, b):
        x[j] *= f32[j]


# -- attention ----------------------------------------------------------------------------

# Query tokens per attention tile and keys per block: a tile's group of query heads (8 in
# gpt-oss) times ATT_BQ tokens share every key/value block the C kernel reads (in place, from
# the cache), so each block is read once per tile, not once per query row.
ATT_BQ = 16
ATT_BK = 128


def _att_rows(T: int, nh: int, nkv: int) -> int:
    """Query rows of one tile, padded to the C kernel's multiple of 8."""
    rows = min(T, ATT_BQ) * (nh // nkv)
    return (rows + 7) // 8 * 8


def attention_scratch(T: int, nh: int, nkv: int, hd: int) -> tuple:
    """Per-tile work buffers of `attention_sinks` for T query tokens (allocate once, reuse):
    transposed queries and accumulators [items, hd, rows], running max and sum [items, 2, rows],
    key ranges [items, 2, rows], scores [items, 8 * ATT_BK], and a block of keys and values
    [items, ATT_BK, hd] each for the blocks that do not lie contiguous in one array."""
    items = nkv * ((T + ATT_BQ - 1) // ATT_BQ)
    rows = _att_rows(T, nh, nkv)
    return (np.empty((items, hd, rows), np.float32), np.empty((items, hd, rows), np.float32),
            np.empty((items, 2, rows), np.float32), np.empty((items, 2, rows), np.int32),
            np.empty((items, 8 * ATT_BK), np.float32), np.empty((items, ATT_BK, hd), np.float32),
            np.empty((items, ATT_BK, hd), np.float32))


@njit(parallel=True, cache=True, nogil=True)
def qkv_split_rope(qkv, bias, cos, sin, pos0, q, k, v):
    """Fused q|k|v projection [T, (nh + 2 nkv) hd] plus bias -> q [T, nh, hd], k, v [T, nkv, hd],
    with RoPE on q and k at positions pos0..: each head's halves (x1, x2) become
    (x1 c - x2 s, x2 c + x1 s); cos/sin [positions, hd/2] already carry YaRN's scaling."""
    T = q.shape[0]
    if T == 1:
        _qkv_rope_row(qkv[0], bias, cos[pos0], sin[pos0], q[0], k[0], v[0])
        return
    for t in prange(T):
        _qkv_rope_row(qkv[t], bias, cos[pos0 + t], sin[pos0 + t], q[t], k[t], v[t])


@njit(cache=True, nogil=True)
def _qkv_rope_row(qkv, bias, cos, sin, q, k, v):
    """One token of qkv_split_rope: q [nh, hd], k / v [nkv, hd]; cos / sin [hd / 2] at its position."""
    nh, hd = q.shape
    nkv = k.shape[0]
    half = hd // 2
    vofs = (nh + nkv) * hd
    for h in range(nh + nkv):
        c0 = h * hd
        for i in range(half):
            a = qkv[c0 + i] + bias[c0 + i]
            b = qkv[c0 + i + half] + bias[c0 + i + half]
            c, s = cos[i], sin[i]
            if h < nh:
                q[h, i] = a * c - b * s
                q[h, i + half] = b * c + a * s
            else:
                k[h - nh, i] = a * c - b * s
                k[h - nh, i + half] = b * c + a * s
    for h in range(nkv):
        for i in range(hd):
            v[h, i] = qkv[vofs + h * hd + i] + bias[vofs + h * hd + i]


@njit(parallel=True, cache=True, nogil=True)
def attention_sinks(q, k_new, v_new, k_cache, v_cache, pos0, ring, window, sinks, scale, out,
                    qt, acct, ml, lohi, sc, kb, vb):
    """Causal attention with a per-head sink logit, optional sliding window, GQA.

    q [T, nh, hd]; k_new/v_new [T, nkv, hd] for positions pos0..pos0+T-1; earlier positions
    come from k_cache/v_cache [nkv, cap, hd] (a ring indexed by position % cap when `ring`).
    window = 0: all earlier keys; else keys j with p - j < window. The sink joins the softmax's
    denominator only.

    Blocked ("flash") form: work items are (kv head, tile of ATT_BQ query tokens); an item's
    rows (its tokens times the group's query heads) go through the keys in blocks, handed to
    the C kernel `eo_f32_attention_block` with a running max and denominator per row (online
    softmax): the T x T score matrix is never formed. Blocks start at multiples of ATT_BK
    positions, so a row's arithmetic depends on its position only, never on how the tokens
    were split into calls: decoding through the cache gives bit-identical results to one
    prefill. A block is read where it lies, or copied into kb / vb first when it spans the
    cache and the new keys or the ring's wrap, or when the cache holds float16 (uint16 bits,
    widened there a block at a time). Buffers qt..vb come from `attention_scratch`."""
    T, nh, hd = q.shape
    nkv = k_new.shape[1]
    group = nh // nkv
    cap = k_cache.shape[1]
    half = k_cache.itemsize == 2  # a float16 cache
    q8 = k_cache.itemsize == 1    # a q8 cache (rows of int8 blocks and their scales)
    isz = k_cache.itemsize
    ntiles = (T + ATT_BQ - 1) // ATT_BQ
    kv_stride = nkv * hd
    for item in prange(nkv * ntiles):
        # causal tiles grow with position: pair the first with the last so that each
        # thread's contiguous share of the items (prange's static split) holds equal work
        g, kk = item % nkv, item // nkv
        tile = kk // 2 if kk % 2 == 0 else ntiles - 1 - kk // 2
        t0 = tile * ATT_BQ
        nt = min(ATT_BQ, T - t0)
        R = nt * group
        # the kernel's rows: the tile's, padded to 8; its [hd, R8] arrays packed at the start
        # of the item's buffers (a decoding step's 8 rows then sit in 16 cache lines)
        R8 = (R + 7) // 8 * 8
        Q, A = qt[item].ravel()[:hd * R8].reshape(hd, R8), acct[item].ravel()[:hd * R8].reshape(hd, R8)
        M, L, LO, HI = ml[item, 0], ml[item, 1], lohi[item, 0], lohi[item, 1]
        for r in range(R8):  # row r: token t0 + r // group, head g * group + r % group
            if r < R:
                t, h = t0 + r // group, g * group + r % group
                for i in range(hd):
                    Q[i, r] = q[t, h, i] * scale
                M[r] = sinks[h]
            else:  # padding: no keys
                for i in range(hd):
                    Q[i, r] = 0.0
                M[r] = 0.0
            L[r] = 1.0
            for i in range(hd):
                A[i, r] = 0.0
        p_first, p_last = pos0 + t0, pos0 + t0 + nt - 1
        j = 0 if window == 0 else max(0, p_first - window + 1)
        while j <= p_last:
            n = min((j // ATT_BK + 1) * ATT_BK, p_last + 1) - j  # keys j..j+n-1
            c = j % cap if ring else j
            if j >= pos0:
                kp = k_new.ctypes.data + ((j - pos0) * nkv + g) * hd * 4
                vp = v_new.ctypes.data + ((j - pos0) * nkv + g) * hd * 4
                stride = kv_stride
            elif q8 and j + n <= pos0 and c + n <= cap:
                _q8_rows_to_f32(k_cache, g, c, n, kb[item])
                _q8_rows_to_f32(v_cache, g, c, n, vb[item])
                kp, vp, stride = kb[item].ctypes.data, vb[item].ctypes.data, hd
            elif j + n <= pos0 and c + n <= cap:
                kp = k_cache.ctypes.data + (g * cap + c) * hd * isz
                vp = v_cache.ctypes.data + (g * cap + c) * hd * isz
                stride = hd
                if half:
                    eo_f16_to_f32(kp, kb[item].ctypes.data, n * hd)
                    eo_f16_to_f32(vp, vb[item].ctypes.data, n * hd)
                    kp, vp = kb[item].ctypes.data, vb[item].ctypes.data
            else:  # spans the cache and the new keys, or the ring's wrap: gather
                K, V = kb[item], vb[item]
                for jj in range(n):
                    pj = j + jj
                    if pj >= pos0:
                        for i in range(hd):
                            K[jj, i] = k_new[pj - pos0, g, i]
                            V[jj, i] = v_new[pj - pos0, g, i]
                    else:
                        cj = pj % cap if ring else pj
                        if q8:
                            _q8_rows_to_f32(k_cache, g, cj, 1, K[jj:jj + 1])
                            _q8_rows_to_f32(v_cache, g, cj, 1, V[jj:jj + 1])
                        elif half:
                            eo_f16_to_f32(k_cache.ctypes.data + (g * cap + cj) * hd * isz, K[jj].ctypes.data, hd)
                            eo_f16_to_f32(v_cache.ctypes.data + (g * cap + cj) * hd * isz, V[jj].ctypes.data, hd)
                        else:
                            for i in range(hd):
                                K[jj, i] = k_cache[g, cj, i]
                                V[jj, i] = v_cache[g, cj, i]
                kp, vp, stride = K.ctypes.data, V.ctypes.data, hd
            for r in range(R8):
                if r < R:
                    p = p_first + r // group
                    a = j if window == 0 else max(j, p - window + 1)
                    LO[r] = a - j
                    HI[r] = min(j + n, p + 1) - j
                else:
                    LO[r] = 0
                    HI[r] = 0
            eo_f32_attention_block(Q.ctypes.data, R8, hd, kp, vp, stride, n, LO.ctypes.data,
                                   HI.ctypes.data, M.ctypes.data, L.ctypes.data, A.ctypes.data,
                                   sc[item].ctypes.data)
            j += n
        for r in range(R):
            t, h = t0 + r // group, g * group + r % group
            inv = np.float32(1.0) / L[r]
            for i in range(hd):
                out[t, h, i] = A[i, r] * inv


@njit(cache=True, nogil=True)
def kv_store(k_new, v_new, k_cache, v_cache, pos0, ring):
    """Append positions pos0.. ([T, nkv, hd]) to the cache ([nkv, cap, row]: float32 or float16
    bits, or q8 rows; a ring keeps only its last `cap` positions)."""
    T, nkv, hd = k_new.shape
    cap = k_cache.shape[1]
    first = max(0, T - cap) if ring else 0
    half = k_cache.itemsize == 2
    for t in range(first, T):
        c = (pos0 + t) % cap if ring else pos0 + t
        if k_cache.itemsize == 1:  # q8: a row's int8 values, then its float32 block scales
            for g in range(nkv):
                eo_q8_quantize(k_new[t, g].ctypes.data, hd, k_cache[g, c].ctypes.data, k_cache[g, c].ctypes.data + hd)
                eo_q8_quantize(v_new[t, g].ctypes.data, hd, v_cache[g, c].ctypes.data, v_cache[g, c].ctypes.data + hd)
        elif half:
            for g in range(nkv):
                eo_f32_to_f16(k_new[t, g].ctypes.data, k_cache[g, c].ctypes.data, hd)
                eo_f32_to_f16(v_new[t, g].ctypes.data, v_cache[g, c].ctypes.data, hd)
        else:
            k_cache[:, c] = k_new[t]
            v_cache[:, c] = v_new[t]


@njit(cache=True, nogil=True)
def kv_round_like_cache(k_new, v_new, k_cache):
    """Round new keys and values [T, nkv, hd] to what a float16 or q8 cache will hold, before
    attention uses them, so a key weighs the same whether it is read from this chunk or
    from the cache later (chunked and token-by-token runs stay equal)."""
    if k_cache.itemsize == 2:
        eo_f16_round(k_new.ctypes.data, k_new.size)
        eo_f16_round(v_new.ctypes.data, v_new.size)
    elif k_cache.itemsize == 1:
        T, nkv, hd = k_new.shape
        row = np.empty((1, 1, k_cache.shape[2]), np.int8)
        for x in (k_new, v_new):
            for t in range(T):
                for g in range(nkv):
                    eo_q8_quantize(x[t, g].ctypes.data, hd, row.ctypes.data, row.ctypes.data + hd)
                    _q8_rows_to_f32(row, 0, 0, 1, x[t, g:g + 1])


@njit(cache=True, nogil=True)
def _q8_rows_to_f32(cache, g, c, n, out):
    """out[:n] = rows c..c+n-1 of head g of a q8 cache ([nkv, cap, hd + hd/8] int8), as float32."""
    eo_q8kv_to_f32(cache[g, c].ctypes.data, n, out.shape[1], out.ctypes.data)


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


def moe_scratch(T: int, H: int, I: int, E: int, k: int) -> tuple:
    """Work buffers of `moe` for up to T tokens with k experts each (allocate once, reuse)."""
    f32, n = np.float32, T * k
    return (np.empty((n, H), f32), np.empty((n, H), np.int8), np.empty((n, H // 32), f32),
            np.empty((n, 2 * I), f32), np.empty((n, I), f32), np.empty((n, I), np.int8),
            np.empty((n, I // 32), f32), np.empty((n, H), f32), np.empty(n, np.int64), np.empty(n, np.int64),
            np.empty(E + 1, np.int64), np.empty(E, np.int64), np.empty(E, np.int64), np.empty((n, I), np.int32),
            np.empty((T, H), np.int8), np.empty((T, H // 32), f32))


@njit(parallel=True, cache=True, nogil=True)
def _quantize_rows(x, xq, xd):
    if x.shape[0] == 1:
        eo_q8_quantize(x.ctypes.data, x.shape[1], xq.ctypes.data, xd.ctypes.data)
        return
    for r in prange(x.shape[0]):
        eo_q8_quantize(x[r].ctypes.data, x.shape[1], xq[r].ctypes.data, xd[r].ctypes.data)


@njit(parallel=True, cache=True, nogil=True)
def _experts_matmul(part_blocks, part_scales, R, nb, use_q8, blob, slot_of, offs, gexp, start, ngroups,
                    x, xq, xd, out):
    """One matrix (gate_up or down, chosen by its parts' indices) of every active expert in a
    single parallel loop over (row tile, expert), so no thread waits at a barrier between
    experts. Group g (expert gexp[g]) owns rows start[g]:start[g+1] of x and out. Items
    interleave the experts: each thread gets its share of every expert's rows (balanced when
    groups differ in size) and, decoding, reads several experts' streams at once, which
    measured faster than whole experts per thread (more reads in flight per core). Items are
    claimed one by one, as in q8x_matmul."""
    if start[ngroups] - start[0] < 8 * ngroups:
        ntiles = decode_tiles(R, ngroups)
    else:
        ntiles = (R + EXPERT_PANEL_ROWS - 1) // EXPERT_PANEL_ROWS
    claimed = np.zeros(1, np.int64)
    for lane in prange(CLAIM_LANES):
        item = _fetch_add(claimed, 1)
        while item < ngroups * ntiles:
            _expert_tile(part_blocks, part_scales, R, nb, use_q8, blob, slot_of, offs, gexp, start, ngroups,
                         x, xq, xd, out, item, ntiles)
            item = _fetch_add(claimed, 1)


@njit(cache=True, nogil=True)
def _expert_tile(part_blocks, part_scales, R, nb, use_q8, blob, slot_of, offs, gexp, start, ngroups,
                 x, xq, xd, out, item, ntiles):
    K = nb * 32
    gi, tile = item % ngroups, item // ngroups
    n0, n = start[gi], start[gi + 1] - start[gi]
    base = blob.ctypes.data + slot_of[gexp[gi]] * blob.shape[1]
    r0, nr = tile_span(tile, ntiles, R)
    wq = base + offs[part_blocks] + r0 * nb * 16
    we = base + offs[part_scales] + r0 * nb
    o = out.ctypes.data + (n0 * R + r0) * 4
    if use_q8:
        eo_q8_mxfp4w_matmul(wq, we, nr, nb, xq.ctypes.data + n0 * K, xd.ctypes.data + n0 * nb * 4, n, o, R)
    else:
        eo_f32_mxfp4w_matmul(wq, we, nr, nb, x.ctypes.data + n0 * K * 4, n, o, R)


@njit(parallel=True, cache=True, nogil=True, fastmath=_VEC_MATH)
def swiglu_rows(gu, blob, slot_of, offs, expert_of, I, limit, alpha, out, bits, use_q8, aq, ad):
    """gpt-oss's activation on every row, with the gate_up bias of the row's expert
    expert_of[row]: gate_up rows interleave gate g (even) and linear l (odd) outputs; with
    biases added, g is clamped above at limit, l to +-limit, and out = g sigmoid(alpha g) (l + 1).
    gu is overwritten (its first half holds exp(-alpha g)); bits: int32 rows as wide as out.
    With use_q8, each row of out is also quantized into aq, ad (the down matrix's input)."""
    for r in prange(gu.shape[0]):
        o = offs[EXP_GU_BIAS]
        bias = blob[slot_of[expert_of[r]], o:o + 8 * I].view(np.float32)
        e = gu[r]
        for j in range(I):  # ascending j: slot j is read (2j >= j) before it is written
            g = min(e[2 * j] + bias[2 * j], limit)
            l = min(max(e[2 * j + 1] + bias[2 * j + 1], -limit), limit)
            out[r, j] = g * (l + np.float32(1.0))
            e[j] = -alpha * g
        exp_inplace(e, bits[r], 0, I)
        for j in range(I):
            out[r, j] /= np.float32(1.0) + e[j]
        if use_q8:
            eo_q8_quantize(out[r].ctypes.data, I, aq[r].ctypes.data, ad[r].ctypes.data)


@njit(cache=True, nogil=True)
def _add_down_bias_row(y, e, blob, slot_of, offs):
    o = offs[EXP_DOWN_BIAS]
    bias = blob[slot_of[e], o:o + 4 * y.shape[0]].view(np.float32)
    for i in range(y.shape[0]):
        y[i] += bias[i]


@njit(parallel=True, cache=True, nogil=True)
def _add_down_bias(y, expert_of, blob, slot_of, offs):
    """y[r] += the down bias of row r's expert (a token's few rows on the calling thread)."""
    n = y.shape[0]
    if n <= 8:
        for r in range(n):
            _add_down_bias_row(y[r], expert_of[r], blob, slot_of, offs)
        return
    for r in prange(n):
        _add_down_bias_row(y[r], expert_of[r], blob, slot_of, offs)


@njit(cache=True, nogil=True)
def _combine_row(y, row_of, idx, wts, t, out):
    k = idx.shape[1]
    for s in range(k):
        r = row_of[t * k + s]
        w = wts[t, s]
        for i in range(out.shape[0]):
            out[i] += w * y[r, i]


@njit(parallel=True, cache=True, nogil=True)
def moe_combine(y, row_of, idx, wts, out):
    """out[t] += sum over t's experts s of wts[t, s] * y[row of (t, s)], in s order (so the sum
    is the same however the experts were computed)."""
    T = idx.shape[0]
    if T == 1:
        _combine_row(y, row_of, idx, wts, 0, out[0])
        return
    for t in prange(T):
        _combine_row(y, row_of, idx, wts, t, out[t])


@njit(cache=True, nogil=True)
def moe_route(h, idx, order, use_q8, xe, xq, xd, row_of, expert_of, start, gexp, nxt, hq, hd):
    """Sort the (token, expert) pairs of idx [T, k] into one group of rows per active expert,
    groups in the order experts appear in `order` (a permutation of all experts): group g is
    expert gexp[g], rows start[g]:start[g+1] of xe (a copy of h[t] per pair) or, when use_q8,
    of xq, xd (h[t] quantized once per token into hq, hd, then copied); row_of[t * k + s] is
    pair (t, s)'s row. Returns the group count."""
    T, k = idx.shape
    E = order.shape[0]
    if use_q8:
        _quantize_rows(h, hq[:T], hd[:T])
    nxt[:] = 0
    for t in range(T):
        for s in range(k):
            nxt[idx[t, s]] += 1
    ngroups = 0
    start[0] = 0
    for i in range(E):
        e = order[i]
        if nxt[e] > 0:
            gexp[ngroups] = e
            start[ngroups + 1] = start[ngroups] + nxt[e]
            nxt[e] = start[ngroups]  # from here on: the next free row of expert e's group
            ngroups += 1
    for t in range(T):
        for s in range(k):
            e = idx[t, s]
            r = nxt[e]
            nxt[e] += 1
            row_of[t * k + s] = r
            expert_of[r] = e
            if use_q8:
                xq[r] = hq[t]
                xd[r] = hd[t]
            else:
                xe[r] = h[t]
    return ngroups


@njit(cache=True, nogil=True)
def moe_experts(g0, g1, blob, slot_of, offs, H, I, use_q8, limit, alpha, xe, xq, xd, gu, act, aq, ad, y,
                expert_of, start, gexp, bits):
    """Groups g0:g1 of `moe_route` through their experts (gate_up, activation, down, down bias)
    into their rows of y. Expert e's bytes are row slot_of[e] of blob [slots, stride]; offs
    gives the six parts' offsets inside it. Each matrix of all the groups' experts runs in one
    parallel loop; every row's result is the same whichever groups are computed together."""
    if g1 <= g0:
        return
    r0, r1 = start[g0], start[g1]
    _experts_matmul(EXP_GU_BLOCKS, EXP_GU_SCALES, 2 * I, H // 32, use_q8, blob, slot_of, offs, gexp[g0:g1],
                    start[g0:g1 + 1], g1 - g0, xe, xq, xd, gu)
    swiglu_rows(gu[r0:r1], blob, slot_of, offs, expert_of[r0:r1], I, limit, alpha, act[r0:r1], bits[r0:r1],
                use_q8, aq[r0:r1], ad[r0:r1])
    _experts_matmul(EXP_DOWN_BLOCKS, EXP_DOWN_SCALES, H, I // 32, use_q8, blob, slot_of, offs, gexp[g0:g1],
                    start[g0:g1 + 1], g1 - g0, act, aq, ad, y)
    _add_down_bias(y[r0:r1], expert_of[r0:r1], blob, slot_of, offs)


@njit(cache=True, nogil=True)
def moe(h, idx, wts, blob, slot_of, offs, H, I, use_q8, limit, alpha, out,
        xe, xq, xd, gu, act, aq, ad, y, row_of, expert_of, start, gexp, nxt, bits, hq, hd):
    """out[T, H] += sum over each token's experts of weight * expert(h[t]), every expert in
    blob (see `moe_experts`); xe..bits are work buffers from `moe_scratch`.

    The (token, expert) pairs are sorted by expert, so each active expert's weights are
    streamed once per call however many tokens use it (a GEMM over its group of rows, not
    repeated GEMVs). The expert cache calls the three steps itself, computing the experts it
    holds while it reads the others."""
    ngroups = moe_route(h, idx, np.arange(slot_of.shape[0]), use_q8, xe, xq, xd, row_of, expert_of, start,
                        gexp, nxt, hq, hd)
    moe_experts(0, ngroups, blob, slot_of, offs, H, I, use_q8, limit, alpha, xe, xq, xd, gu, act, aq, ad, y,
                expert_of, start, gexp, bits)
    moe_combine(y, row_of, idx, wts, out)


# -- a layer's schedule ----------------------------------------------------------------------
# Each half of a transformer block is one call from Python, so that decoding a token crosses
# from Python into compiled code three times a layer rather than once per kernel.

@njit(cache=True, nogil=True)
def attention_block(x, h, hq, hd, qkv, q, k, v, attn, aq, ad, o,
                    norm, qkv_kind, qkv_qs, qkv_scales, qkv_bf16, qkv_bias, o_kind, o_qs, o_scales, o_bf16, o_bias,
                    sinks, eps, cos, sin, pos0, k_cache, v_cache, ring, window, scale, qt, acct, ml, lohi, sc, kb, vb):
    """x [T, H] += the attention block of tokens at positions pos0.. (their keys and values
    join the cache). h..o are the chunk's work arrays (see model.work_arrays), qt..vb
    `attention_scratch`; the weights are the layer's, matrices as `matmul` takes them."""
    T = x.shape[0]
    f32_rmsnorm(x, norm, eps, h)
    matmul(qkv_kind, qkv_qs, qkv_scales, qkv_bf16, h, hq, hd, qkv)
    qkv_split_rope(qkv, qkv_bias, cos, sin, pos0, q, k, v)
    kv_round_like_cache(k, v, k_cache)
    attention_sinks(q, k, v, k_cache, v_cache, pos0, ring, window, sinks, scale, attn,
                    qt, acct, ml, lohi, sc, kb, vb)
    kv_store(k, v, k_cache, v_cache, pos0, ring)
    matmul(o_kind, o_qs, o_scales, o_bf16, attn.reshape((T, attn.shape[1] * attn.shape[2])), aq, ad, o)
    add_bias_residual(o, o_bias, x)


@njit(cache=True, nogil=True)
def mlp_norm_route(x, norm, eps, h, router, router_bias, logits, use_router, idx, wts):
    """h = the MLP block's normed input; then, if use_router, each token's k experts idx and
    weights wts [T, k] from the router (bf16 bits [E, H] and its bias); else idx, wts stay as
    given (a routing trace)."""
    f32_rmsnorm(x, norm, eps, h)
    if use_router:
        f32_bf16w_matmul(router, h, logits)
        add_bias(logits, router_bias)
        route_topk(logits, idx.shape[1], idx, wts)


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
    if (top_k <= 0 or top_k >= n) and top_p >= 1.0:
        # plain temperature sampling needs no order: draw over the candidates by id, no sort
        # (with a flat distribution, random weights, the sort of ~200k candidates cost ~20 ms)
        tot = 0.0
        for j in range(n):
            tot += math.exp(logits[cand[j]] / temperature - mx)
        target, acc = u * tot, 0.0
        for j in range(n):
            acc += math.exp(logits[cand[j]] / temperature - mx)
            if acc > target:
                return cand[j]
        return cand[n - 1]
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
