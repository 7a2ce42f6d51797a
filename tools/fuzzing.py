"""A bounded fuzzing run shared by tools/fuzz_safetensors.py and tools/fuzz_manifest.py.

Coverage-guided with atheris (libFuzzer; `pip install atheris`) when it is installed, else a
plain mutational loop over the seeds (byte flips, insertions, deletions, splices, interesting
values). Either way it stops after --seconds and prints what it tried and found:

    target safetensors-header: 52,113 inputs in 60.0 s (atheris), 0 crashes, 0 hangs

A crash is any exception the target was not allowed to raise (its user-error type), including a
failed assertion of the target's own property checks; a hang is an input that took longer than
--hang-seconds of CPU time (interrupted by SIGVTALRM; a hang in C code that never returns to Python
is left to libFuzzer's -timeout, on SIGALRM, which ends the run and saves the input). The first input of each distinct
crash (type and place) is written to --out, so it can be replayed: `--replay FILE`.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable, Iterable


class Hang(Exception):
    pass


def parse_args(description: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--seconds", type=float, default=60, help="how long to fuzz (default 60)")
    p.add_argument("--hang-seconds", type=float, default=5, help="an input slower than this is a hang (default 5)")
    p.add_argument("--out", default=None, help="folder for crashing inputs (default: a temporary folder)")
    p.add_argument("--seed", type=int, default=0, help="random seed (the loop without atheris; libFuzzer's -seed)")
    p.add_argument("--no-atheris", action="store_true", help="use the plain mutational loop even if atheris is here")
    p.add_argument("--replay", nargs="*", default=None, metavar="FILE", help="run the target on these inputs and stop")
    return p.parse_args()


def _mutate(rng: random.Random, data: bytes, seeds: list[bytes]) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        pos = rng.randrange(len(b) + 1)
        if op == 0 and b:
            b[min(pos, len(b) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[min(pos, len(b) - 1)] = rng.randrange(256)
        elif op == 2:
            b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 3 and b:
            del b[pos:pos + rng.randint(1, 16)]
        elif op == 4:
            other = rng.choice(seeds)
            a = rng.randrange(len(other) + 1)
            b[pos:pos] = other[a:a + rng.randint(1, 64)]
        elif op == 5:
            b[pos:pos] = rng.choice([b"0", b"-1", b"1e999", b"null", b"[]", b"{}", b'""', b"true", b"[[[[",
                                     b"18446744073709551615", b"9" * 30, b"\\ud800", b"NaN", b"\xff", b"\x00"])
        elif op == 6:
            del b[pos:]
    return bytes(b)


def run(name: str, target: Callable[[bytes], None], allowed: tuple, seeds: Iterable[bytes],
        args: argparse.Namespace, cleanup: Callable[[], None] | None = None) -> int:
    """Fuzz `target` (bytes -> None, raising only `allowed`); print the figures; exit status 1
    when anything crashed or hung. `cleanup` runs at the end (libFuzzer never returns)."""
    seeds = [bytes(s) for s in seeds] or [b""]
    out = Path(args.out or tempfile.mkdtemp(prefix=f"fuzz-{name}-"))
    out.mkdir(parents=True, exist_ok=True)
    stats = {"tried": 0, "refused": 0, "crashes": {}, "hangs": 0}
    t0 = time.monotonic()

    def on_alarm(signum, frame):
        raise Hang()

    signal.signal(signal.SIGVTALRM, on_alarm)

    def one(data: bytes) -> None:
        stats["tried"] += 1
        signal.setitimer(signal.ITIMER_VIRTUAL, args.hang_seconds)
        try:
            target(data)
        except allowed:
            stats["refused"] += 1
        except Hang:
            stats["hangs"] += 1
            (out / f"hang-{stats['hangs']}").write_bytes(data)
        except Exception as e:  # noqa: BLE001 - that is what we are looking for
            tb = traceback.extract_tb(e.__traceback__)[-1]
            key = f"{type(e).__name__} at {Path(tb.filename).name}:{tb.lineno}"
            if key not in stats["crashes"]:
                path = out / f"crash-{len(stats['crashes']) + 1}"
                path.write_bytes(data)
                stats["crashes"][key] = (path, f"{type(e).__name__}: {str(e)[:200]}")
        finally:
            signal.setitimer(signal.ITIMER_VIRTUAL, 0)

    def report(engine: str) -> int:
        if cleanup is not None:
            cleanup()
        took = time.monotonic() - t0
        crashes, hangs = stats["crashes"], stats["hangs"]
        print(f"target {name}: {stats['tried']:,} inputs in {took:.1f} s ({engine}), {stats['refused']:,} refused "
              f"with the expected error, {len(crashes)} distinct crashes, {hangs} hangs", flush=True)
        for key, (path, msg) in crashes.items():
            print(f"  crash {key}: {msg}\n    input: {path}", flush=True)
        if hangs:
            print(f"  hangs saved in {out}", flush=True)
        if not args.out and not any(out.iterdir()):
            out.rmdir()   # nothing found: no empty temporary folder left behind
        return 1 if crashes or hangs else 0

    if args.replay is not None:
        for f in args.replay:
            one(Path(f).read_bytes())
        return report("replay")

    try:
        import atheris
    except ImportError:
        atheris = None
    if atheris is None or args.no_atheris:
        rng = random.Random(args.seed)
        for s in seeds:
            one(s)
        while time.monotonic() - t0 < args.seconds:
            one(_mutate(rng, rng.choice(seeds), seeds))
        return report("mutational loop, no atheris" if atheris is None else "mutational loop")

    corpus = Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-corpus-"))
    for i, s in enumerate(seeds):
        (corpus / f"seed-{i}").write_bytes(s)

    def test_one_input(data: bytes) -> None:
        if time.monotonic() - t0 >= args.seconds:
            sys.stdout.flush()
            status = report("atheris, coverage-guided")
            shutil.rmtree(corpus, ignore_errors=True)
            os._exit(status)
        one(data)

    atheris.Setup([sys.argv[0], f"-max_total_time={int(args.seconds) + 60}", f"-timeout={int(args.hang_seconds * 4) + 1}",
                   f"-seed={args.seed + 1}", "-rss_limit_mb=4096", "-print_final_stats=0", "-max_len=65536",
                   str(corpus)], test_one_input)
    atheris.Fuzz()
    return report("atheris")   # not reached: libFuzzer exits


def instrumented():
    """A context in which imported modules get atheris's coverage instrumentation (a no-op
    without atheris)."""
    try:
        import atheris
        return atheris.instrument_imports()
    except ImportError:
        import contextlib
        return contextlib.nullcontext()
