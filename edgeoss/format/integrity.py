"""Checksums of a model's tensors (docs/FORMAT.md, "Checksums"): which bytes each one covers,
computing them from the bytes as the converter writes them, and checking a model against them.

A checksum covers one *span* of weights.bin: each part of a plain tensor (`offset`, `nbytes`), and
each expert of an `mxfp4_experts` tensor (`expert_bytes` bytes from `offset + e * stride`, the zero
padding between its parts included). The value is `"xxh3_64:<16 hex digits>"`: XXH3-64 (seed 0)
of the span, as xxhash's hexdigest writes it. Everything outside the spans is zero padding, which
`verify` checks too. XXH3 hashes ~14 GB/s on one core here against ~1.3 GB/s from disk (zlib's
crc32: 3.7 GB/s), so checking costs about what reading costs.
"""

from __future__ import annotations

import bisect
import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import xxhash

from .model_dir import FormatError, ModelFiles

ALGORITHM = "xxh3_64"
READ_CHUNK = 64 << 20          # verify reads weights.bin sequentially in pieces of this size
_ZEROS = bytes(1 << 20)


class NoChecksums(FormatError):
    """A model converted before checksums were recorded."""


@dataclass(frozen=True)
class Span:
    """One checksummed byte range of weights.bin: a part of a tensor, or one expert."""
    start: int
    end: int
    tensor: str
    part: str | None = None
    expert: int | None = None

    @property
    def label(self) -> str:
        return f"{self.tensor} (expert {self.expert})" if self.expert is not None else \
            f"{self.tensor} (part {self.part})"


def spans(tensors: dict) -> list[Span]:
    """Every checksummed range of a (validated) manifest's tensors, in file order."""
    out = []
    for name, t in tensors.items():
        if t["type"] == "mxfp4_experts":
            for e in range(t["count"]):
                a = t["offset"] + e * t["stride"]
                out.append(Span(a, a + t["expert_bytes"], name, expert=e))
        else:
            for part, p in t["parts"].items():
                out.append(Span(p["offset"], p["offset"] + p["nbytes"], name, part=part))
    out.sort(key=lambda s: s.start)
    return out


def recorded(tensors: dict, span: Span) -> str | None:
    """The checksum the manifest records for a span, or None."""
    t = tensors[span.tensor]
    if span.expert is not None:
        sums = t.get("checksums")
        return sums[span.expert] if sums else None
    return t["parts"][span.part].get("checksum")


def record(tensors: dict, span: Span, value: str) -> None:
    t = tensors[span.tensor]
    if span.expert is not None:
        t.setdefault("checksums", [None] * t["count"])[span.expert] = value
    else:
        t["parts"][span.part]["checksum"] = value


class SpanHasher:
    """Hashes the spans from bytes fed at their file offsets, each span's bytes in ascending order.

    The converter feeds what it writes (a span's unwritten gaps are zeros in the new file, and are
    hashed as such); verify feeds the whole file in large pieces. Bytes fed outside every span are
    padding: the ranges that are not all zero are kept in `nonzero_padding`."""

    def __init__(self, span_list: list[Span]):
        self.spans = span_list
        self.starts = [s.start for s in span_list]
        self.pos = list(self.starts)
        self.states = [xxhash.xxh3_64() for _ in span_list]
        self.nonzero_padding: list[tuple[int, int]] = []

    def _zeros(self, i: int, upto: int) -> None:
        while self.pos[i] < upto:
            n = min(len(_ZEROS), upto - self.pos[i])
            self.states[i].update(_ZEROS[:n])
            self.pos[i] += n

    def feed(self, offset: int, data) -> None:
        data = memoryview(data).cast("B")
        end = offset + len(data)
        at = offset
        i = bisect.bisect_right(self.starts, at) - 1
        while at < end:
            if i >= 0 and at < self.spans[i].end:
                stop = min(end, self.spans[i].end)
                if at < self.pos[i]:
                    raise RuntimeError(f"bytes {at}-{stop} of {self.spans[i].label} were hashed already "
                                       "(writes must go in ascending order within a span)")
                self._zeros(i, at)
                self.states[i].update(data[at - offset:stop - offset])
                self.pos[i] = stop
                at = stop
            else:
                stop = min(end, self.starts[i + 1]) if i + 1 < len(self.spans) else end
                if stop > at and np.frombuffer(data[at - offset:stop - offset], np.uint8).any():
                    self.nonzero_padding.append((at, stop))
                at = stop
                i += 1

    def digests(self) -> list[str]:
        """`"xxh3_64:<hex>"` of every span, bytes never fed counted as zeros."""
        for i, s in enumerate(self.spans):
            self._zeros(i, s.end)
        return [f"{ALGORITHM}:{h.hexdigest()}" for h in self.states]


@dataclass
class Report:
    checked: int = 0                                        # spans whose checksum was compared
    mismatched: list[str] = field(default_factory=list)     # labels: "layers.3.qkv (part qs)", ...
    unrecorded: list[str] = field(default_factory=list)     # spans with no checksum (manifest edited)
    bytes_read: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.mismatched and not self.unrecorded


class Verifier:
    """Checks a model directory: the manifest (validated on opening), every tensor's checksum, the
    zero padding between tensors, and the bundled vocabulary's sha256."""

    def __init__(self, path: str | os.PathLike):
        files = ModelFiles(path)   # FormatError naming the field if the manifest is wrong
        self.path = files.path
        self.weights_path = files.weights_path
        self.tensors = files.tensors
        self.vocab = (files.vocab_path, files.manifest["tokenizer"]["sha256"]) if files.vocab_path else None
        self.total_bytes = files.manifest["weights_bytes"]
        del files
        self.spans = spans(self.tensors)
        self.expected = [recorded(self.tensors, s) for s in self.spans]
        if not any(self.expected):
            raise NoChecksums(f"{self.path}: no checksums recorded (converted by an older edgeoss): reconvert "
                              "to get them")
        for s, want in zip(self.spans, self.expected):
            if want is not None and not want.startswith(ALGORITHM + ":"):
                raise FormatError(f"{self.path}: the checksum of {s.label} is {want.split(':')[0]}, which this "
                                  f"edgeoss cannot check (it knows {ALGORITHM}): update edgeoss")

    def run(self, progress: Callable[[int], None] | None = None, chunk: int = READ_CHUNK) -> Report:
        """Read weights.bin once, front to back, in `chunk`-byte reads; progress(n) after each."""
        t0 = time.perf_counter()
        rep = Report()
        hasher = SpanHasher(self.spans)
        buf = np.empty(min(chunk, max(self.total_bytes, 1)), np.uint8)
        view = memoryview(buf)
        with open(self.weights_path, "rb", buffering=0) as f:
            advise = getattr(os, "posix_fadvise", None)
            if advise:
                advise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
            off = 0
            while off < self.total_bytes:
                n = min(len(buf), self.total_bytes - off)
                if advise:   # the kernel reads the next piece while this one is hashed
                    advise(f.fileno(), off + n, len(buf), os.POSIX_FADV_WILLNEED)
                got = 0
                while got < n:
                    r = f.readinto(view[got:n])
                    if not r:
                        raise FormatError(f"{self.weights_path} ended at {off + got} bytes while being read; "
                                          "the model is damaged: reconvert it")
                    got += r
                hasher.feed(off, view[:n])
                off += n
                rep.bytes_read = off
                if progress is not None:
                    progress(n)
        for s, want, got in zip(self.spans, self.expected, hasher.digests()):
            if want is None:
                rep.unrecorded.append(s.label)
            else:
                rep.checked += 1
                if want != got:
                    rep.mismatched.append(s.label)
        merged: list[list[int]] = []
        for a, b in hasher.nonzero_padding:   # one gap may arrive in two reads
            if merged and merged[-1][1] == a:
                merged[-1][1] = b
            else:
                merged.append([a, b])
        for a, b in merged:
            i = bisect.bisect_right(hasher.starts, a) - 1
            after = f" after {self.spans[i].label}" if i >= 0 else ""
            rep.mismatched.append(f"padding at bytes {a}-{b}{after} (should be zeros)")
        if self.vocab is not None:
            vpath, digest = self.vocab
            rep.checked += 1
            if hashlib.sha256(Path(vpath).read_bytes()).hexdigest() != digest:
                rep.mismatched.append(f"{Path(vpath).name} (vocabulary: sha256 differs)")
        rep.seconds = time.perf_counter() - t0
        return rep


def verify_model(path: str | os.PathLike, progress: Callable[[int], None] | None = None) -> Report:
    """Check every checksum of the model at `path`; `report.mismatched` names what differs.
    FormatError if the manifest is invalid, NoChecksums if it records none."""
    return Verifier(path).run(progress)
