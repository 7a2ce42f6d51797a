"""Reading and streaming-writing safetensors files without loading them into memory.

The format: an 8-byte little-endian header length N, N bytes of JSON
({name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}),
then the data section; offsets are relative to its start.

We parse it ourselves rather than through the `safetensors` package because we need
bf16 (which NumPy lacks: we hand it out as raw uint16 bits), memory-mapped views of
single tensors, validation with messages that name the file and tensor, and a writer
that streams tensors chunk by chunk so a 13 GB checkpoint never sits in memory.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..errors import EdgeossError

# safetensors dtype name -> (numpy dtype used to hold the raw bytes, bytes per element)
DTYPES: dict[str, np.dtype] = {
    "BF16": np.dtype("<u2"),  # raw bfloat16 bits
    "F16": np.dtype("<f2"),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "U8": np.dtype("u1"),
    "I8": np.dtype("i1"),
    "I16": np.dtype("<i2"),
    "I32": np.dtype("<i4"),
    "I64": np.dtype("<i8"),
    "U16": np.dtype("<u2"),
    "U32": np.dtype("<u4"),
    "BOOL": np.dtype("u1"),
}

MAX_HEADER_BYTES = 100 * 1024 * 1024


class SafetensorsError(EdgeossError):
    """A safetensors file that cannot be read; the message names the file and what is wrong."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str  # safetensors dtype name, e.g. "BF16"
    shape: tuple[int, ...]
    begin: int  # absolute byte offset in the file
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


class SafetensorsFile:
    """One safetensors file, memory-mapped; tensors are read as zero-copy NumPy views."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            size = self.path.stat().st_size
        except OSError as e:
            raise SafetensorsError(f"{self.path}: cannot open ({e.strerror})") from None
        if size < 8:
            raise SafetensorsError(f"{self.path}: only {size} bytes, not a safetensors file")
        with open(self.path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > MAX_HEADER_BYTES or 8 + n > size:
                raise SafetensorsError(
                    f"{self.path}: header length {n} does not fit in a {size}-byte file; "
                    "the file is truncated or not safetensors")
            raw = f.read(n)
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            # ValueError: bad JSON, or an integer of more digits than Python converts;
            # RecursionError: arrays nested deeper than the JSON decoder's recursion allows
            raise SafetensorsError(f"{self.path}: header is not valid JSON; the file is corrupt "
                                   "or not safetensors") from None
        if not isinstance(header, dict):
            raise SafetensorsError(f"{self.path}: header is not a JSON object")
        metadata = header.pop("__metadata__", None) or {}
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise SafetensorsError(f"{self.path}: __metadata__ is not a JSON object of strings")
        self.metadata: dict[str, str] = metadata
        data_start = 8 + n
        self.tensors: dict[str, TensorInfo] = {}
        for name, meta in header.items():
            self.tensors[name] = self._entry(name, meta, data_start, size)
        spans = sorted((t.begin, t.end, t.name) for t in self.tensors.values() if t.end > t.begin)
        for (_, end, a), (begin, _, b) in zip(spans, spans[1:]):
            if begin < end:
                raise SafetensorsError(f"{self.path}: tensors {a!r} and {b!r} overlap; the file is corrupt")
        self._mm: np.memmap | None = None

    def _entry(self, name: str, meta, data_start: int, size: int) -> TensorInfo:
        """One header entry, checked: a known dtype, a shape of non-negative integers whose bytes
        are exactly its data_offsets [begin, end], inside the file."""
        def ints(v, count=None) -> bool:
            return isinstance(v, list) and (count is None or len(v) == count) and \
                all(type(x) is int and x >= 0 for x in v)

        if not isinstance(meta, dict) or not isinstance(meta.get("dtype"), str) or \
                not ints(meta.get("shape")) or not ints(meta.get("data_offsets"), 2):
            raise SafetensorsError(f"{self.path}: malformed header entry for {name!r} (it needs a dtype name, "
                                   "a shape of non-negative integers and data_offsets [begin, end])")
        dtype, shape, (b, e) = meta["dtype"], tuple(meta["shape"]), meta["data_offsets"]
        if dtype not in DTYPES:
            raise SafetensorsError(f"{self.path}: tensor {name!r} has unsupported dtype {dtype}")
        want = DTYPES[dtype].itemsize
        for dim in shape:  # Python integers: a huge shape cannot wrap around to a small size
            want *= dim
        if e - b != want:
            raise SafetensorsError(f"{self.path}: tensor {name!r} claims {e - b} bytes but "
                                   f"{dtype}{list(shape)} needs {want}")
        if data_start + e > size:
            raise SafetensorsError(
                f"{self.path}: tensor {name!r} ends at byte {data_start + e} but the file has "
                f"{size} bytes; the file is truncated (re-download it)")
        return TensorInfo(name, dtype, shape, data_start + b, data_start + e)

    def _map(self) -> np.memmap:
        if self._mm is None:
            self._mm = np.memmap(self.path, dtype=np.uint8, mode="r")
        return self._mm

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def get(self, name: str) -> np.ndarray:
        """A read-only memory-mapped view of one tensor (bf16 as uint16 bits)."""
        t = self.tensors[name]
        raw = self._map()[t.begin:t.end]
        return raw.view(DTYPES[t.dtype]).reshape(t.shape)

    def read(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows [start, stop) of the first axis, read into a fresh array with pread.

        Unlike `get`, this leaves no mapped pages behind, so streaming a 13 GB checkpoint
        through it keeps the process's resident memory at one chunk."""
        t = self.tensors[name]
        rows = t.shape[0] if t.shape else 1
        stop = rows if stop is None else stop
        row_bytes = t.nbytes // max(rows, 1) if t.shape else t.nbytes
        out = np.empty((stop - start,) + t.shape[1:] if t.shape else (), dtype=DTYPES[t.dtype])
        view = memoryview(out.reshape(-1).view(np.uint8))
        want, pos = view.nbytes, t.begin + start * row_bytes
        try:
            with open(self.path, "rb", buffering=0) as f:
                got = 0
                while got < want:
                    n = os.preadv(f.fileno(), [view[got:]], pos + got) if hasattr(os, "preadv") else None
                    if n is None:
                        f.seek(pos + got)
                        n = f.readinto(view[got:])
                    if not n:
                        raise SafetensorsError(f"{self.path}: unexpected end of file reading {name!r}; the file "
                                               "was truncated after it was opened")
                    got += n
        except OSError as e:  # the file vanished, or the disk failed, after the header was read
            raise SafetensorsError(f"{self.path}: cannot read {name!r} ({e.strerror or e}); the file was removed "
                                   "or changed while being read") from None
        return out


# ---------------------------------------------------------------------------------------
# Streaming writer


@dataclass
class TensorSpec:
    """A tensor to write: its bytes come from `fill(start, stop)`, which returns the rows
    [start, stop) of the first axis as an array of the right dtype (bf16 as uint16)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    fill: Callable[[int, int], np.ndarray]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * DTYPES[self.dtype].itemsize


def write_safetensors(path: str | os.PathLike, specs: Iterable[TensorSpec],
                      metadata: dict[str, str] | None = None, chunk_bytes: int = 64 << 20,
                      progress: Callable[[int], None] | None = None) -> None:
    """Write tensors one chunk of rows at a time, so memory stays bounded by `chunk_bytes`."""
    specs = list(specs)
    header: dict = {}
    if metadata:
        header["__metadata__"] = metadata
    offset = 0
    for s in specs:
        header[s.name] = {"dtype": s.dtype, "shape": list(s.shape), "data_offsets": [offset, offset + s.nbytes]}
        offset += s.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-(8 + len(raw)) % 8)  # keep the data section 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for s in specs:
            rows = s.shape[0] if s.shape else 1
            row_bytes = max(1, s.nbytes // max(rows, 1))
            step = max(1, chunk_bytes // row_bytes)
            for start in range(0, rows, step):
                stop = min(rows, start + step)
                block = np.ascontiguousarray(s.fill(start, stop), dtype=DTYPES[s.dtype])
                expect = (stop - start) * row_bytes if s.shape else s.nbytes
                if block.nbytes != expect:
                    raise ValueError(f"{s.name}: fill({start}, {stop}) gave {block.nbytes} bytes, expected {expect}")
                f.write(block.tobytes())
                if progress:
                    progress(block.nbytes)


def f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits with round-to-nearest-even (NaN stays NaN)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(x), np.uint16(0x7FC0), rounded)


def bf16_bits_to_f32(b: np.ndarray) -> np.ndarray:
    return (np.asarray(b, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
