#!/usr/bin/env python3
"""Fuzz the model manifest loader (edgeoss.json: edgeoss/format/model_dir.py) for a bounded time.

    python tools/fuzz_manifest.py --seconds 60

Converts a small synthetic model once, then writes every input as its edgeoss.json and opens the
directory with ModelFiles: it must load, with every tensor part inside weights.bin, or be refused
with a FormatError; any other exception, or an input slower than --hang-seconds, is reported.
Half the inputs are the manifest's bytes mutated (coverage-guided with atheris when installed,
tools/fuzzing.py); inputs that start with "S:" instead drive structured damage: one to three
fields anywhere in the parsed manifest deleted or replaced by junk values, chosen by the bytes.
Exit status 1 if anything was found.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fuzzing  # noqa: E402

with fuzzing.instrumented():
    from edgeoss.format import model_dir as fmt  # noqa: E402

JUNK = [None, True, False, 0, -1, 7, 1.5, float("inf"), float("nan"), "x", "", [], [1, "a"], {}, {"a": 1}, 1 << 70,
        2**64, -2**63, "../weights.bin", "/etc/passwd", "q8", "mxfp4_experts", [0, 0], [2**40, 2**40]]


def make_model(root: Path) -> Path:
    from edgeoss.convert import convert
    from edgeoss.convert.synthetic import make_checkpoint
    ck = make_checkpoint(root / "ck", preset="tiny", tokenizer_dir=None, progress=False, layers=2, experts=4,
                         experts_per_token=2, vocab=512, hidden=64, intermediate=64)
    model = convert(ck, root / "model", preset="q8", no_tokenizer=True, progress=False)
    shutil.rmtree(ck)
    return model


def _paths(x, prefix=()):
    yield prefix
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(x, list) and len(x) < 16:
        for i, v in enumerate(x):
            yield from _paths(v, prefix + (i,))


def damaged(pristine: dict, paths: list, data: bytes) -> bytes:
    rng = random.Random(data)
    m = json.loads(json.dumps(pristine))
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(paths)
        parent = m
        try:
            for k in path[:-1]:
                parent = parent[k]
            parent[path[-1]]
        except (KeyError, IndexError, TypeError):
            continue
        if not isinstance(parent, (dict, list)):
            continue
        if rng.random() < 0.3:
            del parent[path[-1]]
        else:
            parent[path[-1]] = rng.choice(JUNK)
    return json.dumps(m).encode()


def main() -> int:
    args = fuzzing.parse_args(__doc__.split("\n\n")[0])
    root = Path(tempfile.mkdtemp(prefix="fuzz-manifest-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    model = make_model(root)
    manifest = model / fmt.MANIFEST
    raw = manifest.read_bytes()
    pristine = json.loads(raw)
    paths = [p for p in _paths(pristine) if p]
    size = (model / fmt.WEIGHTS).stat().st_size

    def target(data: bytes) -> None:
        manifest.write_bytes(damaged(pristine, paths, data[2:]) if data.startswith(b"S:") else data)
        files = fmt.ModelFiles(model)
        for name, t in files.tensors.items():
            for part, p in t["parts"].items():
                if t["type"] == "mxfp4_experts":
                    assert 0 <= t["offset"] and t["offset"] + t["count"] * t["stride"] <= size, name
                    continue
                assert 0 <= p["offset"] and p["offset"] + p["nbytes"] <= size, (name, part)
                files.part(name, part)
        del files

    # nasty shapes a byte mutator rarely builds on its own: deep nesting, a huge number
    nasty = [b"[" * 3000, b'{"format": ' + b"9" * 5000 + b"}", b'{"format": "edgeoss", "a": ' + b"[" * 2000]
    seeds = [raw, json.dumps(pristine, separators=(",", ":")).encode()] + [b"S:%d" % i for i in range(16)] + nasty
    return fuzzing.run("manifest", target, (fmt.FormatError,), seeds, args,
                       cleanup=lambda: shutil.rmtree(root, ignore_errors=True))


if __name__ == "__main__":
    sys.exit(main())
