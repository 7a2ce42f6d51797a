"""cffi builder of the C kernels: ``edgeoss._ckernels`` (API mode, out of line).

Used by setup.py (``cffi_modules=["edgeoss/kernels/_build.py:ffibuilder"]``)
and runnable directly for development: ``python edgeoss/kernels/_build.py``
builds the extension in place (next to the ``edgeoss`` package).

The cdef is read from csrc/edgeoss.h (the text between ``EO_CDEF_BEGIN`` and
``EO_CDEF_END``, comments stripped), so the header is the one source of truth.
No -march flag: every SIMD level is compiled with per-function target
attributes and chosen at run time, so the build runs on any CPU of its
architecture.

EDGEOSS_SANITIZE=1 builds the extension with AddressSanitizer and UndefinedBehaviorSanitizer
(``-fsanitize=address,undefined``, -O1, frame pointers, debug info; a UB report aborts) into
build/sanitize/edgeoss/ instead of next to the package, so it never replaces the normal build;
tools/run_sanitizers.sh runs the kernel and model tests against it.
"""

from __future__ import annotations

import glob
import os
import re
import sys

from cffi import FFI

_HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(_HERE))
CSRC = os.path.join(ROOT, "csrc")
HEADER = os.path.join(CSRC, "edgeoss.h")


def read_cdef(header: str = HEADER) -> str:
    """Declarations of the public header in a form cffi's cdef accepts."""
    with open(header, encoding="utf-8") as f:
        text = f.read()
    m = re.search(r"/\*\s*EO_CDEF_BEGIN\s*\*/(.*?)/\*\s*EO_CDEF_END\s*\*/", text, re.S)
    if m is None:
        raise RuntimeError(f"{header}: EO_CDEF_BEGIN/EO_CDEF_END markers not found")
    body = m.group(1)
    body = re.sub(r"/\*.*?\*/", " ", body, flags=re.S)
    body = re.sub(r"//[^\n]*", " ", body)
    lines = [ln.rstrip() for ln in body.splitlines() if ln.strip()]
    if any(ln.lstrip().startswith("#") for ln in lines):
        raise RuntimeError(f"{header}: preprocessor lines inside the cdef region")
    return "\n".join(lines) + "\n"


def _cwd_is_root() -> bool:
    try:
        return os.path.samefile(os.getcwd(), ROOT)
    except OSError:
        return False


SANITIZE_FLAGS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer", "-g"]


def sanitize() -> bool:
    """EDGEOSS_SANITIZE=1: the ASan+UBSan build (development only, never what pip installs)."""
    return os.environ.get("EDGEOSS_SANITIZE", "").strip() not in ("", "0")


def _compile_args() -> list[str]:
    if sys.platform == "win32" and "GCC" not in sys.version:
        return ["/O2"]
    if sanitize():
        return ["-O1", "-fno-math-errno", "-fno-strict-aliasing", "-Wall"] + SANITIZE_FLAGS
    # -fno-math-errno lets rintf/fabsf inline; no -ffast-math: the kernels
    # rely on IEEE semantics (NaN tests, exact rounding).
    return ["-O3", "-fno-math-errno", "-fno-strict-aliasing", "-Wall"]


def make_ffibuilder(relative: bool) -> FFI:
    """The FFI builder; `relative`: name files relative to the project root
    (setuptools runs from there; keeps absolute paths out of build logs)."""

    def path(p):
        return os.path.relpath(p, ROOT) if relative else p

    ffi = FFI()
    ffi.cdef(read_cdef())
    ffi.set_source(
        "edgeoss._ckernels",
        '#include "edgeoss.h"',
        sources=sorted(path(p) for p in glob.glob(os.path.join(CSRC, "*.c"))),
        include_dirs=[path(CSRC)],
        extra_compile_args=_compile_args(),
        extra_link_args=SANITIZE_FLAGS if sanitize() else [],
        depends=sorted(path(p) for p in glob.glob(os.path.join(CSRC, "*.h"))),
    )
    return ffi


ffibuilder = make_ffibuilder(relative=_cwd_is_root())


if __name__ == "__main__":
    # Development build without pip: compiles in build/cffi and copies the
    # extension next to the package (edgeoss/_ckernels*.so).
    import shutil

    os.chdir(ROOT)
    tmp = os.path.join("build", "cffi-sanitize" if sanitize() else "cffi")
    built = make_ffibuilder(relative=False).compile(tmpdir=tmp, verbose="-v" in sys.argv)
    # the sanitized build goes to a place of its own: build/sanitize/edgeoss/_ckernels*.so
    pkg = os.path.join(ROOT, "build", "sanitize", "edgeoss") if sanitize() else os.path.join(ROOT, "edgeoss")
    os.makedirs(pkg, exist_ok=True)
    dest = os.path.join(pkg, os.path.basename(built))
    for old in glob.glob(os.path.join(pkg, "_ckernels*.so")) + glob.glob(os.path.join(pkg, "_ckernels*.pyd")):
        os.remove(old)  # one copy only: Python would prefer one name over another
    shutil.copy2(built, dest)
    print(dest)
