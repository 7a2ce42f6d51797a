#!/usr/bin/env bash
# The C kernels under AddressSanitizer + UndefinedBehaviorSanitizer: builds them with
# EDGEOSS_SANITIZE=1 into build/sanitize/edgeoss/ (the normal build next to the package is left
# alone), checks that an out-of-bounds read in C is caught, then runs the kernel and model tests
# against the sanitized build. Extra arguments go to pytest. Usage: tools/run_sanitizers.sh [-x]
#
# Python itself is not built with ASan, so libasan must be loaded first (LD_PRELOAD). Leak
# detection is off (detect_leaks=0): CPython does not free its interned objects, type caches and
# module state at exit, so LeakSanitizer would report thousands of blocks that are the
# interpreter's and none of ours (the kernels allocate nothing). Any UB report aborts the run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-$ROOT/.venv/bin/python}
CC=${CC:-gcc}

EDGEOSS_SANITIZE=1 nice "$PY" edgeoss/kernels/_build.py >/dev/null
mkdir -p build/sanitize/site
# put the sanitized extension first on the package's path: `from edgeoss import _ckernels` finds it
cat > build/sanitize/site/sitecustomize.py <<PYEOF
import edgeoss
edgeoss.__path__.insert(0, "$ROOT/build/sanitize/edgeoss")
PYEOF

export LD_PRELOAD="$($CC -print-file-name=libasan.so):$($CC -print-file-name=libubsan.so)"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export PYTHONPATH="$ROOT/build/sanitize/site${PYTHONPATH:+:$PYTHONPATH}"
export EDGEOSS_REQUIRE_C=1 EDGEOSS_JIT=wait
# its own Numba cache, a precaution: code compiled in a process with the sanitizer runtimes
# preloaded stays out of the cache normal runs load
export NUMBA_CACHE_DIR="$ROOT/build/sanitize/numba-cache"

# 1. the sanitized build is the one loaded, and it catches a read past a buffer
"$PY" - <<'PYEOF'
from edgeoss import _ckernels
assert "/build/sanitize/" in _ckernels.__file__, f"not the sanitized build: {_ckernels.__file__}"
print("sanitized build:", _ckernels.__file__)
PYEOF
if ASAN_OPTIONS=detect_leaks=0:abort_on_error=0 "$PY" - 2>/tmp/edgeoss-asan-selftest.$$ <<'PYEOF'
import numpy as np
from edgeoss._ckernels import ffi, lib
x = np.ones(32, np.float32); xq = np.empty(64, np.int8); xd = np.empty(2, np.float32)
lib.eo_q8_quantize(ffi.cast("float *", x.ctypes.data), 64, ffi.cast("int8_t *", xq.ctypes.data),
                   ffi.cast("float *", xd.ctypes.data))   # n = 64 reads 32 floats past x
PYEOF
then
    echo "run_sanitizers: an out-of-bounds read went unnoticed: AddressSanitizer is not active" >&2; exit 1
fi
grep -q "heap-buffer-overflow" /tmp/edgeoss-asan-selftest.$$ || {
    cat /tmp/edgeoss-asan-selftest.$$ >&2; echo "run_sanitizers: the self-test failed for another reason" >&2; exit 1; }
rm -f /tmp/edgeoss-asan-selftest.$$
echo "self-test: AddressSanitizer caught a deliberate heap-buffer-overflow"

# 2. the kernel and model tests
nice "$PY" -m pytest -q -p no:cacheprovider tests/kernels tests/engine/test_model.py "$@"
echo "run_sanitizers: clean (ASan + UBSan, kernel and model tests)"
