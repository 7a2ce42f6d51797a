"""Synthetic routing traces (memory/synthetic_routing.py): valid traces, a fit that recovers what
it was fitted to, scaling to the 120b's shape, and the fitted 20b model's cache hit rates against
the recorded trace's (the check that makes a fitted 120b trace worth benchmarking with)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shared_dir

from edgeoss.memory import cache_policy
from edgeoss.memory import synthetic_routing as sr
from edgeoss.memory.routing_trace import load_trace

TRACE = shared_dir() / "routing" / "gpt-oss-20b-routing.npz"


def _model(E=16, L=2, keep=0.5, recent=0.3, beta=2.0, k=4, skew=1.0):
    p = np.arange(1, E + 1, dtype=np.float64) ** -skew
    pop = np.tile(p / p.sum(), (L, 1))
    return sr.RoutingModel(pop, np.full(L, keep), np.full(L, recent), np.full(L, beta), k)


def test_generated_sequences_are_valid_traces(tmp_path):
    m = _model(E=32, L=3)
    seqs = m.generate([70, 1, 200], seed=5)
    assert [s.shape for s in seqs] == [(70, 3, 4), (1, 3, 4), (200, 3, 4)]
    for s in seqs:
        assert s.dtype == np.uint8 and s.max() < 32
        assert (np.diff(np.sort(s, axis=-1), axis=-1) > 0).all()  # k distinct experts a token
    again = m.generate([70, 1, 200], seed=5)
    assert all((a == b).all() for a, b in zip(seqs, again))
    path = tmp_path / "t.npz"
    sr.save_trace(path, seqs, m)
    back = load_trace(path)
    assert len(back) == 3 and all((e == s).all() for (e, _), s in zip(back, seqs))


def test_statistics_move_with_the_parameters():
    lengths = [128] * 40
    lo = sr.layer_stats(_model(keep=0.1).generate(lengths, seed=1), 0)
    hi = sr.layer_stats(_model(keep=0.8).generate(lengths, seed=1), 0)
    assert hi[0] > lo[0] + 1.0  # consecutive overlap (of 4)
    topical = sr.layer_stats(_model(beta=0.05, recent=0.0, keep=0.0).generate(lengths, seed=1), 0)
    broad = sr.layer_stats(_model(beta=100.0, recent=0.0, keep=0.0).generate(lengths, seed=1), 0)
    assert topical[2] < broad[2] - 2  # distinct experts in 64 tokens


def test_fit_reproduces_the_statistics_and_hit_rates_it_was_fitted_to():
    source = _model(E=16, L=2, keep=0.35, recent=0.4, beta=1.5)
    seqs = source.generate([160] * 60, seed=3)
    fitted = sr.fit(seqs, 16, rounds=2, sample=(48, 160))
    again = fitted.generate([160] * 60, seed=4)
    for layer in range(2):
        want, got = sr.layer_stats(seqs, layer), sr.layer_stats(again, layer)
        assert abs(got[0] - want[0]) < 0.15 and abs(got[1] - want[1]) < 0.15 and abs(got[2] - want[2]) < 1.0
    for slots in (6, 8, 12):
        assert abs(cache_policy.simulate(again, slots, "lru", num_experts=16)
                   - cache_policy.simulate(seqs, slots, "lru", num_experts=16)) < 0.03


def test_scaled_keeps_the_popularity_curve():
    m = _model(E=32, L=24, skew=1.2)
    m.keep[:] = np.linspace(0.1, 0.4, 24)
    big = m.scaled(128, 36)
    assert big.popularity.shape == (36, 128) and np.allclose(big.popularity.sum(1), 1.0)
    assert (np.diff(big.popularity, axis=1) <= 1e-12).all()  # still sorted, most popular first
    # the top quarter of experts takes the same share of picks
    assert np.allclose(big.popularity[:, :32].sum(1), m.popularity[0, :8].sum(), atol=1e-9)
    assert big.keep[0] == m.keep[0] and big.keep[-1] == m.keep[-1] and big.keep.shape == (36,)
    seqs = big.generate([50], seed=0)
    assert seqs[0].shape == (50, 36, 4) and seqs[0].max() < 128
    with pytest.raises(ValueError, match="0-255"):
        m.scaled(300, 2).generate([3])


@pytest.mark.skipif(not TRACE.is_file(), reason="needs ../shared/routing (the recorded gpt-oss-20b trace)")
def test_fitted_20b_model_reproduces_the_recorded_cache_hit_rates():
    seqs = [e for e, _ in load_trace(TRACE)]
    fitted = sr.fit(seqs, 32, rounds=2, sample=(64, 160))
    gen = fitted.generate([s.shape[0] for s in seqs], seed=1)
    # measured: LRU 0.648/0.799/0.895/0.981 recorded, 0.675/0.815/0.890/0.972 generated
    for slots in (8, 12, 16, 24):
        for policy in ("lru", "lfru"):
            real = cache_policy.simulate(seqs, slots, policy)
            got = cache_policy.simulate(gen, slots, policy, num_experts=32)
            assert abs(got - real) < 0.04, (slots, policy, real, got)
    # and not merely because any skew would do: uniform routing is far off
    uniform = [np.argsort(np.random.default_rng(i).random((s.shape[0], 24, 32)), axis=-1)[..., :4].astype(np.uint8)
               for i, s in enumerate(seqs[:100])]
    assert cache_policy.simulate(uniform, 12, "lru", num_experts=32) < cache_policy.simulate(seqs, 12, "lru") - 0.3


@pytest.mark.skipif(not TRACE.is_file(), reason="needs ../shared/routing (the recorded gpt-oss-20b trace)")
def test_the_planners_120b_estimate_is_what_the_fitted_trace_gives():
    """`edgeoss plan` on a 128-expert model expects the hit rates of a 120b trace fitted to the 20b's
    routing (GPT_OSS_120B_HIT_RATE_ESTIMATE), not uniform routing's far lower ones."""
    from edgeoss.memory import planner
    seqs = [e for e, _ in load_trace(TRACE)]
    gen = sr.fit(seqs, 32, rounds=2, sample=(64, 160)).scaled(128, 36).generate([512] * 16, seed=0)
    for slots in (16, 27, 64):
        expected, source = planner.hit_rate(slots, 128, 4)
        assert cache_policy.simulate(gen, slots, "lfru", num_experts=128) == pytest.approx(expected, abs=0.02)
        assert expected > slots / 128 + 0.3 and "120b" in source
