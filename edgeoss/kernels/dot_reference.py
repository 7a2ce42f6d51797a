"""Plain NumPy reference of every dot-product kernel (slow; for tests and checks).

Dequantize exactly to float64, multiply in float64.  Quantization follows the
contract of ``eo_q8_quantize`` in csrc/edgeoss.h bit for bit.

Layouts (see csrc/edgeoss.h): a block is 32 consecutive values along K;
4-bit weights store element i of a block in the low nibble of byte i and
element i + 16 in the high nibble.
"""

from __future__ import annotations

import numpy as np

#: float value of each mxfp4 code (sign = bit 3)
MXFP4_VALUES = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
                         -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0], dtype=np.float64)


# -- quantization ----------------------------------------------------------------------

def q8_quantize(x):
    """float32 [..., K] (K % 32 == 0) -> (xq int8 [..., K], xd float32 [..., K/32]).

    Per block: d = max|x| / 127 (float32); q = rint(x * (1/d)) in float32,
    ties to even; NaN products (0 * inf) -> 0; clamped to [-127, 127];
    d == 0 -> q = 0."""
    x = np.asarray(x, dtype=np.float32)
    if x.shape[-1] % 32:
        raise ValueError("last dimension must be a multiple of 32")
    xb = x.reshape(-1, 32)
    amax = np.max(np.abs(xb), axis=1) if xb.shape[0] else np.zeros(0, np.float32)
    d = (amax / np.float32(127.0)).astype(np.float32)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        inv = np.where(d > 0, np.float32(1.0) / np.where(d > 0, d, np.float32(1)), np.float32(0))
        inv = inv.astype(np.float32)
        v = (xb * inv[:, None]).astype(np.float32)
    v[np.isnan(v)] = 0
    v = np.clip(v, np.float32(-127), np.float32(127))
    q = np.rint(v).astype(np.int8)
    return q.reshape(x.shape), d.reshape(x.shape[:-1] + (x.shape[-1] // 32,))


def q8_dequantize(xq, xd):
    """(xq int8 [..., K], xd float32 [..., K/32]) -> float64 [..., K]."""
    xq = np.asarray(xq)
    v = xq.reshape(xq.shape[:-1] + (-1, 32)).astype(np.float64)
    v = v * np.asarray(xd, dtype=np.float64)[..., None]
    return v.reshape(xq.shape)


# -- weight dequantization ---------------------------------------------------------------

def _nibbles(wq):
    """uint8 [nrows, nb, 16] -> codes uint8 [nrows, nb, 32] in element order."""
    wq = np.asarray(wq, dtype=np.uint8)
    return np.concatenate([wq & 0x0F, wq >> 4], axis=-1)


def mxfp4_dequantize(wq, we):
    """wq uint8 [nrows, nb, 16], we uint8 [nrows, nb] -> float64 [nrows, nb*32]."""
    codes = _nibbles(wq)
    scale = np.ldexp(1.0, np.asarray(we, dtype=np.int64) - 127)
    v = MXFP4_VALUES[codes] * scale[..., None]
    return v.reshape(v.shape[0], -1)


def fp16_bits_to_float(h):
    return np.asarray(h, dtype=np.uint16).view(np.float16).astype(np.float64)


def q8w_dequantize(wq, wd):
    """wq int8 [nrows, nb, 32], wd uint16 fp16 bits [nrows, nb] -> float64 [nrows, nb*32]."""
    v = np.asarray(wq, dtype=np.int8).astype(np.float64) * fp16_bits_to_float(wd)[..., None]
    return v.reshape(v.shape[0], -1)


def q4w_dequantize(wq, wd):
    """wq uint8 [nrows, nb, 16] nibbles, wd uint16 fp16 bits -> float64 [nrows, nb*32]."""
    v = (_nibbles(wq).astype(np.float64) - 8.0) * fp16_bits_to_float(wd)[..., None]
    return v.reshape(v.shape[0], -1)


def bf16_to_float(w):
    """uint16 bf16 bits (any shape) -> float64."""
    w = np.asarray(w, dtype=np.uint16)
    return (w.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


# -- matmuls: out[t, r] = sum_k W[r, k] * X[t, k] (float64) ------------------------------

def _mm(w, x):
    x = np.atleast_2d(x)
    return x @ w.T


def matmul_q8_mxfp4w(wq, we, xq, xd):
    return _mm(mxfp4_dequantize(wq, we), q8_dequantize(xq, xd))


def matmul_q8_q8w(wq, wd, xq, xd):
    return _mm(q8w_dequantize(wq, wd), q8_dequantize(xq, xd))


def matmul_q8_q4w(wq, wd, xq, xd):
    return _mm(q4w_dequantize(wq, wd), q8_dequantize(xq, xd))


def matmul_f32_mxfp4w(wq, we, x):
    return _mm(mxfp4_dequantize(wq, we), np.asarray(x, dtype=np.float64))


def matmul_f32_bf16w(w, x):
    return _mm(bf16_to_float(w), np.asarray(x, dtype=np.float64))


def abs_products(w, x):
    """sum_k |W[r, k] * X[t, k]| as [ntok, nrows]: the scale of accumulation error."""
    return _mm(np.abs(w), np.abs(np.asarray(x, dtype=np.float64)))
