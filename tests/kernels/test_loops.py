"""The Numba loops of edgeoss/kernels/loops.py against plain NumPy, at awkward sizes."""

import numpy as np
import pytest

from edgeoss.convert.quantize import dequantize_mxfp4, quantize_mxfp4
from edgeoss.kernels import loops

rng = np.random.default_rng(1234)


def test_rmsnorm():
    x = rng.standard_normal((5, 96)).astype(np.float32) * 3
    w = rng.standard_normal(96).astype(np.float32)
    out = np.empty_like(x)
    loops.f32_rmsnorm(x, w, 1e-5, out)
    xd = x.astype(np.float64)
    want = xd / np.sqrt((xd ** 2).mean(-1, keepdims=True) + 1e-5) * w
    np.testing.assert_allclose(out, want, rtol=2e-6, atol=1e-6)


def test_qkv_split_adds_bias_and_rotates_halves():
    T, nh, nkv, hd, pos0 = 3, 5, 2, 64, 7
    qkv = rng.standard_normal((T, (nh + 2 * nkv) * hd)).astype(np.float32)
    bias = rng.standard_normal(qkv.shape[1]).astype(np.float32)
    ang = np.arange(pos0 + T)[:, None] * rng.uniform(0.001, 1, hd // 2)[None, :]
    cos, sin = (np.cos(ang) * 1.3).astype(np.float32), (np.sin(ang) * 1.3).astype(np.float32)
    q, k, v = np.empty((T, nh, hd), np.float32), np.empty((T, nkv, hd), np.float32), np.empty((T, nkv, hd), np.float32)
    loops.qkv_split_rope(qkv, bias, cos, sin, pos0, q, k, v)
    z = (qkv + bias).reshape(T, nh + 2 * nkv, hd)
    c, s = cos[pos0:, None, :], sin[pos0:, None, :]

    def rope(x):
        x1, x2 = x[..., :hd // 2], x[..., hd // 2:]
        return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)
    np.testing.assert_allclose(q, rope(z[:, :nh]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(k, rope(z[:, nh:nh + nkv]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(v, z[:, nh + nkv:], rtol=1e-6, atol=1e-6)


def test_exp_inplace_is_accurate_and_clamps():
    """The vectorized exp used by swiglu (attention's C kernel evaluates the same polynomial): float32-accurate over the range that
    matters, only the requested slice touched, and no inf / NaN far outside it."""
    x = np.concatenate([np.linspace(-87, 87, 1001), [-1e4, 1e4, 0.0]]).astype(np.float32)
    got = x.copy()
    loops.exp_inplace(got, np.empty(x.size, np.int32), 0, 1001)
    want = np.exp(x[:1001].astype(np.float64))
    assert np.all(np.abs(got[:1001] - want) / want <= 2e-7 + 8e-8 * np.abs(x[:1001]))
    assert np.array_equal(got[1001:], x[1001:])
    loops.exp_inplace(got, np.empty(x.size, np.int32), 1001, 1004)
    assert np.isfinite(got[1001:]).all() and got[1001] < 1e-37 and got[1002] > 1e37 and got[1003] == 1.0


def attention_numpy(q, k, v, sinks, window, scale):
    """All positions at once: q [T, nh, hd], k/v [T, nkv, hd] from position 0."""
    T, nh, hd = q.shape
    group = nh // k.shape[1]
    out = np.zeros((T, nh, hd))
    for h in range(nh):
        s = q[:, h, :].astype(np.float64) @ k[:, h // group, :].T.astype(np.float64) * scale
        i, j = np.indices((T, T))
        mask = (j <= i) & ((window == 0) | (i - j < window))
        s = np.where(mask, s, -np.inf)
        s = np.concatenate([s, np.full((T, 1), sinks[h])], axis=1)
        p = np.exp(s - s.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        out[:, h, :] = p[:, :T] @ v[:, h // group, :]
    return out


@pytest.mark.parametrize("window,nh,nkv", [(0, 4, 2), (5, 4, 2), (127, 4, 2), (128, 4, 2), (129, 4, 2),
                                           (0, 6, 1), (9, 3, 3), (0, 16, 2), (200, 8, 1)])
def test_attention_with_sinks_and_windows_in_chunks(window, nh, nkv):
    """Prefill in uneven chunks through the cache (a ring for sliding windows) equals one pass."""
    T, hd = 300, 64
    q = rng.standard_normal((T, nh, hd)).astype(np.float32)
    k = rng.standard_normal((T, nkv, hd)).astype(np.float32)
    v = rng.standard_normal((T, nkv, hd)).astype(np.float32)
    sinks = rng.standard_normal(nh).astype(np.float32) * 2
    scale = np.float32(0.125)
    want = attention_numpy(q, k, v, sinks, window, scale)
    ring = window > 0
    cap = window if ring else T
    kc = np.zeros((nkv, cap, hd), np.float32)
    vc = np.zeros_like(kc)
    got = np.empty((T, nh, hd), np.float32)
    pos = 0
    for n in (1, 7, 130, 1, 3, 158):  # decode steps and prefills longer than the window
        out = np.empty((n, nh, hd), np.float32)
        loops.attention_sinks(q[pos:pos + n], k[pos:pos + n], v[pos:pos + n], kc, vc, pos, ring, window,
                              sinks, scale, out, *loops.attention_scratch(n, nh, nkv, hd))
        loops.kv_store(k[pos:pos + n], v[pos:pos + n], kc, vc, pos, ring)
        got[pos:pos + n] = out
        pos += n
    assert pos == T
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)
    # and bit for bit what one pass over all T tokens gives (keys are blocked by position,
    # not by call), so that decoding reproduces a prefill exactly
    one = np.empty((T, nh, hd), np.float32)
    loops.attention_sinks(q, k, v, np.zeros((nkv, window or T, hd), np.float32), np.zeros((nkv, window or T, hd),
                          np.float32), 0, ring, window, sinks, scale, one, *loops.attention_scratch(T, nh, nkv, hd))
    assert np.array_equal(got, one)


def test_route_topk_softmax_over_chosen():
    logits = rng.standard_normal((6, 9)).astype(np.float32)
    logits[2, 3] = logits[2, 5] = 10.0  # a tie: the lower expert comes first
    idx = np.empty((6, 4), np.int64)
    wts = np.empty((6, 4), np.float32)
    loops.route_topk(logits, 4, idx, wts)
    for t in range(6):
        order = np.argsort(-logits[t], kind="stable")[:4]
        assert list(idx[t]) == list(order)
        e = np.exp(logits[t, order] - logits[t, order].max())
        np.testing.assert_allclose(wts[t], e / e.sum(), rtol=1e-6)
    assert list(idx[2, :2]) == [3, 5]


def test_swiglu_clamps_and_adds_one():
    """Rows of interleaved gate / linear outputs, each with its expert's bias from the blob."""
    n, I = 5, 96  # I a multiple of 32, as quantizing the rows needs
    gu = rng.standard_normal((n, 2 * I)).astype(np.float32) * 6
    gu[0, :8] = [-200, 3, 50, -50, 7.5, 9, -0.0, 0]  # far below / above the clamps, and zeros
    biases = rng.standard_normal((2, 2 * I)).astype(np.float32)
    blob = biases.view(np.uint8).copy()  # two "experts" holding only their gate_up bias
    offs = np.zeros(6, np.int64)
    offs[loops.EXP_GU_BIAS] = 0
    expert_of = np.array([0, 1, 1, 0, 1], np.int64)
    out = np.empty((n, I), np.float32)
    z = (gu + biases[expert_of]).astype(np.float64)
    aq, ad = np.empty((n, I), np.int8), np.empty((n, I // 32), np.float32)
    loops.swiglu_rows(gu, blob, np.arange(2, dtype=np.int64), offs, expert_of, I, np.float32(7.0),
                      np.float32(1.702), out, np.empty((n, I), np.int32), True, aq, ad)
    g, l = np.minimum(z[:, 0::2], 7), np.clip(z[:, 1::2], -7, 7)
    np.testing.assert_allclose(out, g / (1 + np.exp(-1.702 * g)) * (l + 1), rtol=1e-5, atol=1e-5)
    # each row also quantized, as the down matrix takes it
    from edgeoss.kernels import dot
    want_q, want_d = dot.q8_quantize(out)
    assert np.array_equal(aq, want_q) and np.array_equal(ad, want_d)


def _expert_blob(H, I, E):
    """E random mxfp4 experts laid out as in the model file: (blob [E, stride], part offsets,
    per-expert parts (gate_up blocks, scales, bias, down blocks, scales, bias))."""
    from edgeoss.format.model_dir import ALIGN, PART_ALIGN, align_up
    blob_parts = []
    for e in range(E):
        gub, gus = quantize_mxfp4(rng.standard_normal((2 * I, H)) * 0.2)
        dnb, dns = quantize_mxfp4(rng.standard_normal((H, I)) * 0.2)
        gubias = rng.standard_normal(2 * I).astype(np.float32) * 0.1
        dnbias = rng.standard_normal(H).astype(np.float32) * 0.1
        blob_parts.append([gub, gus, gubias, dnb, dns, dnbias])
    offs, rel = [], 0
    for arr in blob_parts[0]:
        rel = align_up(rel, PART_ALIGN)
        offs.append(rel)
        rel += arr.nbytes
    stride = align_up(rel, ALIGN)
    blob = np.zeros((E, stride), np.uint8)
    for e in range(E):
        for off, arr in zip(offs, blob_parts[e]):
            blob[e, off:off + arr.nbytes] = np.ascontiguousarray(arr).view(np.uint8).reshape(-1)
    return blob, np.array(offs, np.int64), blob_parts


def _moe_reference(h, idx, wts, blob_parts):
    want = np.zeros(h.shape)
    for t in range(h.shape[0]):
        for s in range(idx.shape[1]):
            gub, gus, gubias, dnb, dns, dnbias = blob_parts[idx[t, s]]
            gu = dequantize_mxfp4(gub, gus) @ h[t] + gubias
            g, l = np.minimum(gu[0::2], 7), np.clip(gu[1::2], -7, 7)
            a = g / (1 + np.exp(-1.702 * g)) * (l + 1)
            want[t] += wts[t, s] * (dequantize_mxfp4(dnb, dns) @ a + dnbias)
    return want


def test_moe_groups_tokens_by_expert():
    """The sparse dispatch equals a dense per-token loop over the chosen experts."""
    H, I, E, T, k = 64, 96, 5, 7, 3
    blob, offs, blob_parts = _expert_blob(H, I, E)
    h = rng.standard_normal((T, H)).astype(np.float32)
    idx = np.array([rng.choice(E, k, replace=False) for _ in range(T)], np.int64)
    wts = rng.uniform(0.1, 1, (T, k)).astype(np.float32)
    want = _moe_reference(h, idx, wts, blob_parts)
    slots = np.arange(E, dtype=np.int64)
    scratch = loops.moe_scratch(T, H, I, E, k)
    # all tokens, one token (decoding) and two
    for rows in (slice(0, T), slice(0, 1), slice(3, 5)):
        for use_q8, tol in ((False, 1e-4), (True, 3e-2)):
            out = np.zeros((T, H), np.float32)[rows]
            loops.moe(h[rows], idx[rows], wts[rows], blob, slots, offs, H, I, use_q8,
                      np.float32(7.0), np.float32(1.702), out, *scratch)
            err = np.linalg.norm(out - want[rows]) / np.linalg.norm(want[rows])
            assert err < tol, (rows, use_q8, err)
    # a permuted slot table must fetch the same experts from their new rows
    perm = np.array([3, 0, 4, 1, 2], np.int64)
    moved = np.zeros_like(blob)
    moved[perm] = blob
    out2 = np.zeros((T, H), np.float32)
    loops.moe(h, idx, wts, moved, perm, offs, H, I, False,
              np.float32(7.0), np.float32(1.702), out2, *loops.moe_scratch(T, H, I, E, k))
    np.testing.assert_allclose(out2, want, rtol=1e-4, atol=1e-4)


def test_one_token_tiles_cover_every_row():
    """Decoding runs matrices in nearly equal tiles of at most about DECODE_TILE_ROWS rows,
    starting at multiples of 16, in counts that 1, 2, 4, 8 or 16 threads share evenly: every
    row is computed once, whatever the tiles, as the whole-matrix kernel does (prompts' panels too)."""
    from edgeoss.kernels import dot
    for rows, groups in ((16, 1), (100, 1), (2880, 1), (5120, 1), (201088, 1), (5760, 4), (2880, 4), (40, 3)):
        n = loops.decode_tiles(rows, groups)
        spans = [loops.tile_span(t, n, rows) for t in range(n)]
        assert spans[0][0] == 0 and all(a[0] + a[1] == b[0] for a, b in zip(spans, spans[1:]))
        assert all(r0 % 16 == 0 and nr >= 16 for r0, nr in spans) and sum(nr for _, nr in spans) == rows
        assert max(nr for _, nr in spans) <= loops.DECODE_TILE_ROWS + 16
        if rows * groups >= 16 * loops.DECODE_TILE_GRAIN:  # room for an even share
            assert n * groups % loops.DECODE_TILE_GRAIN == 0
    assert loops.decode_tiles(2880, 1) == 16 and loops.decode_tiles(5760, 4) == 12
    K = 64
    for R in (16, 1000, 2050, 20000):
        wq = rng.integers(-127, 128, (R, K // 32, 32)).astype(np.int8)
        wd = (np.full((R, K // 32), 0.01, np.float16)).view(np.uint16)
        for T in (1, 3, 9):
            xq, xd = dot.q8_quantize(rng.standard_normal((T, K)).astype(np.float32))
            out = np.full((T, R), np.nan, np.float32)
            loops.q8x_matmul(loops.KIND_Q8, wq, wd, xq, xd, out)
            np.testing.assert_array_equal(out, dot.matmul_q8_q8w(wq, wd, xq, xd))
    # experts: 4 of them with 2 * 1024 gate_up rows, in several tiles each for one token
    H, I, E, k = 64, 1024, 4, 4
    blob, offs, blob_parts = _expert_blob(H, I, E)
    h = rng.standard_normal((1, H)).astype(np.float32)
    idx, wts = np.array([[2, 0, 3, 1]], np.int64), np.full((1, k), 0.25, np.float32)
    out = np.zeros((1, H), np.float32)
    loops.moe(h, idx, wts, blob, np.arange(E, dtype=np.int64), offs, H, I, False, np.float32(7.0),
              np.float32(1.702), out, *loops.moe_scratch(1, H, I, E, k))
    want = _moe_reference(h, idx, wts, blob_parts)
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)


def test_sampling():
    logits = np.array([0.0, 3.0, 1.0, 2.9, -5.0], np.float32)
    assert loops.sample_token(logits, 0.0, 0, 1.0, 0.5) == 1
    # top_k 1 is greedy whatever the draw
    assert {loops.sample_token(logits, 1.0, 1, 1.0, u) for u in np.linspace(0, 0.999, 50)} == {1}
    # top_p small enough keeps only the best two (p1 ~ 0.45, p3 ~ 0.41)
    assert {loops.sample_token(logits, 1.0, 0, 0.8, u) for u in np.linspace(0, 0.999, 200)} == {1, 3}
    # frequencies follow softmax(logits / T)
    draws = np.array([loops.sample_token(logits, 0.7, 0, 1.0, u) for u in rng.random(20000)])
    p = np.exp(logits / 0.7 - (logits / 0.7).max())
    p /= p.sum()
    np.testing.assert_allclose(np.bincount(draws, minlength=5) / draws.size, p, atol=0.015)
    # a constraint's mask (-inf) is never drawn, even where it hides the best token
    masked = logits.copy()
    masked[[1, 3]] = -np.inf
    for top_p in (1.0, 0.9):
        assert {int(loops.sample_token(masked, 1.0, 0, top_p, u)) for u in np.linspace(0, 0.999, 200)} <= {0, 2, 4}
    assert loops.sample_token(masked, 0.0, 0, 1.0, 0.5) == 2


def test_importing_the_loops_starts_numbas_threads():
    """A cached plain loop that calls parallel ones, run as a process's first compiled call,
    crashed (a call to address 0) unless Numba's threading layer had been started: importing
    the kernels starts it, so scripts and tools can call the loops directly."""
    import subprocess
    import sys

    code = ("from numba.np.ufunc import parallel\n"
            "assert not parallel._is_initialized\n"
            "import edgeoss.kernels.loops\n"
            "assert parallel._is_initialized\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
