"""The quantized dot-product kernels, and the one place that picks C or Numba.

Jitted code (``@njit(cache=True)``) calls the kernels through the
``types.ExternalFunction`` objects below, named like the C functions
(``eo_q8_quantize``, ``eo_q8_mxfp4w_matmul``, ``eo_q8_q8w_matmul``,
``eo_q8_q4w_matmul``, ``eo_f32_mxfp4w_matmul``, ``eo_f32_bf16w_matmul``,
``eo_f32_attention_block``), passing
raw addresses (``arr.ctypes.data + byte_offset``) for pointers and int64 for
sizes; see csrc/edgeoss.h for each contract.  Importing this module registers
those symbol names with LLVM, pointing either at the C extension
(``edgeoss._ckernels``) or, if it is missing, broken, or EDGEOSS_KERNELS=numba,
at ``numba.cfunc`` versions with the same ABI (dot_numba.py).  Callers are
therefore compiled (and cached) identically with either backend.

Environment:
  EDGEOSS_KERNELS=auto|c|numba  backend (default auto: C if it loads)
  EDGEOSS_REQUIRE_C=1  as EDGEOSS_KERNELS=c unless numba is asked for explicitly
        (CI: no silent fallback; setup.py then also fails if C does not build)
  EDGEOSS_SIMD=scalar|avx2|avx512|neon  force a C SIMD level at import
        (ValueError if this CPU cannot run it)

Plain-Python wrappers taking NumPy arrays (``q8_quantize``,
``matmul_q8_mxfp4w``, ``matmul_q8_q8w``, ``matmul_q8_q4w``,
``matmul_f32_mxfp4w``, ``matmul_f32_bf16w``, ``attention_block``) are for tests and
non-hot code;
``get_kernels("c" | "numba")`` gives the same wrappers bound to one backend.

Status: ``BACKEND``, ``BACKEND_ERROR``, ``describe()``; C SIMD levels:
``simd_level_name()``, ``simd_variant_name()``, ``available_simd_levels()``,
``set_simd_level(name, disable=("vnni", ...))``, ``available_simd_variants()``.
"""

from __future__ import annotations

import ctypes
import os
import warnings

import llvmlite.binding as llvm
import numba as _numba
import numpy as np
from numba import types

__all__ = [
    "BACKEND", "BACKEND_ERROR", "LEVEL_NAMES", "KERNEL_NAMES", "Kernels", "get_kernels",
    "simd_level_name", "simd_variant_name", "set_simd_level", "available_simd_levels",
    "available_simd_variants", "best_simd_level_name", "describe", "SIMD_EXTENSIONS",
    "q8_quantize", "matmul_q8_mxfp4w", "matmul_q8_q8w", "matmul_q8_q4w", "matmul_f32_mxfp4w",
    "matmul_f32_bf16w",
    "eo_q8_quantize", "eo_q8_mxfp4w_matmul", "eo_q8_q8w_matmul", "eo_q8_q4w_matmul",
    "eo_f32_mxfp4w_matmul", "eo_f32_bf16w_matmul", "eo_f32_attention_block", "attention_block",
    "eo_f32_to_f16", "eo_f16_to_f32", "eo_f16_round", "eo_q8kv_to_f32",
]

#: C level numbers -> names (csrc/edgeoss.h)
LEVEL_NAMES = ("scalar", "avx2", "avx512", "neon")

_ABI_VERSION = 4

# Argument kinds of every kernel: "p" pointer (passed as intp), "i" int64.
_SIGNATURES = {
    "eo_q8_quantize": "pipp",                # x, n, xq, xd
    "eo_q8_mxfp4w_matmul": "ppiippipi",      # wq, we, nrows, nb, xq, xd, ntok, out, out_stride
    "eo_q8_q8w_matmul": "ppiippipi",         # wq, wd, ...
    "eo_q8_q4w_matmul": "ppiippipi",         # wq, wd, ...
    "eo_f32_mxfp4w_matmul": "ppiipipi",      # wq, we, nrows, nb, x, ntok, out, out_stride
    "eo_f32_bf16w_matmul": "piipipi",        # w, nrows, k, x, ntok, out, out_stride
    # qt, rows, hd, k, v, kv_stride, nkeys, lo, hi, m, l, acct, scores
    "eo_f32_attention_block": "piippiipppppp",
    "eo_f32_to_f16": "ppi",                  # src, dst, n (the KV cache's float16)
    "eo_f16_to_f32": "ppi",
    "eo_f16_round": "pi",                    # x, n
    "eo_q8kv_to_f32": "piip",                # src, nrows, hd, dst (the q8 KV cache's rows)
}
KERNEL_NAMES = tuple(_SIGNATURES)


def _numba_sig(kinds):
    return types.void(*[types.intp if k == "p" else types.int64 for k in kinds])


# -- what jitted callers use ----------------------------------------------------------

eo_q8_quantize = types.ExternalFunction("eo_q8_quantize", _numba_sig(_SIGNATURES["eo_q8_quantize"]))
eo_q8_mxfp4w_matmul = types.ExternalFunction(
    "eo_q8_mxfp4w_matmul", _numba_sig(_SIGNATURES["eo_q8_mxfp4w_matmul"]))
eo_q8_q8w_matmul = types.ExternalFunction("eo_q8_q8w_matmul", _numba_sig(_SIGNATURES["eo_q8_q8w_matmul"]))
eo_q8_q4w_matmul = types.ExternalFunction("eo_q8_q4w_matmul", _numba_sig(_SIGNATURES["eo_q8_q4w_matmul"]))
eo_f32_mxfp4w_matmul = types.ExternalFunction(
    "eo_f32_mxfp4w_matmul", _numba_sig(_SIGNATURES["eo_f32_mxfp4w_matmul"]))
eo_f32_bf16w_matmul = types.ExternalFunction(
    "eo_f32_bf16w_matmul", _numba_sig(_SIGNATURES["eo_f32_bf16w_matmul"]))
eo_f32_attention_block = types.ExternalFunction(
    "eo_f32_attention_block", _numba_sig(_SIGNATURES["eo_f32_attention_block"]))
eo_f32_to_f16 = types.ExternalFunction("eo_f32_to_f16", _numba_sig(_SIGNATURES["eo_f32_to_f16"]))
eo_f16_to_f32 = types.ExternalFunction("eo_f16_to_f32", _numba_sig(_SIGNATURES["eo_f16_to_f32"]))
eo_f16_round = types.ExternalFunction("eo_f16_round", _numba_sig(_SIGNATURES["eo_f16_round"]))
eo_q8kv_to_f32 = types.ExternalFunction("eo_q8kv_to_f32", _numba_sig(_SIGNATURES["eo_q8kv_to_f32"]))


# -- Python wrappers over one set of kernel addresses --------------------------------

def _check(a, dtype, name, ndims):
    a = np.asarray(a)
    if a.dtype != np.dtype(dtype):
        raise TypeError(f"{name}: expected dtype {np.dtype(dtype).name}, got {a.dtype}")
    if a.ndim not in ndims:
        raise ValueError(f"{name}: expected {' or '.join(map(str, ndims))} dimensions, got shape {a.shape}")
    return np.ascontiguousarray(a)


def _acts_2d(a, name, dtype, width):
    """[K] or [ntok, K] activations -> (2-D contiguous array, was_1d)."""
    a = _check(a, dtype, name, (1, 2))
    one = a.ndim == 1
    a2 = a.reshape(1, -1) if one else a
    if a2.shape[1] != width:
        raise ValueError(f"{name}: expected last dimension {width}, got shape {a.shape}")
    return a2, one


def _out_array(out, ntok, nrows):
    """-> (out 2-D float32 [ntok, nrows] view, out_stride in elements)."""
    if out is None:
        o = np.empty((ntok, nrows), dtype=np.float32)
        return o, nrows
    o = np.asarray(out)
    if o.dtype != np.float32:
        raise TypeError(f"out: expected dtype float32, got {o.dtype}")
    if o.ndim == 1:
        o = o.reshape(1, -1)
    if o.shape != (ntok, nrows):
        raise ValueError(f"out: expected shape ({ntok}, {nrows}), got {o.shape}")
    if not o.flags.writeable:
        raise ValueError("out: array is read-only")
    if nrows > 1 and o.strides[1] != 4:
        raise ValueError("out: rows must be contiguous (stride 4 bytes along the last axis)")
    if ntok > 1:
        if o.strides[0] % 4 or o.strides[0] < 4 * nrows:
            raise ValueError(f"out: token stride {o.strides[0]} bytes must be a multiple of 4 and >= 4*nrows")
        stride = o.strides[0] // 4
    else:
        stride = nrows
    return o, stride


class Kernels:
    """The kernels at one set of addresses (a backend), callable on NumPy arrays.

    Methods check shapes and dtypes, and return new arrays (or fill `out`,
    a float32 [ntok, nrows] array whose token stride may exceed nrows)."""

    def __init__(self, backend: str, addresses: dict):
        self.backend = backend
        self.addresses = dict(addresses)
        self._fn = {}
        for name, kinds in _SIGNATURES.items():
            proto = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p if k == "p" else ctypes.c_int64 for k in kinds])
            self._fn[name] = proto(self.addresses[name])

    def __repr__(self):
        return f"Kernels({self.backend!r})"

    def q8_quantize(self, x):
        """float32 [..., K] (K % 32 == 0) -> (xq int8 [..., K], xd float32 [..., K/32])."""
        x = np.asarray(x)
        if x.ndim == 0:
            raise ValueError("x: expected at least 1 dimension")
        x = _check(x, np.float32, "x", (x.ndim,))
        if x.shape[-1] % 32:
            raise ValueError(f"x: last dimension must be a multiple of 32, got shape {x.shape}")
        xq = np.empty(x.shape, dtype=np.int8)
        xd = np.empty(x.shape[:-1] + (x.shape[-1] // 32,), dtype=np.float32)
        if x.size:
            self._fn["eo_q8_quantize"](x.ctypes.data, x.size, xq.ctypes.data, xd.ctypes.data)
        return xq, xd

    def _q8_matmul(self, name, wq, wdt, ws, sdt, bpb, xq, xd, out):
        wq = _check(wq, wdt, "wq", (3,))
        nrows, nb, width = wq.shape
        if width != bpb:
            raise ValueError(f"wq: expected shape [nrows, nb, {bpb}], got {wq.shape}")
        ws = _check(ws, sdt, "scales", (2,))
        if ws.shape != (nrows, nb):
            raise ValueError(f"scales: expected shape {(nrows, nb)}, got {ws.shape}")
        xq2, one = _acts_2d(xq, "xq", np.int8, nb * 32)
        xd2, _ = _acts_2d(xd, "xd", np.float32, nb)
        if xd2.shape[0] != xq2.shape[0]:
            raise ValueError(f"xd: expected {xq2.shape[0]} tokens, got shape {np.shape(xd)}")
        ntok = xq2.shape[0]
        o, stride = _out_array(out, ntok, nrows)
        if ntok and nrows:
            self._fn[name](wq.ctypes.data, ws.ctypes.data, nrows, nb, xq2.ctypes.data, xd2.ctypes.data,
                           ntok, o.ctypes.data, stride)
        return out if out is not None else (o[0] if one else o)

    def matmul_q8_mxfp4w(self, wq, we, xq, xd, out=None):
        """q8 activations (xq [ntok, K], xd [ntok, K/32]) x mxfp4 weights
        (wq uint8 [nrows, nb, 16], we uint8 [nrows, nb]) -> float32 [ntok, nrows]."""
        return self._q8_matmul("eo_q8_mxfp4w_matmul", wq, np.uint8, we, np.uint8, 16, xq, xd, out)

    def matmul_q8_q8w(self, wq, wd, xq, xd, out=None):
        """q8 activations x q8 weights (wq int8 [nrows, nb, 32], wd uint16 fp16 bits [nrows, nb])."""
        return self._q8_matmul("eo_q8_q8w_matmul", wq, np.int8, wd, np.uint16, 32, xq, xd, out)

    def matmul_q8_q4w(self, wq, wd, xq, xd, out=None):
        """q8 activations x q4 weights (wq uint8 [nrows, nb, 16], wd uint16 fp16 bits [nrows, nb])."""
        return self._q8_matmul("eo_q8_q4w_matmul", wq, np.uint8, wd, np.uint16, 16, xq, xd, out)

    def matmul_f32_mxfp4w(self, wq, we, x, out=None):
        """float32 activations x [ntok, K] x mxfp4 weights -> float32 [ntok, nrows]."""
        wq = _check(wq, np.uint8, "wq", (3,))
        nrows, nb, width = wq.shape
        if width != 16:
            raise ValueError(f"wq: expected shape [nrows, nb, 16], got {wq.shape}")
        we = _check(we, np.uint8, "we", (2,))
        if we.shape != (nrows, nb):
            raise ValueError(f"we: expected shape {(nrows, nb)}, got {we.shape}")
        x2, one = _acts_2d(x, "x", np.float32, nb * 32)
        ntok = x2.shape[0]
        o, stride = _out_array(out, ntok, nrows)
        if ntok and nrows:
            self._fn["eo_f32_mxfp4w_matmul"](wq.ctypes.data, we.ctypes.data, nrows, nb, x2.ctypes.data,
                                             ntok, o.ctypes.data, stride)
        return out if out is not None else (o[0] if one else o)

    def matmul_f32_bf16w(self, w, x, out=None):
        """float32 activations x [ntok, K] x bf16 weights w uint16 [nrows, K] -> float32 [ntok, nrows]."""
        w = _check(w, np.uint16, "w", (2,))
        nrows, k = w.shape
        x2, one = _acts_2d(x, "x", np.float32, k)
        ntok = x2.shape[0]
        o, stride = _out_array(out, ntok, nrows)
        if ntok and nrows:
            self._fn["eo_f32_bf16w_matmul"](w.ctypes.data, nrows, k, x2.ctypes.data, ntok,
                                            o.ctypes.data, stride)
        return out if out is not None else (o[0] if one else o)

    def attention_block(self, qt, k, v, lo, hi, m, l, acct):
        """One block of keys of online-softmax attention (csrc/edgeoss.h), updating m, l and
        acct in place. qt, acct float32 [hd, rows] (rows % 8 == 0); k, v float32 [nkeys, hd]
        or strided views of a cache whose last axis is contiguous; lo, hi int32 [rows]."""
        qt = _check(qt, np.float32, "qt", (2,))
        hd, rows = qt.shape
        if rows % 8:
            raise ValueError(f"qt: rows must be a multiple of 8, got shape {qt.shape}")
        for name, a in (("k", k), ("v", v)):
            if not (isinstance(a, np.ndarray) and a.dtype == np.float32 and a.ndim == 2 and a.shape[1] == hd
                    and a.strides[1] == 4):
                raise ValueError(f"{name}: expected float32 [nkeys, {hd}] with a contiguous last axis")
        if k.shape != v.shape or k.strides != v.strides:
            raise ValueError("k and v must have the same shape and strides")
        for name, a, dt, shape in (("lo", lo, np.int32, (rows,)), ("hi", hi, np.int32, (rows,)),
                                   ("m", m, np.float32, (rows,)), ("l", l, np.float32, (rows,)),
                                   ("acct", acct, np.float32, (hd, rows))):
            if not (isinstance(a, np.ndarray) and a.dtype == dt and a.shape == shape and a.flags.c_contiguous):
                raise ValueError(f"{name}: expected a contiguous {np.dtype(dt).name} array of shape {shape}")
        for name, a in (("m", m), ("l", l), ("acct", acct)):
            if not a.flags.writeable:
                raise ValueError(f"{name}: array is read-only")
        nkeys = k.shape[0]
        scores = np.empty(max(1, 8 * nkeys), np.float32)
        if rows and nkeys:
            self._fn["eo_f32_attention_block"](qt.ctypes.data, rows, hd, k.ctypes.data, v.ctypes.data,
                                               k.strides[0] // 4, nkeys, lo.ctypes.data, hi.ctypes.data,
                                               m.ctypes.data, l.ctypes.data, acct.ctypes.data,
                                               scores.ctypes.data)

    def _convert(self, name, x, src, dst):
        x = np.ascontiguousarray(x)
        if x.dtype != np.dtype(src):
            raise TypeError(f"{name}: expected dtype {np.dtype(src).name}, got {x.dtype}")
        out = np.empty(x.shape, dst)
        if x.size:
            self._fn[name](x.ctypes.data, out.ctypes.data, x.size)
        return out

    def f32_to_f16(self, x):
        """float32 array -> IEEE binary16 bits (uint16, same shape), round to nearest even."""
        return self._convert("eo_f32_to_f16", x, np.float32, np.uint16)

    def f16_to_f32(self, h):
        """IEEE binary16 bits (uint16 array) -> float32, exact."""
        return self._convert("eo_f16_to_f32", h, np.uint16, np.float32)

    def q8kv_to_f32(self, rows):
        """q8 KV rows int8 [..., hd + hd/8] (hd values, then hd/32 float32 scales) -> float32 [..., hd]."""
        rows = np.ascontiguousarray(rows)
        if rows.dtype != np.int8 or rows.ndim == 0 or rows.shape[-1] % 36:
            raise ValueError(f"q8kv_to_f32: expected int8 rows of hd + hd/8 bytes (hd % 32 == 0), got "
                             f"{rows.dtype} {rows.shape}")
        hd = rows.shape[-1] // 36 * 32
        out = np.empty(rows.shape[:-1] + (hd,), np.float32)
        if out.size:
            self._fn["eo_q8kv_to_f32"](rows.ctypes.data, out.size // hd, hd, out.ctypes.data)
        return out

    def f16_round(self, x):
        """A copy of float32 x with every value rounded to the nearest float16 (in place, in C)."""
        x = np.array(x)  # a contiguous copy
        if x.dtype != np.float32:
            raise TypeError(f"f16_round: expected dtype float32, got {x.dtype}")
        if x.size:
            self._fn["eo_f16_round"](x.ctypes.data, x.size)
        return x


# -- backends ---------------------------------------------------------------------------

_C = None          # (ffi, lib) of the C extension once loaded
_KERNELS = {}      # backend name -> Kernels


def _load_c():
    global _C
    if _C is None:
        try:
            from edgeoss import _ckernels
        except ImportError as exc:
            raise ImportError(f"the C extension edgeoss._ckernels is not available ({exc}); build it by "
                              "installing edgeoss with a C compiler present (pip install -e .)") from exc
        ffi, lib = _ckernels.ffi, _ckernels.lib
        v = lib.eo_abi_version()
        if v != _ABI_VERSION:
            raise ImportError(f"edgeoss._ckernels is stale (ABI version {v}, expected {_ABI_VERSION}); "
                              "rebuild it (pip install -e .)")
        _C = (ffi, lib)
    return _C


def get_kernels(backend: str | None = None) -> Kernels:
    """Kernels of `backend` ("c" or "numba"; default: the active one).

    Both can be used side by side from Python (tests compare them); only the
    active one (BACKEND) is what jitted callers reach."""
    backend = BACKEND if backend is None else backend
    k = _KERNELS.get(backend)
    if k is not None:
        return k
    if backend == "c":
        ffi, lib = _load_c()
        addrs = {n: int(ffi.cast("uintptr_t", ffi.addressof(lib, n))) for n in _SIGNATURES}
    elif backend == "numba":
        from . import dot_numba  # compiles (or loads cached) cfuncs
        addrs = {n: dot_numba.CFUNCS[n].address for n in _SIGNATURES}
    else:
        raise ValueError(f"unknown kernel backend {backend!r} (expected 'c' or 'numba')")
    k = _KERNELS[backend] = Kernels(backend, addrs)
    return k


def _choose_backend():
    want = os.environ.get("EDGEOSS_KERNELS", "auto").strip().lower() or "auto"
    if want not in ("auto", "c", "numba"):
        raise ValueError(f"EDGEOSS_KERNELS={want!r}: expected auto, c or numba")
    if want == "numba":
        return "numba", "EDGEOSS_KERNELS=numba"
    required = os.environ.get("EDGEOSS_REQUIRE_C", "").strip() not in ("", "0")
    try:
        get_kernels("c")
        return "c", None
    except Exception as exc:  # not built, stale, or failed to load
        if want == "c" or required:
            why = "EDGEOSS_KERNELS=c" if want == "c" else "EDGEOSS_REQUIRE_C is set"
            raise ImportError(f"{why} but the C kernels cannot be loaded: {exc}") from exc
        reason = str(exc) if isinstance(exc, ImportError) else f"{type(exc).__name__}: {exc}"
        warnings.warn(f"edgeoss: using the slower Numba kernels: {reason}", RuntimeWarning, stacklevel=3)
        return "numba", reason


#: BACKEND: "c" or "numba", the implementation jitted callers reach;
#: BACKEND_ERROR: None, or why the C kernels are not in use
BACKEND, BACKEND_ERROR = _choose_backend()
_ACTIVE = get_kernels(BACKEND)
for _name, _addr in _ACTIVE.addresses.items():
    llvm.add_symbol(_name, _addr)

# Start Numba's threading layer before any loop of kernels/loops.py (which imports this module)
# can run. A plain @njit loop there that calls parallel ones (matmul, moe, attention_block, ...),
# loaded from the on-disk cache as a process's first compiled call, otherwise calls the layer's
# entry point before it is set: a jump to address 0 (seen with a warm cache in a script that
# called loops.matmul first; the engine was safe only because Model calls numba.set_num_threads).
_numba.get_num_threads()


# -- SIMD levels (C backend) ----------------------------------------------------------

def _lib():
    if BACKEND != "c":
        raise RuntimeError(f"SIMD levels apply to the C kernels, which are not in use ({BACKEND_ERROR})")
    return _C[1]


def available_simd_levels() -> list:
    """Names of the C SIMD levels this CPU can run (empty with the Numba backend)."""
    if BACKEND != "c":
        return []
    lib = _C[1]
    return [name for i, name in enumerate(LEVEL_NAMES) if lib.eo_level_supported(i)]


def best_simd_level_name() -> str:
    """The level chosen by default on this CPU ("numba" with the Numba backend)."""
    if BACKEND != "c":
        return "numba"
    lib = _C[1]
    return LEVEL_NAMES[lib.eo_cpu_best_level()]


def simd_level_name() -> str:
    """The C SIMD level in use ("numba" with the Numba backend)."""
    if BACKEND != "c":
        return "numba"
    ffi, lib = _C
    return ffi.string(lib.eo_level_name(lib.eo_get_level())).decode()


def simd_variant_name() -> str:
    """Finer name of the code in use, e.g. "avx512-vnni" ("numba" with the Numba backend)."""
    if BACKEND != "c":
        return "numba"
    ffi, lib = _C
    return ffi.string(lib.eo_variant_name()).decode()


#: optional instruction-set extensions within a level, as set_simd_level(disable=...) takes them
SIMD_EXTENSIONS = {"vnni": 1, "vbmi": 2}


def set_simd_level(name: str, baseline: bool = False, disable=()) -> None:
    """Switch the C kernels to SIMD level `name` (see LEVEL_NAMES).

    By default the level uses every optional extension this CPU has (for
    avx512: VNNI, VBMI).  `disable`: names from SIMD_EXTENSIONS not to use;
    baseline=True disables them all.  Both exist to test every code path on
    one machine; simd_variant_name() tells what was picked.  Raises
    ValueError if the name is unknown or this CPU cannot run it,
    RuntimeError with the Numba backend.  Not thread-safe: call it while no
    kernel runs."""
    lib = _lib()
    key = str(name).strip().lower()
    if key not in LEVEL_NAMES:
        raise ValueError(f"unknown SIMD level {name!r}; expected one of {', '.join(LEVEL_NAMES)}")
    if isinstance(disable, str):
        disable = (disable,)
    mask = 0
    for ext in disable:
        if ext not in SIMD_EXTENSIONS:
            raise ValueError(f"unknown SIMD extension {ext!r}; expected one of {', '.join(SIMD_EXTENSIONS)}")
        mask |= SIMD_EXTENSIONS[ext]
    if baseline:
        mask = -1
    if lib.eo_set_level_variant(LEVEL_NAMES.index(key), mask) != 0:
        raise ValueError(f"this CPU cannot run SIMD level {key!r} (it can run: "
                         f"{', '.join(available_simd_levels())})")


def available_simd_variants() -> list:
    """(level, disable) pairs reaching every distinct code path this CPU can run,
    as set_simd_level(level, disable=disable) takes them; for tests."""
    if BACKEND != "c":
        return []
    ffi, lib = _C
    prev_level, prev_variant = lib.eo_get_level(), ffi.string(lib.eo_variant_name())
    seen, out = set(), []
    try:
        for level in available_simd_levels():
            subsets = [()] + [(e,) for e in SIMD_EXTENSIONS] + [tuple(SIMD_EXTENSIONS)]
            for dis in subsets:
                set_simd_level(level, disable=dis)
                v = simd_variant_name()
                if v not in seen:
                    seen.add(v)
                    out.append((level, dis))
    finally:
        _restore_level(prev_level, prev_variant)
    return out


def _restore_level(level_num, variant_bytes):
    ffi, lib = _C
    for mask in (0, 2, 1, 3, -1):
        lib.eo_set_level_variant(level_num, mask)
        if ffi.string(lib.eo_variant_name()) == variant_bytes:
            return
    lib.eo_set_level_variant(level_num, 0)


def describe() -> str:
    """One line for logs: backend, level and why C is not used."""
    if BACKEND == "c":
        return f"C kernels, SIMD level {simd_variant_name()}"
    return f"Numba kernels ({BACKEND_ERROR})"


_env_simd = os.environ.get("EDGEOSS_SIMD", "").strip().lower()
if _env_simd:
    if BACKEND == "c":
        try:
            set_simd_level(_env_simd)
        except ValueError as exc:
            raise ValueError(f"EDGEOSS_SIMD={_env_simd}: {exc}") from None
    else:
        warnings.warn(f"EDGEOSS_SIMD={_env_simd} ignored: the C kernels are not in use ({BACKEND_ERROR})",
                      RuntimeWarning, stacklevel=2)


# -- module-level wrappers on the active backend ----------------------------------------

def q8_quantize(x):
    """float32 [..., K] -> (xq int8 [..., K], xd float32 [..., K/32]); see Kernels."""
    return _ACTIVE.q8_quantize(x)


def matmul_q8_mxfp4w(wq, we, xq, xd, out=None):
    return _ACTIVE.matmul_q8_mxfp4w(wq, we, xq, xd, out)


def matmul_q8_q8w(wq, wd, xq, xd, out=None):
    return _ACTIVE.matmul_q8_q8w(wq, wd, xq, xd, out)


def matmul_q8_q4w(wq, wd, xq, xd, out=None):
    return _ACTIVE.matmul_q8_q4w(wq, wd, xq, xd, out)


def matmul_f32_mxfp4w(wq, we, x, out=None):
    return _ACTIVE.matmul_f32_mxfp4w(wq, we, x, out)


def matmul_f32_bf16w(w, x, out=None):
    return _ACTIVE.matmul_f32_bf16w(w, x, out)


for _f, _k in ((matmul_q8_mxfp4w, Kernels.matmul_q8_mxfp4w), (matmul_q8_q8w, Kernels.matmul_q8_q8w),
               (matmul_q8_q4w, Kernels.matmul_q8_q4w), (matmul_f32_mxfp4w, Kernels.matmul_f32_mxfp4w),
               (matmul_f32_bf16w, Kernels.matmul_f32_bf16w)):
    _f.__doc__ = _k.__doc__
del _f, _k
