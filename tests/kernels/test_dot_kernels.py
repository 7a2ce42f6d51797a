"""The quantized dot-product kernels (edgeoss.kernels.dot) against the NumPy reference.

Every kernel runs at every C SIMD level this CPU has (plus AVX-512 without VNNI when
the CPU has AVX-512) and in the Numba fallback, at awkward sizes. Quantization must be
bit-exact; matmuls must match the float64 reference within float32 accumulation
error: |out - ref| <= RTOL * sum_k |W[r, k] * X[t, k]|.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest

from edgeoss.kernels import dot
from edgeoss.kernels import dot_reference as ref

RTOL = 1e-5  # relative to the sum of |products|: accumulation order differences only
REPO = Path(__file__).resolve().parents[2]

NBS = (1, 3, 5, 7, 90)
NROWS = (1, 3, 17, 33)
NTOKS = (1, 2, 5, 7, 13)  # 7: a tile of 4 tokens then one of 3
# (nrows, nb, ntok) cases: the full grid, plus K beyond one C chunk (128 blocks)
CASES = [(r, nb, t) for nb in NBS for r in NROWS for t in NTOKS] + [(3, 130, 5), (2, 300, 2)]


def _pythonpath():
    return os.pathsep.join([str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])


def _impl_params():
    params = []
    if dot.BACKEND == "c":
        for level, disable in dot.available_simd_variants():
            name = "-".join((level,) + tuple(f"no{e}" for e in disable))
            params.append(pytest.param(("c", level, disable), id=f"c-{name}"))
    else:
        params.append(pytest.param(("c", None, ()), id="c",
                                   marks=pytest.mark.skip(reason=f"C kernels not in use: {dot.BACKEND_ERROR}")))
    params.append(pytest.param(("numba", None, ()), id="numba"))
    return params


@pytest.fixture(params=_impl_params())
def kern(request):
    backend, level, disable = request.param
    if backend == "numba":
        yield dot.get_kernels("numba")
        return
    prev_level, prev_variant = dot.simd_level_name(), dot.simd_variant_name()
    dot.set_simd_level(level, disable=disable)
    try:
        yield dot.get_kernels("c")
    finally:
        for dis in [()] + [(e,) for e in dot.SIMD_EXTENSIONS] + [tuple(dot.SIMD_EXTENSIONS)]:
            dot.set_simd_level(prev_level, disable=dis)
            if dot.simd_variant_name() == prev_variant:
                break


def _rng(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _acts(rng, ntok, k):
    """float32 activations [ntok, k] (k % 32 == 0) with block magnitudes from 1e-3 to 1e2,
    a zero block and a -0."""
    x = rng.standard_normal((ntok, k)).astype(np.float32)
    scale = np.float32(10.0) ** rng.integers(-3, 3, size=(ntok, k // 32)).astype(np.float32)
    x *= np.repeat(scale, 32, axis=1)
    if k >= 64:
        x[0, 32:64] = 0.0
        x[-1, 33] = -0.0
    return x


def _fp16_scales(rng, shape):
    return (rng.uniform(0.5, 2.0, size=shape) * 10.0 ** rng.integers(-4, 0, size=shape)).astype(
        np.float16).view(np.uint16)


def _padded_out(ntok, nrows, pad=3):
    """out [ntok, nrows] inside a NaN-filled [ntok, nrows + pad] buffer (out_stride > nrows)."""
    buf = np.full((ntok, nrows + pad), np.nan, dtype=np.float32)
    return buf, buf[:, :nrows]


def _assert_close(out, want, absprod, what):
    err = np.abs(out.astype(np.float64) - want)
    bad = ~(err <= RTOL * absprod + 1e-37)
    if bad.any():
        t, r = np.argwhere(bad)[0]
        raise AssertionError(f"{what}: {bad.sum()} mismatches; e.g. [t={t}, r={r}] got {out[t, r]!r} "
                             f"want {want[t, r]!r} (sum|p| {absprod[t, r]:.3g})")


# -- quantization ----------------------------------------------------------------------

def _special_blocks():
    blocks = []
    b = np.zeros(32, np.float32)
    b[0] = 127.0  # d = 1 exactly: x * (1/d) = x, so these are exact ties
    b[1:12] = [0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -126.5, 3.5, 4.5, -0.0]
    blocks.append(b)
    blocks.append(np.zeros(32, np.float32))                    # zeros -> d = 0
    blocks.append(np.full(32, -0.0, np.float32))               # negative zeros
    b = np.linspace(-1, 1, 32).astype(np.float32)
    b[5] = np.float32(3.4028235e38)                            # FLT_MAX
    blocks.append(b)
    blocks.append(np.full(32, 1e-40, np.float32) * np.arange(32, dtype=np.float32))   # subnormal: 1/d = inf
    blocks.append(np.array([1e-45] * 16 + [-1e-45] * 16, np.float32))                 # d underflows to 0
    blocks.append(np.linspace(-4e-37, 4e-37, 32).astype(np.float32))                   # subnormal d, finite 1/d
    b = np.ones(32, np.float32)
    b[3] = np.inf                                               # inf: d = inf, q = 0
    blocks.append(b)
    b = np.full(32, 7.0, np.float32)
    b[::2] = -7.0                                               # every value at +-max
    blocks.append(b)
    b = (np.arange(32, dtype=np.float32) - 15.5) * np.float32(1e30)
    blocks.append(b)
    # a block where x * (1/d) lands on .5 after float32 rounding for some elements
    b = np.float32(0.37) * (np.arange(32, dtype=np.float32) + np.float32(0.5))
    blocks.append(b)
    return np.concatenate(blocks)


@pytest.mark.parametrize("nb", NBS)
def test_q8_quantize_bit_exact(kern, nb):
    rng = _rng("quant", nb)
    for ntok in (1, 2, 5):
        x = _acts(rng, ntok, nb * 32)
        xq, xd = kern.q8_quantize(x)
        rq, rd = ref.q8_quantize(x)
        assert xq.shape == (ntok, nb * 32) and xd.shape == (ntok, nb)
        np.testing.assert_array_equal(xq, rq)
        np.testing.assert_array_equal(xd.view(np.uint32), rd.view(np.uint32))


def test_q8_quantize_special_values(kern):
    x = _special_blocks()
    rng = _rng("quant-special")
    x = np.concatenate([x, rng.standard_normal(32 * 40).astype(np.float32) * np.float32(1e-3)])
    xq, xd = kern.q8_quantize(x)
    rq, rd = ref.q8_quantize(x)
    np.testing.assert_array_equal(xq, rq)
    np.testing.assert_array_equal(xd.view(np.uint32), rd.view(np.uint32))
    # spot checks of the contract itself
    assert list(xq[:12]) == [127, 0, 2, 2, 0, -2, -2, 126, -126, 4, 4, 0]
    assert xd[0] == 1.0
    assert xd[1] == 0.0 and not xq[32:96].any()
    assert np.all(np.abs(xq.astype(np.int32)) <= 127)


def test_q8_quantize_random_scales_exhaustive_ties(kern):
    # many blocks, each with a random max: exercises rounding of x * (1/d) near .5
    rng = _rng("quant-ties")
    x = rng.integers(-1000, 1001, size=(64, 32)).astype(np.float32) / np.float32(8.0)
    x *= np.float32(2.0) ** rng.integers(-20, 20, size=(64, 1)).astype(np.float32)
    xq, xd = kern.q8_quantize(x.reshape(-1))
    rq, rd = ref.q8_quantize(x.reshape(-1))
    np.testing.assert_array_equal(xq, rq)
    np.testing.assert_array_equal(xd.view(np.uint32), rd.view(np.uint32))


# -- integer matmuls -----------------------------------------------------------------

def _weights(kind, rng, nrows, nb):
    if kind == "mxfp4":
        wq = rng.integers(0, 256, size=(nrows, nb, 16), dtype=np.uint8)
        ws = rng.integers(112, 140, size=(nrows, nb), dtype=np.uint8)
        return wq, ws, ref.mxfp4_dequantize(wq, ws)
    if kind == "q8":
        wq = rng.integers(-127, 128, size=(nrows, nb, 32), dtype=np.int8)
        if wq.size:
            wq.reshape(-1)[:: 37] = -128  # the converter may not emit it, but the kernels handle it
        ws = _fp16_scales(rng, (nrows, nb))
        return wq, ws, ref.q8w_dequantize(wq, ws)
    if kind == "q4":
        wq = rng.integers(0, 256, size=(nrows, nb, 16), dtype=np.uint8)
        ws = _fp16_scales(rng, (nrows, nb))
        return wq, ws, ref.q4w_dequantize(wq, ws)
    raise ValueError(kind)


_Q8_METHODS = {"mxfp4": "matmul_q8_mxfp4w", "q8": "matmul_q8_q8w", "q4": "matmul_q8_q4w"}


@pytest.mark.parametrize("kind", ["mxfp4", "q8", "q4"])
def test_q8_activation_matmul(kern, kind):
    fn = getattr(kern, _Q8_METHODS[kind])
    for nrows, nb, ntok in CASES:
        rng = _rng(kind, nrows, nb, ntok)
        wq, ws, wf = _weights(kind, rng, nrows, nb)
        xq, xd = ref.q8_quantize(_acts(rng, ntok, nb * 32))
        xf = ref.q8_dequantize(xq, xd)
        want = xf @ wf.T
        absprod = np.abs(xf) @ np.abs(wf).T
        buf, out = _padded_out(ntok, nrows)
        res = fn(wq, ws, xq, xd, out=out)
        assert res is out
        _assert_close(out, want, absprod, f"{kind} nrows={nrows} nb={nb} ntok={ntok}")
        assert np.isnan(buf[:, nrows:]).all(), "wrote past nrows"
        # the allocating form, and 1-D activations for a single token
        np.testing.assert_array_equal(fn(wq, ws, xq, xd), out)
        np.testing.assert_array_equal(fn(wq, ws, xq[0], xd[0]), out[0])


# Shapes for the tiled paths of the SIMD kernels (token tiles of 4 / 8, row pairs, groups
# of 16 blocks with an overlapping last group, K chunks of up to 128 blocks): ntok not a
# multiple of the tile, nb around multiples of 16 and past one chunk.
TILE_CASES = [(r, nb, t) for nb in (16, 17, 31, 90, 130, 180) for r, t in ((1, 9), (3, 6), (5, 17), (2, 8))] + [
    (7, 33, 23), (4, 144, 16)]


@pytest.mark.parametrize("kind", ["mxfp4", "q8", "q4"])
def test_q8_activation_matmul_tiles(kern, kind):
    fn = getattr(kern, _Q8_METHODS[kind])
    for nrows, nb, ntok in TILE_CASES:
        rng = _rng("tiles", kind, nrows, nb, ntok)
        wq, ws, wf = _weights(kind, rng, nrows, nb)
        xq, xd = ref.q8_quantize(_acts(rng, ntok, nb * 32))
        xf = ref.q8_dequantize(xq, xd)
        want = xf @ wf.T
        absprod = np.abs(xf) @ np.abs(wf).T
        buf, out = _padded_out(ntok, nrows)
        fn(wq, ws, xq, xd, out=out)
        _assert_close(out, want, absprod, f"{kind} nrows={nrows} nb={nb} ntok={ntok}")
        assert np.isnan(buf[:, nrows:]).all(), "wrote past nrows"
        # a token alone (other code paths for few tokens) gives the same values to the bit
        for t in (0, ntok - 1):
            np.testing.assert_array_equal(fn(wq, ws, xq[t:t + 1], xd[t:t + 1]), out[t:t + 1])


@pytest.mark.parametrize("kind", ["mxfp4", "q8", "q4"])
def test_q8_activation_matmul_decodes_every_element_exactly(kern, kind):
    """One-hot activations read single weights back: checks the nibble layout, every
    code and extreme scales (e8m0 0, 1, 252; subnormal fp16), bit for bit."""
    rng = _rng("onehot", kind)
    nrows, nb = 5, 3
    wq, ws, _ = _weights(kind, rng, nrows, nb)
    if kind == "mxfp4":
        wq[0, 0] = np.arange(16, dtype=np.uint8) * 17      # codes c | c << 4: every code, both nibbles
        ws[0] = [0, 1, 252]
        ws[1] = [2, 127, 128]
    else:
        ws[0] = [0x0001, 0x03FF, 0x7BFF]                    # fp16 subnormals and max
        ws[1] = [0x8400, 0x3C00, 0x0000]                    # negative, 1.0, zero
    wf = {"mxfp4": ref.mxfp4_dequantize, "q8": ref.q8w_dequantize, "q4": ref.q4w_dequantize}[kind](wq, ws)
    K = nb * 32
    xq = np.eye(K, dtype=np.int8)
    xd = np.ones((K, nb), dtype=np.float32)
    out = getattr(kern, _Q8_METHODS[kind])(wq, ws, xq, xd)
    np.testing.assert_array_equal(out, wf.T.astype(np.float32))


# -- float32 activation matmuls ----------------------------------------------------------

def test_f32_mxfp4w_matmul(kern):
    for nrows, nb, ntok in CASES:
        rng = _rng("f32mx", nrows, nb, ntok)
        wq, we, wf = _weights("mxfp4", rng, nrows, nb)
        x = _acts(rng, ntok, nb * 32)
        want = x.astype(np.float64) @ wf.T
        absprod = np.abs(x.astype(np.float64)) @ np.abs(wf).T
        buf, out = _padded_out(ntok, nrows)
        kern.matmul_f32_mxfp4w(wq, we, x, out=out)
        _assert_close(out, want, absprod, f"f32 x mxfp4 nrows={nrows} nb={nb} ntok={ntok}")
        assert np.isnan(buf[:, nrows:]).all(), "wrote past nrows"
    # one-hot: exact decode including e8m0 0, 1 and 252
    wq, we, _ = _weights("mxfp4", _rng("f32mx-onehot"), 4, 2)
    wq[0, 0] = np.arange(16, dtype=np.uint8) * 17
    we[0] = [0, 1]
    we[1] = [252, 127]
    out = kern.matmul_f32_mxfp4w(wq, we, np.eye(64, dtype=np.float32))
    np.testing.assert_array_equal(out, ref.mxfp4_dequantize(wq, we).T.astype(np.float32))


def test_f32_bf16w_matmul(kern):
    ks = (1, 7, 8, 15, 16, 17, 31, 32, 33, 100, 160, 224, 2880, 4100, 9000)
    for k in ks:
        for nrows, ntok in ((1, 1), (3, 2), (17, 5), (33, 13)):
            if k > 2880 and nrows > 3:
                continue
            rng = _rng("bf16", k, nrows, ntok)
            w = (rng.standard_normal((nrows, k)).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
            x = rng.standard_normal((ntok, k)).astype(np.float32)
            wf = ref.bf16_to_float(w)
            want = x.astype(np.float64) @ wf.T
            absprod = np.abs(x.astype(np.float64)) @ np.abs(wf).T
            buf, out = _padded_out(ntok, nrows)
            kern.matmul_f32_bf16w(w, x, out=out)
            _assert_close(out, want, absprod, f"f32 x bf16 nrows={nrows} k={k} ntok={ntok}")
            assert np.isnan(buf[:, nrows:]).all(), "wrote past nrows"
    # one-hot: exact, including bf16 subnormals and -0
    w = np.array([[0x0001, 0x8000, 0x7F7F, 0x3F80, 0xC2F7, 0x0080, 0x807F, 0x4049]], dtype=np.uint16)
    out = kern.matmul_f32_bf16w(w, np.eye(8, dtype=np.float32))
    np.testing.assert_array_equal(out[:, 0], ref.bf16_to_float(w[0]).astype(np.float32))


def test_empty_shapes(kern):
    nrows, nb = 3, 2
    wq, we, _ = _weights("mxfp4", _rng("empty"), nrows, nb)
    xq, xd = kern.q8_quantize(np.zeros((0, nb * 32), np.float32))
    assert xq.shape == (0, 64) and xd.shape == (0, 2)
    assert kern.matmul_q8_mxfp4w(wq, we, xq, xd).shape == (0, nrows)
    out = kern.matmul_f32_bf16w(np.zeros((nrows, 0), np.uint16), np.zeros((2, 0), np.float32))
    np.testing.assert_array_equal(out, np.zeros((2, nrows), np.float32))
    out = kern.matmul_q8_q8w(np.zeros((nrows, 0, 32), np.int8), np.zeros((nrows, 0), np.uint16),
                             np.zeros((2, 0), np.int8), np.zeros((2, 0), np.float32))
    np.testing.assert_array_equal(out, np.zeros((2, nrows), np.float32))


# -- wrappers, levels, backends ------------------------------------------------------

def test_wrapper_checks():
    wq, we, _ = _weights("mxfp4", _rng("checks"), 2, 2)
    xq, xd = dot.q8_quantize(np.ones((1, 64), np.float32))
    with pytest.raises(TypeError, match="dtype"):
        dot.matmul_q8_mxfp4w(wq.astype(np.int8), we, xq, xd)
    with pytest.raises(TypeError, match="dtype"):
        dot.q8_quantize(np.ones(64))
    with pytest.raises(ValueError, match="multiple of 32"):
        dot.q8_quantize(np.ones(48, np.float32))
    with pytest.raises(ValueError, match="last dimension"):
        dot.matmul_q8_mxfp4w(wq, we, np.zeros((1, 96), np.int8), np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        dot.matmul_q8_mxfp4w(wq, we[:, :1], xq, xd)
    with pytest.raises(ValueError, match="shape"):
        dot.matmul_q8_mxfp4w(wq, we, xq, xd, out=np.zeros((1, 3), np.float32))
    # non-contiguous inputs are copied, not misread
    x = np.ones((3, 128), np.float32)[:, ::2]
    np.testing.assert_array_equal(dot.q8_quantize(x)[0], ref.q8_quantize(np.ascontiguousarray(x))[0])


def test_backend_status():
    assert dot.BACKEND in ("c", "numba")
    assert set(dot.KERNEL_NAMES) == {"eo_q8_quantize", "eo_q8_mxfp4w_matmul", "eo_q8_q8w_matmul",
                                     "eo_q8_q4w_matmul", "eo_f32_mxfp4w_matmul", "eo_f32_bf16w_matmul",
                                     "eo_f32_attention_block", "eo_f32_to_f16", "eo_f16_to_f32", "eo_f16_round",
                                     "eo_q8kv_to_f32"}
    assert isinstance(dot.describe(), str)
    if dot.BACKEND == "c":
        assert dot.BACKEND_ERROR is None
        levels = dot.available_simd_levels()
        assert "scalar" in levels and dot.simd_level_name() in levels
        assert dot.best_simd_level_name() in levels
    else:
        assert dot.BACKEND_ERROR
        assert dot.available_simd_levels() == []
        with pytest.raises(RuntimeError):
            dot.set_simd_level("scalar")


def test_c_kernels_in_use():
    """The C extension must be built and loaded (pip install -e .) unless numba is forced.
    (CI sets EDGEOSS_REQUIRE_C=1, under which importing dot would already have failed.)"""
    if os.environ.get("EDGEOSS_KERNELS", "").strip().lower() == "numba":
        pytest.skip("EDGEOSS_KERNELS=numba")
    assert dot.BACKEND == "c", f"C kernels not in use: {dot.BACKEND_ERROR}"


@pytest.mark.skipif(dot.BACKEND != "c", reason="C kernels not in use")
def test_unavailable_level_gives_clear_error():
    missing = [n for n in dot.LEVEL_NAMES if n not in dot.available_simd_levels()]
    before = dot.simd_variant_name()
    for name in missing:
        with pytest.raises(ValueError, match=f"cannot run SIMD level '{name}'"):
            dot.set_simd_level(name)
    with pytest.raises(ValueError, match="unknown SIMD level"):
        dot.set_simd_level("sse9")
    assert dot.simd_variant_name() == before
    if missing:  # and through the environment variable, at import
        env = dict(os.environ, EDGEOSS_SIMD=missing[0], PYTHONPATH=_pythonpath())
        p = subprocess.run([sys.executable, "-c", "import edgeoss.kernels.dot"], env=env,
                           capture_output=True, text=True, timeout=120)
        assert p.returncode != 0
        assert f"EDGEOSS_SIMD={missing[0]}" in p.stderr and "cannot run" in p.stderr


_JIT_CALLER = """
import numpy as np
from numba import njit
from edgeoss.kernels import dot
from edgeoss.kernels import dot_reference as ref
from edgeoss.kernels.dot import eo_q8_quantize, eo_q8_mxfp4w_matmul, eo_f32_bf16w_matmul

@njit(cache=False)
def run(x, wq, we, w16, xq, xd, out, out2):
    eo_q8_quantize(x.ctypes.data, x.size, xq.ctypes.data, xd.ctypes.data)
    nrows, nb = we.shape
    for r0 in range(0, nrows, 4):   # tiles of rows, as the real loops do
        n = min(4, nrows - r0)
        eo_q8_mxfp4w_matmul(wq.ctypes.data + r0 * nb * 16, we.ctypes.data + r0 * nb, n, nb,
                            xq.ctypes.data, xd.ctypes.data, x.shape[0], out.ctypes.data + r0 * 4, nrows)
    eo_f32_bf16w_matmul(w16.ctypes.data, w16.shape[0], w16.shape[1], x.ctypes.data, x.shape[0],
                        out2.ctypes.data, w16.shape[0])

rng = np.random.default_rng(5)
x = rng.standard_normal((3, 96)).astype(np.float32)
wq = rng.integers(0, 256, (10, 3, 16), dtype=np.uint8)
we = rng.integers(120, 130, (10, 3), dtype=np.uint8)
w16 = (rng.standard_normal((6, 96)).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
xq = np.empty((3, 96), np.int8); xd = np.empty((3, 3), np.float32)
out = np.empty((3, 10), np.float32); out2 = np.empty((3, 6), np.float32)
run(x, wq, we, w16, xq, xd, out, out2)
rq, rd = ref.q8_quantize(x)
assert np.array_equal(xq, rq) and np.array_equal(xd, rd)
want = ref.matmul_q8_mxfp4w(wq, we, rq, rd)
assert np.allclose(out, want, rtol=1e-5, atol=1e-6), (out, want)
assert np.allclose(out2, ref.matmul_f32_bf16w(w16, x), rtol=1e-5, atol=1e-5)
print("BACKEND", dot.BACKEND)
"""


def test_jitted_caller_through_registered_symbols():
    """Jitted code reaches the active backend through the ExternalFunction symbols."""
    env = dict(os.environ, PYTHONPATH=_pythonpath())
    p = subprocess.run([sys.executable, "-c", _JIT_CALLER], env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    assert f"BACKEND {dot.BACKEND}" in p.stdout


def test_numba_fallback_through_registered_symbols():
    """With EDGEOSS_KERNELS=numba the same jitted callers run on the Numba cfuncs."""
    env = dict(os.environ, PYTHONPATH=_pythonpath(), EDGEOSS_KERNELS="numba")
    env.pop("EDGEOSS_SIMD", None)
    p = subprocess.run([sys.executable, "-c", _JIT_CALLER + textwrap.dedent("""
        assert dot.BACKEND == "numba" and dot.BACKEND_ERROR == "EDGEOSS_KERNELS=numba"
        assert dot.simd_level_name() == "numba"
        """)], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "BACKEND numba" in p.stdout


# -- the NEON level (aarch64), cross-compiled and run under qemu when available ---------

_LEVEL_HARNESS = r"""
/* Cross-level check: every level this CPU runs vs the scalar level. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "edgeoss.h"

static uint64_t rs = 88172645463325252ull;
static uint32_t rnd(void) { rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17; return (uint32_t)rs; }
static float frnd(void) { return ((float)(rnd() & 0xFFFFFF) / 16777216.0f - 0.5f) * 4.0f; }
static float bf(uint16_t h) { uint32_t b = (uint32_t)h << 16; float f; memcpy(&f, &b, 4); return f; }
static int fails = 0;
static double h2d(uint16_t h)
{
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e ? ldexp(1024 + m, e - 25) : ldexp(m, -24);
    return (h & 0x8000) ? -v : v;
}
static const double MX[16] = {0, .5, 1, 1.5, 2, 3, 4, 6, -0., -.5, -1, -1.5, -2, -3, -4, -6};
/* weight k of row r as a double, for each kind */
static double wval(int kind, int64_t r, int64_t k, int64_t nb, const uint8_t *w4, const uint8_t *we,
                   const int8_t *w8, const uint16_t *wd, const uint16_t *wb)
{
    int64_t b = k / 32, i = k % 32, K = nb * 32;
    uint8_t byte = w4[(r * nb + b) * 16 + (i & 15)];
    int code = i < 16 ? (byte & 15) : (byte >> 4);
    switch (kind) {
    case 0: case 3: return MX[code] * ldexp(1.0, we[r * nb + b] - 127);
    case 1: return w8[r * K + k] * h2d(wd[r * nb + b]);
    case 2: return (code - 8) * h2d(wd[r * nb + b]);
    default: return bf(wb[r * K + k]);
    }
}

static void cmp(const char *what, int level, const float *a, const float *b, const double *mag, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        if (!(fabs((double)a[i] - (double)b[i]) <= 1e-5 * mag[i] + 1e-37)) {
            printf("FAIL %s level %d at %ld: %.9g vs %.9g (mag %.3g)\n", what, level, (long)i, a[i], b[i], mag[i]);
            fails++;
            return;
        }
    }
}

int main(void)
{
    static const int NBS[] = {1, 3, 5, 7, 90, 130};
    static const int NR[] = {1, 3, 17};
    static const int NT[] = {1, 2, 5, 13};
    int levels = 0;
    for (int lv = 1; lv < 4; lv++) {
        if (!eo_level_supported(lv)) continue;
        levels++;
        for (unsigned a = 0; a < sizeof NBS / sizeof *NBS; a++)
        for (unsigned bq = 0; bq < sizeof NR / sizeof *NR; bq++)
        for (unsigned c = 0; c < sizeof NT / sizeof *NT; c++) {
            int64_t nb = NBS[a], nrows = NR[bq], ntok = NT[c], K = nb * 32, st = nrows + 2;
            float *x = malloc(ntok * K * 4);
            int8_t *xq0 = malloc(ntok * K), *xq1 = malloc(ntok * K);
            float *xd0 = malloc(ntok * nb * 4), *xd1 = malloc(ntok * nb * 4);
            uint8_t *w4 = malloc(nrows * nb * 16), *we = malloc(nrows * nb);
            int8_t *w8 = malloc(nrows * K);
            uint16_t *wd = malloc(nrows * nb * 2), *wb = malloc(nrows * K * 2);
            float *o0 = malloc(ntok * st * 4), *o1 = malloc(ntok * st * 4);
            double *mag = malloc(ntok * st * 8);
            for (int64_t i = 0; i < ntok * K; i++) x[i] = frnd() * ((i / 32) % 3 == 0 ? 100.0f : 0.01f);
            if (K >= 64) for (int i = 32; i < 64; i++) x[i] = 0.0f;
            x[0] = 127.0f; x[1] = 0.5f; x[2] = 1.5f; x[3] = -2.5f; x[4] = -0.0f;
            for (int64_t i = 0; i < nrows * nb * 16; i++) w4[i] = (uint8_t)rnd();
            for (int64_t i = 0; i < nrows * K; i++) { w8[i] = (int8_t)rnd(); wb[i] = (uint16_t)(rnd() & 0xBFFF); }
            for (int64_t i = 0; i < nrows * nb; i++) { we[i] = 115 + rnd() % 25; wd[i] = 0x1000 + (rnd() & 0x1FFF); }
            /* quantize: bit-exact */
            eo_set_level(0); eo_q8_quantize(x, ntok * K, xq0, xd0);
            eo_set_level(lv); eo_q8_quantize(x, ntok * K, xq1, xd1);
            if (memcmp(xq0, xq1, ntok * K) || memcmp(xd0, xd1, ntok * nb * 4)) { printf("FAIL quantize level %d nb %ld\n", lv, (long)nb); fails++; }
            for (int kind = 0; kind < 5; kind++) {
                for (int pass = 0; pass < 2; pass++) {
                    float *o = pass ? o1 : o0;
                    eo_set_level(pass ? lv : 0);
                    for (int64_t i = 0; i < ntok * st; i++) o[i] = -12345.0f;
                    switch (kind) {
                    case 0: eo_q8_mxfp4w_matmul(w4, we, nrows, nb, xq0, xd0, ntok, o, st); break;
                    case 1: eo_q8_q8w_matmul(w8, wd, nrows, nb, xq0, xd0, ntok, o, st); break;
                    case 2: eo_q8_q4w_matmul(w4, wd, nrows, nb, xq0, xd0, ntok, o, st); break;
                    case 3: eo_f32_mxfp4w_matmul(w4, we, nrows, nb, x, ntok, o, st); break;
                    case 4: eo_f32_bf16w_matmul(wb, nrows, K, x, ntok, o, st); break;
                    }
                }
                /* magnitude: sum |w x| */
                for (int64_t t = 0; t < ntok; t++)
                    for (int64_t r = 0; r < st; r++) {
                        double m = 0;
                        if (r < nrows) {
                            for (int64_t k = 0; k < K; k++) {
                                double xv = kind <= 2 ? xq0[t * K + k] * (double)xd0[t * nb + k / 32] : x[t * K + k];
                                double wv = wval(kind, r, k, nb, w4, we, w8, wd, wb);
                                m += fabs(xv * wv);
                            }
                        }
                        mag[t * st + r] = m;
                    }
                {
                    char what[64];
                    snprintf(what, sizeof what, "kind %d nb %ld nrows %ld ntok %ld", kind, (long)nb, (long)nrows, (long)ntok);
                    cmp(what, lv, o1, o0, mag, ntok * st);
                }
            }
            free(x); free(xq0); free(xq1); free(xd0); free(xd1); free(w4); free(we); free(w8); free(wd); free(wb);
            free(o0); free(o1); free(mag);
        }
        /* attention: two blocks of keys read with a stride, rows with whole, partial and
         * empty ranges; outputs acc/l within 1e-5 of the scalar level's */
        for (int hd = 8; hd <= 72; hd += 64) {
            enum { ROWS = 16, NK = 37, KS = 3 };
            float *kc = malloc(2 * NK * KS * hd * 4), *vc = malloc(2 * NK * KS * hd * 4);
            float *qt = malloc(hd * ROWS * 4), *sc = malloc(8 * NK * 4), *acc[2], m[2][ROWS], l[2][ROWS], sink[ROWS];
            int32_t lo[ROWS], hi[ROWS];
            acc[0] = malloc(hd * ROWS * 4); acc[1] = malloc(hd * ROWS * 4);
            for (int i = 0; i < 2 * NK * KS * hd; i++) { kc[i] = frnd(); vc[i] = frnd(); }
            for (int i = 0; i < hd * ROWS; i++) qt[i] = frnd() * 0.3f;
            for (int r = 0; r < ROWS; r++) { sink[r] = frnd(); lo[r] = (int32_t)(rnd() % NK) - 2; hi[r] = lo[r] + (int32_t)(rnd() % (NK + 4)) - 1; }
            lo[0] = 0; hi[0] = NK; lo[1] = hi[1] = 4;
            for (int pass = 0; pass < 2; pass++) {
                eo_set_level(pass ? lv : 0);
                for (int r = 0; r < ROWS; r++) { m[pass][r] = sink[r]; l[pass][r] = 1.0f; }
                memset(acc[pass], 0, hd * ROWS * 4);
                for (int blk = 0; blk < 2; blk++)
                    eo_f32_attention_block(qt, ROWS, hd, kc + blk * NK * KS * hd + hd, vc + blk * NK * KS * hd + hd,
                                           KS * hd, NK, lo, hi, m[pass], l[pass], acc[pass], sc);
            }
            for (int r = 0; r < ROWS; r++)
                for (int i = 0; i < hd; i++) {
                    double a = acc[0][i * ROWS + r] / l[0][r], b = acc[1][i * ROWS + r] / l[1][r];
                    if (!(fabs(a - b) <= 1e-5) || !(fabs(m[0][r] - m[1][r]) <= 1e-6)) {
                        printf("FAIL attention level %d hd %d row %d dim %d: %.9g vs %.9g\n", lv, hd, r, i, b, a);
                        fails++;
                        r = ROWS;
                        break;
                    }
                }
            free(kc); free(vc); free(qt); free(sc); free(acc[0]); free(acc[1]);
        }
        /* the KV cache's float16: the same bits as the scalar level, finite values of every
         * exponent (and ties), read back the same */
        {
            enum { NH = 4099 };
            float *src = malloc(NH * 4), *back[2];
            uint16_t *h[2];
            for (int i = 0; i < NH; i++) {
                uint32_t bits = (uint32_t)rnd() & 0x7FFFFFFFu;
                bits = (bits & 0x807FFFFFu) | ((uint32_t)(100 + rnd() % 45) << 23);  /* 2^-27 .. 2^17 */
                if (i % 7 == 0) bits = (bits & ~0x1FFFu) | 0x1000u;                     /* a tie */
                memcpy(&src[i], &bits, 4);
                if (i % 2) src[i] = -src[i];
            }
            for (int pass = 0; pass < 2; pass++) {
                eo_set_level(pass ? lv : 0);
                h[pass] = malloc(NH * 2); back[pass] = malloc(NH * 4);
                eo_f32_to_f16(src, h[pass], NH);
                eo_f16_to_f32(h[pass], back[pass], NH);
            }
            if (memcmp(h[0], h[1], NH * 2) || memcmp(back[0], back[1], NH * 4)) {
                printf("FAIL f16 conversions level %d\n", lv);
                fails++;
            }
            free(src); free(h[0]); free(h[1]); free(back[0]); free(back[1]);
        }
    }
    printf("levels checked: %d (best %s); %s\n", levels, eo_level_name(eo_cpu_best_level()), fails ? "FAILED" : "OK");
    return fails != 0;
}
"""


@pytest.mark.skipif(not (shutil.which("aarch64-linux-gnu-gcc") and shutil.which("qemu-aarch64")),
                    reason="needs aarch64-linux-gnu-gcc and qemu-aarch64 (apt: gcc-aarch64-linux-gnu qemu-user)")
def test_neon_level_matches_scalar_under_qemu(tmp_path):
    """Every C level of an aarch64 build (neon) against its scalar level: quantization
    bit-exact, matmuls within RTOL of sum |products|."""
    src = tmp_path / "harness.c"
    src.write_text(_LEVEL_HARNESS)
    exe = tmp_path / "harness"
    csrc = REPO / "csrc"
    cc = subprocess.run(["aarch64-linux-gnu-gcc", "-O2", "-std=c99", "-Wall", "-static", f"-I{csrc}",
                         *map(str, sorted(csrc.glob("*.c"))), str(src), "-o", str(exe), "-lm"],
                        capture_output=True, text=True, timeout=300)
    assert cc.returncode == 0, cc.stderr
    run = subprocess.run(["qemu-aarch64", str(exe)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "levels checked: 1 (best neon); OK" in run.stdout, run.stdout


# -- attention: one block of keys with a running softmax ----------------------------------

def _attention_block_numpy(qt, k, v, lo, hi, m, l, acct):
    """float64 update of (m, l, acct) by one block, as csrc/edgeoss.h states it."""
    m, l, acct = m.astype(np.float64), l.astype(np.float64), acct.astype(np.float64)
    s = qt.T.astype(np.float64) @ k.T.astype(np.float64)          # [rows, nkeys]
    j = np.arange(k.shape[0])
    valid = (j[None, :] >= lo[:, None]) & (j[None, :] < hi[:, None])
    s = np.where(valid, s, -np.inf)
    mnew = np.maximum(m, s.max(axis=1))
    p = np.where(valid, np.exp(s - mnew[:, None]), 0.0)
    corr = np.exp(m - mnew)
    return mnew, l * corr + p.sum(axis=1), acct * corr[None, :] + (p @ v.astype(np.float64)).T


@pytest.mark.parametrize("hd,nkeys,rows", [(64, 64, 8), (64, 200, 24), (13, 7, 8), (8, 1, 16), (72, 33, 8)])
def test_attention_block(kern, hd, nkeys, rows):
    """Scores, masks, the running max / sum and the weighted values of one block, against
    float64: keys read with a stride from a cache, rows with empty, partial and whole ranges,
    a second block folded into the first's state."""
    rng = _rng("attn", hd, nkeys, rows)
    nkv = 3  # keys of head 1 of a [positions, 3, hd] cache: stride 3 * hd
    cache_k = rng.standard_normal((2 * nkeys, nkv, hd)).astype(np.float32)
    cache_v = rng.standard_normal((2 * nkeys, nkv, hd)).astype(np.float32)
    qt = (rng.standard_normal((hd, rows)) * 0.4).astype(np.float32)
    lo = rng.integers(-2, nkeys, rows).astype(np.int32)
    hi = (lo + rng.integers(-1, nkeys + 3, rows)).astype(np.int32)
    lo[0], hi[0] = 0, nkeys            # every key
    lo[1], hi[1] = 5, 5                # none
    m = rng.standard_normal(rows).astype(np.float32) * 2   # sink logits
    l = np.ones(rows, np.float32)
    acct = np.zeros((hd, rows), np.float32)
    want = (m, l, acct)
    for block in range(2):
        k, v = cache_k[block * nkeys:(block + 1) * nkeys, 1], cache_v[block * nkeys:(block + 1) * nkeys, 1]
        want = _attention_block_numpy(qt, k, v, np.clip(lo, 0, nkeys), np.clip(hi, 0, nkeys), *want)
        kern.attention_block(qt, k, v, lo, hi, m, l, acct)
    np.testing.assert_allclose(m, want[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(l, want[1], rtol=2e-5)
    # the output a row gets, relative to the size of its values
    np.testing.assert_allclose(acct / l, want[2] / want[1], rtol=0, atol=2e-5)
    assert np.array_equal(acct[:, 1], np.zeros(hd, np.float32)) and l[1] == 1.0


# -- the KV cache's float16 ------------------------------------------------------------------

def _f16_cases():
    """float32 values covering every kind of float16 result: normals of every exponent, ties
    rounded to even, subnormals and their ties, the overflow threshold, zeros, inf, NaN."""
    rng = _rng("f16")
    normal = (rng.standard_normal(4000) * np.exp2(rng.integers(-14, 16, 4000))).astype(np.float32)
    halves = np.arange(0, 1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    exact = halves[np.isfinite(halves)].astype(np.float32)               # every finite float16
    up = np.nextafter(exact, np.float32(np.inf))
    ties = ((exact[:-1].astype(np.float64) + exact[1:]) / 2).astype(np.float32)  # midpoints
    edge = np.array([65504, 65519.99, 65520, 65536, 1e9, 2.0 ** -24, 2.0 ** -25, 2.0 ** -25 * 1.0001,
                     2.0 ** -26, 1e-30, 0.0, -0.0, np.inf, -np.inf], np.float32)
    both = np.concatenate([normal, exact, up, ties, edge])
    return np.concatenate([both, -both, np.array([np.nan], np.float32)])


def test_q8_kv_rows_widen_to_value_times_block_scale(kern):
    """The q8 KV cache's rows: hd int8 values, then hd/32 float32 scales; each value times its
    block's scale, exactly as NumPy's float32 product, for any row count."""
    rng = np.random.default_rng(7)
    for hd, nrows in ((64, 1), (64, 37), (32, 5), (128, 3)):
        q = rng.integers(-127, 128, (nrows, hd)).astype(np.int8)
        d = (rng.random((nrows, hd // 32)) * 0.1).astype(np.float32)
        rows = np.concatenate([q, d.view(np.int8)], axis=1)
        want = (q.astype(np.float32).reshape(nrows, hd // 32, 32) * d[:, :, None]).reshape(nrows, hd)
        assert np.array_equal(kern.q8kv_to_f32(rows), want)
    with pytest.raises(ValueError, match="int8 rows"):
        kern.q8kv_to_f32(np.zeros((2, 64), np.int8))


def test_f16_conversions_round_to_nearest_even_like_numpy(kern):
    """Every level stores the bits NumPy's float32 -> float16 cast gives (round to nearest,
    ties to even), widens them exactly, and rounds in place to the same values."""
    x = _f16_cases()
    with np.errstate(over="ignore"):
        want = x.astype(np.float16)
    got = kern.f32_to_f16(x)
    finite = ~np.isnan(x)
    assert np.array_equal(got[finite], want.view(np.uint16)[finite])
    assert np.isnan(got.view(np.float16)[~finite]).all()
    back = kern.f16_to_f32(got)
    assert np.array_equal(back[finite], want[finite].astype(np.float32))
    rounded = kern.f16_round(x)
    assert np.array_equal(rounded[finite], want[finite].astype(np.float32)) and np.isnan(rounded[~finite]).all()
    # lengths that are not a multiple of the vector width take the scalar tail
    for n in (1, 7, 9, 17):
        assert np.array_equal(kern.f32_to_f16(x[:n]), got[:n])
