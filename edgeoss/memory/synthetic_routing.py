"""Synthetic routing traces fitted to a recorded one, for models with no trace of their own (the
120b: 128 experts a layer, 36 layers).

Random weights route uniformly, which no trained model does, and an expert cache's hit rate
depends on three things a real trace has (measured on gpt-oss-20b's, ../shared/routing):
- per-layer popularity: a few experts take most picks (the top quarter of experts ~52 %);
- runs: consecutive tokens share experts (1.67 of 4 on average, against ~0.7 if drawn
  independently from the popularity);
- topics: a sequence keeps to a subset (24 of 32 experts a layer in its first 64 tokens).

The model, per layer:
- popularity p: the measured shares sorted from the most to the least popular expert, given as
  a curve over the normalized rank (rank + 0.5) / E, so it scales to any expert count (the
  assumption for the 120b: the same Lorenz curve over 128 experts, the top quarter of experts
  still taking the same share of picks);
- a sequence draws its own popularity q ~ Dirichlet(beta * E * p) (beta small: strong topics);
- token t keeps each of token t-1's experts with probability r, and fills the rest of its k
  distinct experts by drawing from q.
r and beta are fitted per layer by bisection on generated traces, r to the mean overlap of
consecutive tokens and beta to the mean number of distinct experts in a sequence's first 64
tokens. Co-occurrence within a token beyond what p and q give is not modelled; layers are
independent. docs/MEMORY.md shows how the fitted 20b model's cache hit-rate curve compares with
the real trace's (`tools/make_routing_trace.py` prints both).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

WINDOW = 64  # tokens over which a sequence's distinct experts are counted (the topic statistic)
RECENT = 8   # tokens back that a "recent" pick draws from
GAP = 4      # the distance of the second overlap statistic (tokens t and t - GAP)


@dataclass
class RoutingModel:
    """Fitted parameters: per layer, the popularity curve (sorted shares, summing to 1, of the
    fitted trace's expert count), keep and recent (probabilities) and beta (topic concentration)."""

    popularity: np.ndarray   # float64 [layers, E0], each row sorted descending, sums to 1
    keep: np.ndarray         # float64 [layers]
    recent: np.ndarray       # float64 [layers]
    beta: np.ndarray         # float64 [layers]
    k: int

    @property
    def layers(self) -> int:
        return self.popularity.shape[0]

    def scaled(self, num_experts: int, layers: int) -> "RoutingModel":
        """The model for another shape: popularity curves resampled at num_experts normalized
        ranks (interpolating the cumulative share, renormalized), layer l taking the fitted
        layer at the same relative depth; keep, recent and beta carried over."""
        src = np.round(np.linspace(0, self.layers - 1, layers)).astype(int)
        E0 = self.popularity.shape[1]
        pops = []
        for l in src:
            cum = np.concatenate([[0.0], np.cumsum(self.popularity[l])])
            at = np.interp(np.arange(num_experts + 1) / num_experts, np.arange(E0 + 1) / E0, cum)
            p = np.maximum(np.diff(at), 1e-12)
            pops.append(p / p.sum())
        return RoutingModel(np.array(pops), self.keep[src].copy(), self.recent[src].copy(), self.beta[src].copy(),
                            self.k)

    def generate(self, lengths, seed: int = 0) -> list[np.ndarray]:
        """One uint8 [tokens, layers, k] expert array per sequence length, expert ids
        permuted per layer (popularity rank is not identity)."""
        rng = np.random.default_rng(seed)
        E = self.popularity.shape[1]
        if E > 256:
            raise ValueError(f"a routing trace holds expert ids 0-255; this model has {E} experts")
        perm = np.stack([rng.permutation(E) for _ in range(self.layers)])
        out = []
        for n in lengths:
            ex = np.empty((int(n), self.layers, self.k), np.uint8)
            for l in range(self.layers):
                ranks = _layer_sequence(self, l, int(n), rng)
                ex[:, l, :] = perm[l][ranks]
            out.append(ex)
        return out


def _layer_sequence(model: RoutingModel, l: int, n: int, rng) -> np.ndarray:
    p = model.popularity[l]
    q = rng.dirichlet(np.maximum(model.beta[l] * p.size * p, 1e-3))
    return _draw(np.cumsum(q), n, model.k, model.keep[l], model.recent[l], rng.random((n, 8 * model.k + 16)))


@njit(cache=True)
def _draw(cum, n, k, keep, recent, u):
    """[n, k] distinct expert ranks: keep each of the previous token's with probability `keep`,
    fill each other pick with probability `recent` from the RECENT tokens before (a uniform
    pick among their experts) and otherwise from the cumulative distribution cum. u: uniform
    numbers, a row per token; a row that runs out takes the next free expert in rank order."""
    E = cum.shape[0]
    out = np.empty((n, k), np.int64)
    used = np.zeros(E, np.bool_)
    for t in range(n):
        c = 0
        j = 0
        if t > 0:
            for s in range(k):
                e = out[t - 1, s]
                if u[t, j] < keep:
                    out[t, c] = e
                    c += 1
                j += 1
        for s in range(c):
            used[out[t, s]] = True
        back = min(t, RECENT)
        while c < k:
            if j + 1 < u.shape[1]:
                if back > 0 and u[t, j] < recent:
                    i = min(int(u[t, j + 1] * back * k), back * k - 1)
                    e = out[t - 1 - i // k, i % k]
                else:
                    e = min(np.searchsorted(cum, u[t, j + 1] * cum[E - 1], side="right"), E - 1)
                j += 2
                if used[e]:
                    continue
            else:
                e = 0
                while used[e]:
                    e += 1
            used[e] = True
            out[t, c] = e
            c += 1
        for s in range(k):
            used[out[t, s]] = False
    return out


# -- statistics and fitting ----------------------------------------------------------------------

def layer_stats(sequences, layer: int) -> tuple[float, float, float]:
    """One layer's statistics over [tokens, layers, k] arrays: the mean overlap of the experts
    of tokens 1 and GAP apart, and the mean number of distinct experts in the first WINDOW
    tokens of sequences at least that long (nan without any)."""
    ov1 = ovg = n1 = ng = 0
    distinct = []
    for s in sequences:
        x = np.asarray(s[:, layer, :], np.int64)
        T = x.shape[0]
        if T > 1:
            ov1 += _overlaps(x, 1)
            n1 += T - 1
        if T > GAP:
            ovg += _overlaps(x, GAP)
            ng += T - GAP
        if T >= WINDOW:
            distinct.append(np.unique(x[:WINDOW]).size)
    return ov1 / max(n1, 1), ovg / max(ng, 1), float(np.mean(distinct)) if distinct else float("nan")


@njit(cache=True)
def _overlaps(x, gap):
    total = 0
    for t in range(gap, x.shape[0]):
        for a in range(x.shape[1]):
            for b in range(x.shape[1]):
                if x[t, a] == x[t - gap, b]:
                    total += 1
    return total


def popularity_curves(sequences, num_experts: int) -> np.ndarray:
    """float64 [layers, E]: each layer's pick shares, sorted descending."""
    allx = np.concatenate([np.asarray(s, np.int64) for s in sequences])
    pops = np.stack([np.bincount(allx[:, l].ravel(), minlength=num_experts) for l in range(allx.shape[1])])
    pops = pops.astype(np.float64) + 1e-9
    return -np.sort(-pops / pops.sum(1, keepdims=True), axis=1)


def fit(sequences, num_experts: int | None = None, rounds: int = 3, sample=(96, 160), seed: int = 0,
        progress=None) -> RoutingModel:
    """Fit a RoutingModel to recorded sequences ([tokens, layers, k] expert arrays): popularity
    measured; then, per layer, by bisection on generated sequences (`sample`: how many, how
    long), keep to the overlap of consecutive tokens, recent to the overlap GAP tokens apart and
    beta to the distinct experts of WINDOW tokens, `rounds` times over (they interact).
    progress(layer) is called after each layer."""
    seqs = [np.asarray(s) for s in sequences]
    E = int(num_experts or max(int(s.max()) for s in seqs) + 1)
    L, k = seqs[0].shape[1], seqs[0].shape[2]
    pop = popularity_curves(seqs, E)
    model = RoutingModel(pop, np.full(L, 0.3), np.full(L, 0.2), np.ones(L), k)
    lengths = [sample[1]] * sample[0]
    for layer in range(L):
        want = layer_stats(seqs, layer)
        one = RoutingModel(pop[layer:layer + 1], model.keep[layer:layer + 1], model.recent[layer:layer + 1],
                           model.beta[layer:layer + 1], k)

        def matched(param, stat, log=False):
            """Bisect one parameter so that statistic `stat` meets the trace's (increasing in it)."""
            lo, hi = (np.log(1e-3), np.log(1e3)) if log else (0.0, 1.0)
            for _ in range(14):
                mid = 0.5 * (lo + hi)
                param[0] = np.exp(mid) if log else mid
                if layer_stats(one.generate(lengths, seed), 0)[stat] < want[stat]:
                    lo = mid
                else:
                    hi = mid
            param[0] = np.exp(0.5 * (lo + hi)) if log else 0.5 * (lo + hi)

        for _ in range(rounds):
            matched(one.keep, 0)
            matched(one.recent, 1)
            if not np.isnan(want[2]):
                matched(one.beta, 2, log=True)  # weaker topics, more distinct experts
        if progress is not None:
            progress(layer)
    return model


def save_trace(path, sequences, model: RoutingModel | None = None) -> None:
    """Write sequences as a routing trace .npz (memory/routing_trace.py's format; weights equal),
    with the model's parameters alongside (fit_* arrays, ignored by readers)."""
    arrays = {}
    for i, ex in enumerate(sequences):
        arrays[f"seq{i:04d}_experts"] = ex
        arrays[f"seq{i:04d}_weights"] = np.full(ex.shape, 1.0 / ex.shape[2], np.float16)
    if model is not None:
        arrays.update(fit_popularity=model.popularity, fit_keep=model.keep, fit_recent=model.recent,
                      fit_beta=model.beta)
    np.savez_compressed(path, **arrays)
