"""NumPy quantizers and their inverses for the block formats of docs/FORMAT.md.

All formats quantize blocks of 32 consecutive values along a matrix row (the input dim).
"""

from __future__ import annotations

import numpy as np

BLOCK = 32

# e2m1 (MXFP4) magnitudes indexed by the code's low three bits; bit 3 is the sign
E2M1_MAGNITUDES = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0], dtype=np.float32)
E2M1_VALUES = np.concatenate([E2M1_MAGNITUDES, -E2M1_MAGNITUDES])  # index = 4-bit code


def _blocks(w: np.ndarray) -> np.ndarray:
    w = np.asarray(w, dtype=np.float32)
    if w.shape[-1] % BLOCK:
        raise ValueError(f"last dimension {w.shape[-1]} is not a multiple of {BLOCK}")
    return w.reshape(w.shape[:-1] + (w.shape[-1] // BLOCK, BLOCK))


# -- nibble order ----------------------------------------------------------------------
# Hugging Face MXFP4 packs elements 2j (low nibble) and 2j+1 (high) into byte j of a block.
# Our kernels want byte i to hold elements i (low) and i+16 (high): then the 16 low nibbles
# are the first half of the block and the 16 high nibbles the second, with no shuffling.

def unpack_pairs(packed: np.ndarray) -> np.ndarray:
    """[..., 16] bytes in HF order -> [..., 32] codes."""
    codes = np.empty(packed.shape[:-1] + (BLOCK,), dtype=np.uint8)
    codes[..., 0::2] = packed & 0x0F
    codes[..., 1::2] = packed >> 4
    return codes


def pack_halves(codes: np.ndarray) -> np.ndarray:
    """[..., 32] codes -> [..., 16] bytes in kernel order (element i low, i+16 high)."""
    return (codes[..., :16] | (codes[..., 16:] << 4)).astype(np.uint8)


def unpack_halves(packed: np.ndarray) -> np.ndarray:
    """[..., 16] bytes in kernel order -> [..., 32] codes."""
    return np.concatenate([packed & 0x0F, packed >> 4], axis=-1)


def hf_to_kernel_order(packed: np.ndarray) -> np.ndarray:
    return pack_halves(unpack_pairs(packed))


# -- MXFP4 -----------------------------------------------------------------------------

def e8m0_to_f32(e: np.ndarray) -> np.ndarray:
    return np.ldexp(np.float32(1.0), e.astype(np.int32) - 127).astype(np.float32)


def dequantize_mxfp4(packed_kernel_order: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """[..., nb, 16] + [..., nb] -> float32 [..., nb*32]."""
    vals = E2M1_VALUES[unpack_halves(packed_kernel_order)] * e8m0_to_f32(scales)[..., None]
    return vals.reshape(vals.shape[:-2] + (-1,))


def quantize_mxfp4(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float -> (blocks [..., nb, 16] in kernel order, e8m0 scales [..., nb]).

    The scale is the smallest power of two that brings the block's largest magnitude to at
    most 6 (the largest e2m1 value); each value then rounds to the nearest e2m1 value."""
    b = _blocks(w)
    amax = np.abs(b).max(axis=-1)
    with np.errstate(divide="ignore"):
        exp = np.ceil(np.log2(np.where(amax > 0, amax, 1.0) / 6.0))
    exp = np.clip(exp, -127, 127).astype(np.int32)
    scaled = b / np.ldexp(np.float32(1.0), exp)[..., None]
    # nearest magnitude: compare against the midpoints between consecutive e2m1 magnitudes
    mids = (E2M1_MAGNITUDES[1:] + E2M1_MAGNITUDES[:-1]) / 2
    mag = np.searchsorted(mids, np.abs(scaled), side="left").astype(np.uint8)
    codes = mag | (np.signbit(scaled) & (mag > 0)).astype(np.uint8) << 3
    return pack_halves(codes), (exp + 127).astype(np.uint8)


# -- q8: int8 values, fp16 scale ------------------------------------------------------

def quantize_q8(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float -> (int8 [..., nb, 32], float16 scales [..., nb]); scale = max|w| / 127."""
    b = _blocks(w)
    d = (np.abs(b).max(axis=-1) / 127.0).astype(np.float16)
    df = d.astype(np.float32)
    inv = np.divide(1.0, df, out=np.zeros_like(df), where=df > 0)
    q = np.clip(np.rint(b * inv[..., None]), -127, 127).astype(np.int8)
    return q, d


def dequantize_q8(q: np.ndarray, d: np.ndarray) -> np.ndarray:
    v = q.astype(np.float32) * d.astype(np.float32)[..., None]
    return v.reshape(v.shape[:-2] + (-1,))


# -- q4: 4-bit values (nibble - 8), fp16 scale ------------------------------------------

def quantize_q4(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float -> (nibbles [..., nb, 16] in kernel order, float16 scales [..., nb]).

    The value of largest magnitude maps to -8 exactly (the one level the positive side
    lacks), so both signs use the full range: scale = that value / -8."""
    b = _blocks(w)
    idx = np.abs(b).argmax(axis=-1)
    extreme = np.take_along_axis(b, idx[..., None], axis=-1)[..., 0]
    d = (extreme / -8.0).astype(np.float16)
    df = d.astype(np.float32)
    inv = np.divide(1.0, df, out=np.zeros_like(df), where=df != 0)
    q = np.clip(np.rint(b * inv[..., None]) + 8, 0, 15).astype(np.uint8)
    return pack_halves(q), d


def dequantize_q4(packed: np.ndarray, d: np.ndarray) -> np.ndarray:
    v = (unpack_halves(packed).astype(np.float32) - 8) * d.astype(np.float32)[..., None]
    return v.reshape(v.shape[:-2] + (-1,))


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
