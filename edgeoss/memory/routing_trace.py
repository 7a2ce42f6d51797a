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
    in sequence order."""
    path = Path(path)
    if not path.is_file():
        raise TraceError(f"routing trace {path} does not exist")
    try:
        z = np.load(path)
    except Exception as e:
        raise TraceError(f"{path} is not a routing trace (.npz): {e}") from None
    names = sorted({m.group(1) for k in z.files if (m := re.fullmatch(r"(.+)_experts", k))})
    if not names:
        raise TraceError(f"{path} holds no `<name>_experts` arrays: not a routing trace")
    out = []
    for n in names:
        ex = z[n + "_experts"]
        wt = z[n + "_weights"] if n + "_weights" in z.files else np.full(ex.shape, 1.0 / ex.shape[-1])
        if ex.ndim != 3 or wt.shape != ex.shape:
            raise TraceError(f"{path}: {n}_experts must be [tokens, layers, k] with weights of the same shape; "
                             f"got {ex.shape} and {wt.shape}")
        out.append((ex, wt.astype(np.float32)))
    shapes = {ex.shape[1:] for ex, _ in out}
    if len(shapes) != 1:
        raise TraceError(f"{path}: sequences disagree on [layers, k]: {sorted(shapes)}")
    return out


def concatenated(trace) -> tuple[np.ndarray, np.ndarray]:
    """All sequences one after another: (experts, weights) [total tokens, layers, k]."""
    return np.concatenate([e for e, _ in trace]), np.concatenate([w for _, w in trace])
