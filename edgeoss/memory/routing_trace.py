"""Routing traces: recorded expert choices replayed by `edgeoss bench --routing-trace` and the
cache simulator (`edgeoss plan --simulate`).

Format (an .npz, as in ../shared/routing): for each sequence NNN, `seqNNN_experts` uint8
[tokens, layers, k] expert ids in router order and `seqNNN_weights` float16 [tokens, layers, k]
their routing weights.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import EdgeossError


class TraceError(EdgeossError):
    """A routing trace file that cannot be used."""


def load_trace(path) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(experts uint8 [tokens, layers, k], weights float32 [tokens, layers, k])] per sequence,
    in sequence order. A file that is not such a trace (not an .npz, a damaged member, pickled
    objects, ids outside 0-255 or repeated within a token, non-finite weights, ...) is a TraceError."""
    path = Path(path)
    if not path.is_file():
        raise TraceError(f"routing trace {path} does not exist")
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - numpy and zipfile raise many kinds on untrusted bytes
        raise TraceError(f"{path} is not a routing trace (.npz): {e}") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise TraceError(f"{path} is a single .npy array, not a routing trace (.npz of <name>_experts arrays)")
    with z:
        names = sorted({m.group(1) for k in z.files if (m := re.fullmatch(r"(.+)_experts", k))})
        if not names:
            raise TraceError(f"{path} holds no `<name>_experts` arrays: not a routing trace")
        out = [_sequence(path, z, n) for n in names]
    shapes = {ex.shape[1:] for ex, _ in out}
    if len(shapes) != 1:
        raise TraceError(f"{path}: sequences disagree on [layers, k]: {sorted(shapes)}")
    return out


def _member(path: Path, z, key: str) -> np.ndarray:
    try:
        return z[key]
    except Exception as e:  # noqa: BLE001 - a bad CRC, a truncated or inflated member, object arrays, ...
        raise TraceError(f"{path}: {key} cannot be read ({type(e).__name__}: {e}); the file is damaged") from None


def _sequence(path: Path, z, n: str) -> tuple[np.ndarray, np.ndarray]:
    ex = _member(path, z, n + "_experts")
    if ex.ndim != 3 or 0 in ex.shape:
        raise TraceError(f"{path}: {n}_experts must be [tokens, layers, k], none of them 0; got {ex.shape}")
    if ex.dtype.kind not in "iu":
        raise TraceError(f"{path}: {n}_experts holds {ex.dtype} values; expert ids are integers")
    if ex.min() < 0 or ex.max() > 255:
        raise TraceError(f"{path}: {n}_experts holds expert ids outside 0-255 ({ex.min()} to {ex.max()})")
    ex = ex.astype(np.uint8)
    s = np.sort(ex, axis=-1)
    if np.any(s[..., 1:] == s[..., :-1]):
        raise TraceError(f"{path}: {n}_experts routes a token to the same expert twice in one layer")
    if n + "_weights" in z.files:
        wt = _member(path, z, n + "_weights")
        if wt.shape != ex.shape or wt.dtype.kind not in "iuf":
            raise TraceError(f"{path}: {n}_weights must be numbers of the shape of {n}_experts {ex.shape}; "
                             f"got {wt.dtype} {wt.shape}")
        wt = wt.astype(np.float32)
        if not np.all(np.isfinite(wt)):
            raise TraceError(f"{path}: {n}_weights holds NaN or infinite values")
    else:
        wt = np.full(ex.shape, 1.0 / ex.shape[-1], np.float32)
    return ex, wt


def concatenated(trace) -> tuple[np.ndarray, np.ndarray]:
    """All sequences one after another: (experts, weights) [total tokens, layers, k]."""
    return np.concatenate([e for e, _ in trace]), np.concatenate([w for _, w in trace])
