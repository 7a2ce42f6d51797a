#!/usr/bin/env python3
"""Fuzz the safetensors header reader (edgeoss/format/safetensors.py) for a bounded time.

    python tools/fuzz_safetensors.py --seconds 60

Every input is written as a file and opened: it must open with every tensor inside the data
section, not overlapping another, and readable with its shape (get and read), or be refused with
a SafetensorsError; any other exception, or an input slower than --hang-seconds, is reported.
Coverage-guided with atheris when installed (tools/fuzzing.py). Exit status 1 if anything was found.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fuzzing  # noqa: E402

with fuzzing.instrumented():
    from edgeoss.format import safetensors as st  # noqa: E402

import numpy as np  # noqa: E402


def seeds(tmp: Path) -> list[bytes]:
    p = tmp / "seed.safetensors"
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    st.write_safetensors(p, [st.TensorSpec("w", "BF16", (2, 3), lambda i, j: np.ones((j - i, 3), np.uint16)),
                             st.TensorSpec("a", "F32", (3, 4), lambda i, j: a[i:j]),
                             st.TensorSpec("s", "I64", (), lambda i, j: np.array(7, np.int64)),
                             st.TensorSpec("z", "U8", (0,), lambda i, j: np.zeros(0, np.uint8))],
                         metadata={"format": "pt"})
    out = [p.read_bytes()]
    header = {"__metadata__": {"k": "v"}, "t": {"dtype": "F16", "shape": [2, 2], "data_offsets": [0, 8]}}
    raw = json.dumps(header).encode()
    out.append(struct.pack("<Q", len(raw)) + raw + bytes(8))
    for nasty in (b"[" * 3000, b'{"t": {"dtype": "U8", "shape": [' + b"9" * 5000 + b"]}}"):   # deep, huge
        out.append(struct.pack("<Q", len(nasty)) + nasty)
    return out


def main() -> int:
    args = fuzzing.parse_args(__doc__.split("\n\n")[0])
    tmp = Path(tempfile.mkdtemp(prefix="fuzz-st-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    path = tmp / "input.safetensors"

    def target(data: bytes) -> None:
        path.write_bytes(data)
        f = st.SafetensorsFile(path)
        size = len(data)
        spans = []
        for name, t in f.tensors.items():
            assert type(t.begin) is int and type(t.end) is int and 8 <= t.begin <= t.end <= size, t
            assert t.nbytes == int(np.prod(t.shape, dtype=object)) * st.DTYPES[t.dtype].itemsize, t
            spans.append((t.begin, t.end))
            assert f.get(name).shape == t.shape and f.read(name).shape == t.shape, t
        spans = sorted(s for s in spans if s[1] > s[0])
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), "overlapping tensors accepted"
        assert isinstance(f.metadata, dict) and all(isinstance(v, str) for v in f.metadata.values())
        del f

    return fuzzing.run("safetensors-header", target, (st.SafetensorsError,), seeds(tmp), args,
                       cleanup=lambda: shutil.rmtree(tmp, ignore_errors=True))


if __name__ == "__main__":
    sys.exit(main())
