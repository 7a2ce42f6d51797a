"""Compiling the kernels on a first run without making the user wait for it.

Numba compiles kernels/loops.py on first use (~35 s on a 2-core laptop) and caches the result
on disk. On a first run, `current_loops()` starts a background process that compiles them
(`python -m edgeoss.engine.compile_kernels`: a tiny synthetic model through every path the engine
takes)
and, until it is done, hands the engine kernels/numpy_loops.py (the same functions in NumPy
around the same C kernels: nothing to compile). Once the process has finished, the engine
switches to the compiled loops between two chunks; later runs find them in the cache at once.

A marker file in Numba's cache folder, named after everything the compiled code depends on
(the kernel sources, Numba, Python, this CPU), says the cache is complete.

EDGEOSS_JIT=background (default) | wait (compile in this process on first use, as plain Numba
does: tests and benchmarks, which must measure the compiled loops) | numpy (never compile).
"""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import sys
import threading
from pathlib import Path

from ..kernels import loops

MODES = ("background", "wait", "numpy")


def mode() -> str:
    m = os.environ.get("EDGEOSS_JIT", "background").strip().lower() or "background"
    if m not in MODES:
        raise ValueError(f"EDGEOSS_JIT={m!r}: expected one of {', '.join(MODES)}")
    return m


@functools.lru_cache(maxsize=None)
def _fingerprint() -> str:
    import llvmlite.binding as llvm
    import numba

    h = hashlib.sha256()
    kernels = Path(loops.__file__).parent
    for f in sorted(kernels.glob("*.py")) + [Path(__file__).parents[1] / "memory" / "cache_policy.py"]:
        h.update(f.name.encode() + f.read_bytes())
    h.update(f"{numba.__version__} {sys.version} {llvm.get_host_cpu_name()} {llvm.get_host_cpu_features().flatten()}"
             .encode())
    return h.hexdigest()[:16]


def marker_path() -> Path:
    from numba.core.config import CACHE_DIR
    root = Path(CACHE_DIR or os.environ.get("NUMBA_CACHE_DIR") or Path.home() / ".cache" / "edgeoss" / "numba")
    return root / f"edgeoss-compiled-{_fingerprint()}"


class _State:
    lock = threading.Lock()
    compiled = False       # the marker was seen: use loops.py
    process = None         # the background compile, once started
    failed = False


def current_loops():
    """The loops module a forward pass should use now: kernels.loops when compiled (or when
    EDGEOSS_JIT=wait), kernels.numpy_loops while a first run's background compile goes on."""
    m = mode()
    if m == "numpy":
        return _numpy()
    if m == "wait" or _State.compiled:
        return loops
    if m == "background":
        with _State.lock:
            if not _State.failed and marker_path().exists():
                if _State.process is not None and not _State.compiled:
                    print("edgeoss: kernels compiled; switching to them", file=sys.stderr, flush=True)
                _State.compiled = True
                return loops
            if _State.process is None and not _State.failed:
                _start()
            elif _State.process is not None and _State.process.poll() is not None and not _State.failed:
                _State.failed = True  # it ended without marking the cache complete
                print(f"edgeoss: compiling the kernels in the background failed (exit "
                      f"{_State.process.returncode}; log: {_log_path()}); staying on the NumPy loops",
                      file=sys.stderr, flush=True)
    return _numpy()


def _numpy():
    from ..kernels import numpy_loops
    return numpy_loops


def _log_path() -> Path:
    return marker_path().with_suffix(".log")


def _start() -> None:
    log = _log_path()
    log.parent.mkdir(parents=True, exist_ok=True)
    print("edgeoss: compiling kernels in the background (first run only, about a minute); "
          "running on slower NumPy loops until then", file=sys.stderr, flush=True)
    env = dict(os.environ, EDGEOSS_JIT="wait")
    with open(log, "wb") as f:
        _State.process = subprocess.Popen([sys.executable, "-m", "edgeoss.engine.compile_kernels"], stdout=f,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)


def wait_compiled() -> None:
    """Block until the compiled loops are in use (a benchmark measures them, not the NumPy ones)."""
    import time
    while mode() == "background" and current_loops() is not loops and not _State.failed:
        time.sleep(0.2)
