"""Would prefetching experts help? Replays a routing trace through the expert cache's default
policy (LFRU, per layer) plus a prefetcher that guesses each layer's experts from the previous
layer's choices of the same token, and prints what the cache alone finds, what the prefetches
add, and what they cost in extra reads (docs/MEMORY.md, "Prefetch").

The guess: co-occurrence counts co[l][a, b] (tokens that chose a at layer l-1 and b at layer
l), learned online as the trace replays and starting from 1; expert b's score for a token is
the product over its k choices a at layer l-1 of co[l][a, b], normalised; experts not cached
whose k * probability reaches the threshold are prefetched, at most `--depth` per layer.

    python tools/simulate_prefetch.py ../shared/routing/gpt-oss-20b-routing.npz --slots 8 12 16
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from numba import njit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from edgeoss.memory import cache_policy as cp  # noqa: E402
from edgeoss.memory.routing_trace import concatenated, load_trace  # noqa: E402


@njit(cache=True)
def replay(ex, E, slots, depth, threshold, decay):
    """(cache hits, prefetch hits, prefetches) over ex [tokens, layers, k]."""
    T, L, K = ex.shape
    log_co = np.zeros((L, E, E))
    co = np.ones((L, E, E))
    slot_of = np.full((L, E), -1, np.int64)
    owner = np.full((L, slots), -1, np.int64)
    last = np.full((L, E), -1e30)
    crf = np.zeros((L, E))
    pinned = np.zeros(E, np.bool_)
    staged = np.zeros(E, np.bool_)
    missing = np.empty(K, np.int64)
    placed = np.empty(K, np.int64)
    ones = np.ones(K)
    score = np.empty(E)
    hits = phits = prefetched = 0
    for t in range(T):
        for l in range(L):
            staged[:] = False
            if l > 0 and depth > 0:
                for b in range(E):
                    s = 0.0
                    for j in range(K):
                        s += log_co[l, ex[t, l - 1, j], b]
                    score[b] = s
                p = np.exp(score - score.max())
                p *= K / p.sum()
                order = np.argsort(-p)
                n = 0
                for i in range(E):
                    b = order[i]
                    if n == depth or p[b] < threshold:
                        break
                    if slot_of[l, b] < 0:
                        staged[b] = True
                        prefetched += 1
                        n += 1
            nm = 0
            for j in range(K):
                e = ex[t, l, j]
                pinned[e] = True
                if slot_of[l, e] >= 0:
                    hits += 1
                else:
                    phits += staged[e]
                    missing[nm] = e
                    nm += 1
            cp.place(missing, nm, pinned, slot_of[l], owner[l], last[l], crf[l], float(t), cp.POLICY_LFRU,
                     decay, placed)
            cp.touch(ex[t, l], ones, K, float(t), last[l], crf[l], decay)
            for j in range(K):
                pinned[ex[t, l, j]] = False
            if l > 0:  # learn from this token: only its k x k pairs change
                for j in range(K):
                    a = ex[t, l - 1, j]
                    for i in range(K):
                        b = ex[t, l, i]
                        co[l, a, b] += 1.0
                        log_co[l, a, b] = np.log(co[l, a, b])
    return hits, phits, prefetched


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trace", help="routing trace .npz (../shared/routing format)")
    ap.add_argument("--slots", type=int, nargs="+", default=[8, 12, 16])
    ap.add_argument("--depth", type=int, default=4, help="prefetches per layer at most")
    ap.add_argument("--threshold", type=float, nargs="+", default=[0.3, 0.5])
    a = ap.parse_args()
    ex = concatenated(load_trace(a.trace))[0].astype(np.int64)
    uses = ex.size
    E = int(ex.max()) + 1
    decay = cp.decay_of(cp.DEFAULT_HALFLIFE)
    print(f"{ex.shape[0]} tokens, {ex.shape[1]} layers, top-{ex.shape[2]} of {E}; per token: expert reads "
          "(misses + prefetches), of which wasted")
    for slots in a.slots:
        h0, _, _ = replay(ex, E, slots, 0, 1.0, decay)
        print(f"{slots} slots/layer: cache alone hit rate {h0 / uses:.3f}, {(uses - h0) / ex.shape[0]:.1f} reads")
        for thr in a.threshold:
            h, ph, pf = replay(ex, E, slots, a.depth, thr, decay)
            reads = (uses - h - ph + pf) / ex.shape[0]
            print(f"  + prefetch (threshold {thr}): cache hits {h / uses:.3f}, ready in time {(h + ph) / uses:.3f}, "
                  f"{reads:.1f} reads, {(pf - ph) / ex.shape[0]:.1f} wasted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
