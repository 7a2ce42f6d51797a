"""Build of the optional C kernels (edgeoss._ckernels, via cffi).

Everything else about the package lives in pyproject.toml.  If the C code
cannot be compiled (no compiler, unsupported platform, ...), the install still
succeeds, prints a warning (visible with pip -v), and edgeoss runs on its Numba
kernels instead (edgeoss.kernels.dot.BACKEND == "numba").  With
EDGEOSS_REQUIRE_C=1 in the environment (CI) a failed C build fails the install.
"""

import os
import sys
import traceback

from setuptools import setup
from setuptools.command.build_ext import build_ext

_WARNING = """
************************************************************************
WARNING: the edgeoss C kernels could not be built; continuing without them.
edgeoss will use its Numba kernels (same results, slower).
Reason: {reason}
************************************************************************
"""


def _c_required():
    return os.environ.get("EDGEOSS_REQUIRE_C", "").strip() not in ("", "0")


class OptionalBuildExt(build_ext):
    """build_ext whose failures are reported but do not fail the install
    (unless EDGEOSS_REQUIRE_C=1, as in CI: then they do)."""

    def _warn(self, exc):
        if _c_required():
            raise exc
        reason = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        sys.stderr.write(_WARNING.format(reason=reason))
        sys.stderr.flush()

    def run(self):
        try:
            self._remove_stale_copies()
            super().run()
        except Exception as exc:  # compiler missing, platform errors, ...
            self._warn(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._warn(exc)

    def _remove_stale_copies(self):
        # A copy of the extension in the source tree under another suffix (e.g.
        # .cpython-311-...so from `python edgeoss/kernels/_build.py`, where this
        # build makes .abi3.so) would shadow or be shadowed by the new one.
        here = os.path.dirname(os.path.abspath(__file__))
        for ext in self.extensions:
            parts = ext.name.split(".")
            folder = os.path.join(here, *parts[:-1])
            expected = os.path.basename(self.get_ext_filename(ext.name))
            if not os.path.isdir(folder):
                continue
            for name in os.listdir(folder):
                if (name.startswith(parts[-1] + ".") and name.endswith((".so", ".pyd"))
                        and name != expected):
                    try:
                        os.remove(os.path.join(folder, name))
                    except OSError:
                        pass


setup(
    cffi_modules=["edgeoss/kernels/_build.py:ffibuilder"],
    cmdclass={"build_ext": OptionalBuildExt},
)
