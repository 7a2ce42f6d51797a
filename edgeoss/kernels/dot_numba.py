"""Numba fallback of the C kernels, with the same C ABI (``numba.cfunc``).

Used by ``edgeoss.kernels.dot`` when the C extension is missing or broken (or
EDGEOSS_KERNELS=numba): the address of each cfunc is registered under the C
symbol name, so jitted callers compile and run identically either way.

Semantics follow csrc/edgeoss.h: the quantization is bit-identical to the C
code; the matmuls give the same values up to float32 rounding and
accumulation order (they are written for Numba's vectorizer rather than as
per-block int32 sums, see int_matmul_impl).

Importing this module compiles (or loads from Numba's cache) every cfunc.
"""

from __future__ import annotations

import numpy as np
from numba import carray, cfunc, njit, types

_JIT = dict(cache=True, nogil=True, error_model="numpy", fastmath=False)

MXFP4_X2 = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], dtype=np.int32)
MXFP4_X2F = MXFP4_X2.astype(np.float32)          # doubled mxfp4 values
Q4_F = (np.arange(16) - 8).astype(np.float32)    # q4 nibble values

_f32p = types.CPointer(types.float32)
_i8p = types.CPointer(types.int8)
_u8p = types.CPointer(types.uint8)
_u16p = types.CPointer(types.uint16)
_i64 = types.int64

SIG_Q8_QUANTIZE = types.void(_f32p, _i64, _i8p, _f32p)
SIG_Q8_MXFP4W = types.void(_u8p, _u8p, _i64, _i64, _i8p, _f32p, _i64, _f32p, _i64)
SIG_Q8_Q8W = types.void(_i8p, _u16p, _i64, _i64, _i8p, _f32p, _i64, _f32p, _i64)
SIG_Q8_Q4W = types.void(_u8p, _u16p, _i64, _i64, _i8p, _f32p, _i64, _f32p, _i64)
SIG_F32_MXFP4W = types.void(_u8p, _u8p, _i64, _i64, _f32p, _i64, _f32p, _i64)
SIG_F32_BF16W = types.void(_u16p, _i64, _i64, _f32p, _i64, _f32p, _i64)
_i32p = types.CPointer(types.int32)
SIG_F32_ATTENTION = types.void(_f32p, _i64, _i64, _f32p, _f32p, _i64, _i64, _i32p, _i32p, _f32p, _f32p,
                               _f32p, _f32p)
SIG_F32_TO_F16 = types.void(_f32p, _u16p, _i64)
SIG_F16_TO_F32 = types.void(_u16p, _f32p, _i64)
SIG_F16_ROUND = types.void(_f32p, _i64)
SIG_Q8KV_TO_F32 = types.void(types.voidptr, _i64, _i64, _f32p)


# -- scalar helpers ---------------------------------------------------------------------

@njit(**_JIT)
def _f32_from_bits(bits):
    return np.uint32(bits).view(np.float32)


@njit(**_JIT)
def fp16_to_f32(h):
    """IEEE binary16 bits -> float32 (exact)."""
    h = np.uint32(h)
    sign = (h & np.uint32(0x8000)) << np.uint32(16)
    ex = (h >> np.uint32(10)) & np.uint32(0x1F)
    man = h & np.uint32(0x3FF)
    if ex == 0:  # zero / subnormal: man * 2^-24
        v = np.float32(man) * np.float32(5.9604644775390625e-8)
        return -v if sign else v
    if ex == 31:
        return _f32_from_bits(sign | np.uint32(0x7F800000) | (man << np.uint32(13)))
    return _f32_from_bits(sign | ((ex + np.uint32(112)) << np.uint32(23)) | (man << np.uint32(13)))



@njit(**_JIT)
def f32_to_fp16(f):
    """float32 -> IEEE binary16 bits, round to nearest even (as csrc/kv16.c)."""
    x = np.float32(f).view(np.uint32)
    sign = (x >> np.uint32(16)) & np.uint32(0x8000)
    ax = x & np.uint32(0x7FFFFFFF)
    if ax > np.uint32(0x7F800000):  # NaN
        return np.uint16(sign | np.uint32(0x7E00) | ((ax >> np.uint32(13)) & np.uint32(0x3FF)))
    if ax >= np.uint32(0x477FF000):  # rounds past 65504: inf
        return np.uint16(sign | np.uint32(0x7C00))
    if ax >= np.uint32(0x38800000):  # a normal half
        r = ax + np.uint32(0xFFF) + ((ax >> np.uint32(13)) & np.uint32(1))
        return np.uint16(sign | ((r - np.uint32(0x38000000)) >> np.uint32(13)))
    shift = 126 - np.int64(ax >> np.uint32(23))
    if shift > 24:
        return np.uint16(sign)
    m = np.int64((ax & np.uint32(0x7FFFFF)) | np.uint32(0x800000))
    q = m >> shift
    rem = m & ((1 << shift) - 1)
    half = 1 << (shift - 1)
    if rem > half or (rem == half and (q & 1)):
        q += 1
    return np.uint16(sign | np.uint32(q))

@njit(**_JIT)
def e8m0_half(e):
    """2 ** (e - 128) as float32 (exact; subnormal for e < 2)."""
    e = np.uint32(e)
    if e >= 2:
        return _f32_from_bits((e - np.uint32(1)) << np.uint32(23))
    return _f32_from_bits(np.uint32(0x00200000) << e)


@njit(**_JIT)
def bf16_to_f32(h):
    return np.uint32(np.uint32(h) << np.uint32(16)).view(np.float32)


# -- kernels on arrays ------------------------------------------------------------------

@njit(**_JIT)
def q8_quantize_impl(x, xq, xd):
    """x float32 [n], xq int8 [n], xd float32 [n/32] (bit-identical to C)."""
    nblk = x.shape[0] // 32
    lim = np.float32(127.0)
    for b in range(nblk):
        o = b * 32
        amax = np.float32(0.0)
        for i in range(32):
            a = abs(x[o + i])
            if a > amax:
                amax = a
        d = np.float32(amax / lim)
        inv = np.float32(0.0)
        if d > 0:
            inv = np.float32(np.float32(1.0) / d)
        for i in range(32):
            v = np.float32(x[o + i] * inv)
            if v != v:
                v = np.float32(0.0)
            if v > lim:
                v = lim
            if v < -lim:
                v = -lim
            xq[o + i] = np.int8(np.rint(v))
        xd[b] = d


# Dot products with reassociation allowed, so that LLVM vectorizes them (the
# order of a float32 sum is not part of the kernels' contract).
_JIT_REASSOC = dict(_JIT, fastmath={"reassoc"})


@njit(**_JIT_REASSOC)
def _dotf(a, ao, b, bo, n):
    """sum(a[ao:ao+n] * b[bo:bo+n]) in float32, any order."""
    s = np.float32(0.0)
    for i in range(n):
        # unsigned indices: no negative-index wraparound, so contiguous vector loads
        s += a[np.uint64(ao + i)] * b[np.uint64(bo + i)]
    return s


@njit(**_JIT)
def int_matmul_impl(kind, wq, ws, nrows, nb, xq, xd, ntok, out, out_stride):
    """kind 0 mxfp4 (wq uint8 [nrows*nb*16], ws uint8 e8m0), 1 q8 (wq int8
    [nrows*nb*32], ws uint16 fp16), 2 q4 (wq uint8 nibbles, ws uint16 fp16);
    xq int8 [ntok*nb*32], xd float32 [ntok*nb]; out float32 (flat, strided).

    Formulated for speed under Numba: weights are dequantized exactly to
    float32 (small ints times a power of two or an fp16), activations once
    per call to q * xd (one rounding), and each output is one long float32
    dot product that LLVM vectorizes.  Same values as the C code up to float32
    rounding and accumulation order."""
    K = nb * 32
    w = np.empty(K, dtype=np.float32)
    xs = np.empty(ntok * K, dtype=np.float32)
    for t in range(ntok):
        for b in range(nb):
            d = xd[t * nb + b]
            o = t * K + b * 32
            for i in range(32):
                xs[np.uint64(o + i)] = np.float32(xq[np.uint64(o + i)]) * d
    table = MXFP4_X2F if kind == 0 else Q4_F
    for r in range(nrows):
        for b in range(nb):
            g = r * nb + b
            if kind == 1:
                sc = fp16_to_f32(ws[g])
                for i in range(32):
                    w[np.uint64(b * 32 + i)] = np.float32(wq[np.uint64(g * 32 + i)]) * sc
            else:
                sc = e8m0_half(ws[g]) if kind == 0 else fp16_to_f32(ws[g])
                _decode_nibbles(wq, g * 16, table, sc, w, b * 32)
        for t in range(ntok):
            out[t * out_stride + r] = _dotf(w, 0, xs, t * K, K)


@njit(**_JIT)
def _decode_nibbles(wq, o, table, sc, w, wo):
    """16 bytes wq[o:o+16] -> w[wo:wo+32] = table[nibble] * sc (low nibbles first)."""
    for i in range(16):
        byte = wq[np.uint64(o + i)]
        w[np.uint64(wo + i)] = table[byte & np.uint8(15)] * sc
        w[np.uint64(wo + i + 16)] = table[byte >> np.uint8(4)] * sc


@njit(**_JIT)
def f32_mxfp4w_impl(wq, we, nrows, nb, x, ntok, out, out_stride):
    w = np.empty(nb * 32, dtype=np.float32)
    for r in range(nrows):
        for b in range(nb):
            g = r * nb + b
            _decode_nibbles(wq, g * 16, MXFP4_X2F, e8m0_half(we[g]), w, b * 32)
        for t in range(ntok):
            out[t * out_stride + r] = _dotf(w, 0, x, t * nb * 32, nb * 32)


@njit(**_JIT)
def f32_bf16w_impl(wb, nrows, k, x, ntok, out, out_stride):
    w = np.empty(k, dtype=np.float32)
    for r in range(nrows):
        for i in range(k):
            w[i] = bf16_to_f32(wb[r * k + i])
        for t in range(ntok):
            out[t * out_stride + r] = _dotf(w, 0, x, t * k, k)


@njit(**_JIT)
def attention_block_impl(qt, rows, hd, k, v, ks, nkeys, lo, hi, m, l, acct, sc):
    """One row at a time, as the C scalar level (csrc/attention.c)."""
    for r in range(rows):
        a, b = max(lo[r], 0), min(hi[r], nkeys)
        if a >= b:
            continue
        mx = m[r]
        for j in range(a, b):
            s = np.float32(0.0)
            for i in range(hd):
                s += qt[i * rows + r] * k[j * ks + i]
            sc[j] = s
            mx = max(mx, s)
        corr = np.float32(np.exp(m[r] - mx))
        tot = np.float32(0.0)
        for j in range(a, b):
            sc[j] = np.float32(np.exp(sc[j] - mx))
            tot += sc[j]
        l[r] = l[r] * corr + tot
        m[r] = mx
        for i in range(hd):
            c = acct[i * rows + r] * corr
            for j in range(a, b):
                c += sc[j] * v[j * ks + i]
            acct[i * rows + r] = c


# -- C-ABI entry points -----------------------------------------------------------------

@njit(**_JIT)
def _zero_out(out, nrows, ntok, out_stride):
    for t in range(ntok):
        for r in range(nrows):
            out[t * out_stride + r] = 0.0


@cfunc(SIG_Q8_QUANTIZE, cache=True, error_model="numpy")
def eo_q8_quantize(x_p, n, xq_p, xd_p):
    n = n - n % 32
    if n <= 0:
        return
    q8_quantize_impl(carray(x_p, (n,)), carray(xq_p, (n,)), carray(xd_p, (n // 32,)))


@cfunc(SIG_Q8_MXFP4W, cache=True, error_model="numpy")
def eo_q8_mxfp4w_matmul(wq_p, we_p, nrows, nb, xq_p, xd_p, ntok, out_p, out_stride):
    if nrows <= 0 or ntok <= 0:
        return
    out = carray(out_p, ((ntok - 1) * out_stride + nrows,))
    if nb <= 0:
        _zero_out(out, nrows, ntok, out_stride)
        return
    int_matmul_impl(0, carray(wq_p, (nrows * nb * 16,)), carray(we_p, (nrows * nb,)), nrows, nb,
                    carray(xq_p, (ntok * nb * 32,)), carray(xd_p, (ntok * nb,)), ntok, out, out_stride)


@cfunc(SIG_Q8_Q8W, cache=True, error_model="numpy")
def eo_q8_q8w_matmul(wq_p, wd_p, nrows, nb, xq_p, xd_p, ntok, out_p, out_stride):
    if nrows <= 0 or ntok <= 0:
        return
    out = carray(out_p, ((ntok - 1) * out_stride + nrows,))
    if nb <= 0:
        _zero_out(out, nrows, ntok, out_stride)
        return
    int_matmul_impl(1, carray(wq_p, (nrows * nb * 32,)), carray(wd_p, (nrows * nb,)), nrows, nb,
                    carray(xq_p, (ntok * nb * 32,)), carray(xd_p, (ntok * nb,)), ntok, out, out_stride)


@cfunc(SIG_Q8_Q4W, cache=True, error_model="numpy")
def eo_q8_q4w_matmul(wq_p, wd_p, nrows, nb, xq_p, xd_p, ntok, out_p, out_stride):
    if nrows <= 0 or ntok <= 0:
        return
    out = carray(out_p, ((ntok - 1) * out_stride + nrows,))
    if nb <= 0:
        _zero_out(out, nrows, ntok, out_stride)
        return
    int_matmul_impl(2, carray(wq_p, (nrows * nb * 16,)), carray(wd_p, (nrows * nb,)), nrows, nb,
                    carray(xq_p, (ntok * nb * 32,)), carray(xd_p, (ntok * nb,)), ntok, out, out_stride)


@cfunc(SIG_F32_MXFP4W, cache=True, error_model="numpy")
def eo_f32_mxfp4w_matmul(wq_p, we_p, nrows, nb, x_p, ntok, out_p, out_stride):
    if nrows <= 0 or ntok <= 0:
        return
    out = carray(out_p, ((ntok - 1) * out_stride + nrows,))
    if nb <= 0:
        _zero_out(out, nrows, ntok, out_stride)
        return
    f32_mxfp4w_impl(carray(wq_p, (nrows * nb * 16,)), carray(we_p, (nrows * nb,)), nrows, nb,
                    carray(x_p, (ntok * nb * 32,)), ntok, out, out_stride)


@cfunc(SIG_F32_BF16W, cache=True, error_model="numpy")
def eo_f32_bf16w_matmul(w_p, nrows, k, x_p, ntok, out_p, out_stride):
    if nrows <= 0 or ntok <= 0:
        return
    out = carray(out_p, ((ntok - 1) * out_stride + nrows,))
    if k <= 0:
        _zero_out(out, nrows, ntok, out_stride)
        return
    f32_bf16w_impl(carray(w_p, (nrows * k,)), nrows, k, carray(x_p, (ntok * k,)), ntok, out, out_stride)


@cfunc(SIG_F32_ATTENTION, cache=True, error_model="numpy")
def eo_f32_attention_block(qt_p, rows, hd, k_p, v_p, ks, nkeys, lo_p, hi_p, m_p, l_p, acct_p, sc_p):
    if rows <= 0 or nkeys <= 0:
        return
    kv_len = (nkeys - 1) * ks + hd
    attention_block_impl(carray(qt_p, (hd * rows,)), rows, hd, carray(k_p, (kv_len,)), carray(v_p, (kv_len,)),
                         ks, nkeys, carray(lo_p, (rows,)), carray(hi_p, (rows,)), carray(m_p, (rows,)),
                         carray(l_p, (rows,)), carray(acct_p, (hd * rows,)), carray(sc_p, (8 * nkeys,)))


@cfunc(SIG_F32_TO_F16, cache=True, error_model="numpy")
def eo_f32_to_f16(src_p, dst_p, n):
    if n <= 0:
        return
    src, dst = carray(src_p, (n,)), carray(dst_p, (n,))
    for i in range(n):
        dst[i] = f32_to_fp16(src[i])


@cfunc(SIG_F16_TO_F32, cache=True, error_model="numpy")
def eo_f16_to_f32(src_p, dst_p, n):
    if n <= 0:
        return
    src, dst = carray(src_p, (n,)), carray(dst_p, (n,))
    for i in range(n):
        dst[i] = fp16_to_f32(src[i])


@cfunc(SIG_F16_ROUND, cache=True, error_model="numpy")
def eo_f16_round(x_p, n):
    if n <= 0:
        return
    x = carray(x_p, (n,))
    for i in range(n):
        x[i] = fp16_to_f32(f32_to_fp16(x[i]))


@cfunc(SIG_Q8KV_TO_F32, cache=True, error_model="numpy")
def eo_q8kv_to_f32(src_p, nrows, hd, dst_p):
    if nrows <= 0:
        return
    nb = hd // 32
    row = hd + 4 * nb
    # the same bytes as int8 values and as float32 scales (a row is a multiple of 4 bytes)
    q = carray(src_p, (nrows * row,), np.int8)
    d = carray(src_p, (nrows * row // 4,), np.float32)
    dst = carray(dst_p, (nrows * hd,))
    for r in range(nrows):
        for j in range(hd):
            dst[r * hd + j] = np.float32(q[r * row + j]) * d[(r * row + hd) // 4 + j // 32]


#: C symbol name -> cfunc (keep referenced: the registered addresses live in them)
CFUNCS = {
    "eo_q8_quantize": eo_q8_quantize,
    "eo_q8_mxfp4w_matmul": eo_q8_mxfp4w_matmul,
    "eo_q8_q8w_matmul": eo_q8_q8w_matmul,
    "eo_q8_q4w_matmul": eo_q8_q4w_matmul,
    "eo_f32_mxfp4w_matmul": eo_f32_mxfp4w_matmul,
    "eo_f32_bf16w_matmul": eo_f32_bf16w_matmul,
    "eo_f32_attention_block": eo_f32_attention_block,
    "eo_f32_to_f16": eo_f32_to_f16,
    "eo_f16_to_f32": eo_f16_to_f32,
    "eo_f16_round": eo_f16_round,
    "eo_q8kv_to_f32": eo_q8kv_to_f32,
}
