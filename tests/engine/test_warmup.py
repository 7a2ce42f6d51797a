"""A first run without the wait for Numba: the NumPy loops (kernels/numpy_loops.py) give the
compiled loops' results, and a background process compiles those, after which the engine
switches to them (engine/warmup.py)."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import reference
from edgeoss.engine import warmup
from edgeoss.engine.model import load
from edgeoss.kernels import loops, numpy_loops
from test_model import BOUNDS, chunked_logits, reference_model, token_ids  # noqa: F401 (a fixture)


@pytest.mark.parametrize("kv", ["f16", "f32", "q8"])
@pytest.mark.parametrize("preset", ["bf16", "q8", "q4"])
@pytest.mark.parametrize("name", ["tiny-s0", "odd-s1"])
def test_numpy_loops_match_the_reference_and_the_compiled_loops(converted, reference_model, monkeypatch,
                                                                name, preset, kv):
    """Every matrix kind and KV cache type (odd-s1's sliding window of 5 is shorter than the
    sequence: the ring wraps). Against the float64 reference: the compiled loops' bounds. Against
    the compiled loops: float32 rounding where activations stay float32 (bf16); the q8 / q4
    presets quantize activations to int8 before each matrix, where rounding differences of
    1e-7 flip some values by a quantization step (as does a q8 KV cache), so there only the
    reference bound applies."""
    cfg, w, ids, _, _ = reference_model[name]
    model = load(converted(name, preset), kv_cache=kv)
    monkeypatch.setenv("EDGEOSS_JIT", "wait")
    assert warmup.current_loops() is loops
    compiled = model.logits(ids)
    monkeypatch.setenv("EDGEOSS_JIT", "numpy")
    assert warmup.current_loops() is numpy_loops
    got = model.logits(ids)
    err = reference.rel_l2(got, reference.forward(cfg, w, ids, routing=model.last_routing))
    moved = reference.rel_l2(got, compiled)
    print(f"{name} {preset} {kv}: NumPy loops: relative L2 {err:.4f} to the reference, {moved:.1e} to compiled")
    assert err <= BOUNDS[preset]
    if preset == "bf16" and kv != "q8":
        assert moved < 1e-4  # the compiled exp() is a polynomial within 1.1e-6 of NumPy's


@pytest.mark.parametrize("name", ["tiny-s0", "odd-s1"])
def test_numpy_loops_decode_through_the_cache_and_batch(converted, monkeypatch, name):
    """Chunks, single steps past the sliding window's ring and several sequences in one pass
    reproduce one prefill on the NumPy loops too: to rounding (the compiled loops are equal to
    the bit by design; NumPy's summation order follows the arrays' shapes, which moves these
    random 2-layer models' logits by up to 3e-5, a 700th of the bf16 bound)."""
    monkeypatch.setenv("EDGEOSS_JIT", "numpy")
    model = load(converted(name, "bf16"))  # float32 activations: equal to rounding (see above)
    ids = token_ids(model.config.vocab_size, 30, seed=5)
    full = model.logits(ids)
    assert reference.rel_l2(chunked_logits(model, ids), full) < 1e-4
    a, b = model.new_sequence(), model.new_sequence()
    model.forward(ids[:12], sequence=a)
    both = model.forward_batch([(a, ids[12:13]), (b, ids[:7])])
    assert reference.rel_l2(both[0], full[12]) < 1e-4 and reference.rel_l2(both[1], full[6]) < 1e-4


def test_numpy_sampling_draws_what_the_compiled_sampler_draws():
    rng = np.random.default_rng(0)
    for case in range(300):
        logits = (rng.standard_normal(5000) * rng.choice([0.1, 3.0, 30.0])).astype(np.float32)
        temperature = float(rng.choice([0.0, 0.3, 1.0, 2.0]))
        top_k = int(rng.choice([0, 1, 7, 100, 10000]))
        top_p = float(rng.choice([1.0, 0.95, 0.5, 0.01]))
        u = float(rng.random())
        want = loops.sample_token(logits, temperature, top_k, top_p, u)
        assert numpy_loops.sample_token(logits, temperature, top_k, top_p, u) == want, case


def test_a_first_run_starts_on_numpy_and_switches_once_compiled(converted, tmp_path):
    """With an empty Numba cache: the first tokens come at once from the NumPy loops while a
    background process compiles; then the engine runs compiled code, and the tokens are the
    ones a compiled run gives throughout. The next process finds the compiled code at once."""
    path = converted("tiny-s0", "bf16")  # float32 activations: the same greedy tokens on both loops
    want = list(load(path).generate(token_ids(1024, 9, seed=1), max_tokens=8, temperature=0, stop=[]))
    script = textwrap.dedent(f"""
        import json, time
        from edgeoss.engine import warmup
        from edgeoss.engine.model import load
        model = load({str(path)!r})
        ids = {token_ids(1024, 9, seed=1)!r}
        t0 = time.perf_counter()
        first = list(model.generate(ids, max_tokens=8, temperature=0, stop=[]))
        dt = time.perf_counter() - t0
        before = warmup.current_loops().__name__
        warmup.wait_compiled()
        after = warmup.current_loops().__name__
        again = list(model.generate(ids, max_tokens=8, temperature=0, stop=[]))
        print(json.dumps(dict(first=first, seconds=dt, before=before, after=after, again=again,
                              marker=warmup.marker_path().exists())))
    """)
    env = dict(os.environ, EDGEOSS_JIT="background", NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert "compiling kernels in the background (first run only" in run.stderr
    assert "switching to them" in run.stderr
    assert got["before"] == "edgeoss.kernels.numpy_loops" and got["after"] == "edgeoss.kernels.loops"
    assert got["marker"] and got["first"] == want and got["again"] == want
    assert got["seconds"] < 30  # no compile in the way (it alone takes longer: see BENCHMARKS.md)
    second = subprocess.run([sys.executable, "-c", script.replace("warmup.wait_compiled()", "")], env=env,
                            capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    assert "compiling" not in second.stderr
    assert json.loads(second.stdout.strip().splitlines()[-1])["before"] == "edgeoss.kernels.loops"
