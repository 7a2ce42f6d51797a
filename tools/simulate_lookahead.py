"""How close to Belady's optimum can an expert cache get? Replays a routing trace through the
default policy (LFRU, per layer) that is *told* the experts of the next `look` tokens, an oracle
no engine has: on a miss it evicts, among the cached experts this token does not need, the one
with the smallest LFRU score that is not used within the window, and if every one is, the one
used farthest ahead (Belady inside the window). look = 0 is LFRU; a window as long as the trace
is Belady's optimum. The gap that remains with a look-ahead of one token bounds what any
history-based policy could close (docs/MEMORY.md, "Eviction").

    python tools/simulate_lookahead.py ../shared/routing/gpt-oss-20b-routing.npz --slots 8 12 16
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from numba import njit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from edgeoss import cache_policy as cp  # noqa: E402
from edgeoss.routing_trace import concatenated, load_trace  # noqa: E402


@njit(cache=True)
def replay_layer(experts, num_experts, slots, decay, look):
    """Hits on one layer's choices experts [steps, k] with `look` steps of foresight."""
    T, k = experts.shape
    next_use = cp.next_use_steps(experts, num_experts)
    when = np.full(num_experts, T + 1, np.int64)
    cached = np.zeros(num_experts, np.bool_)
    need = np.zeros(num_experts, np.bool_)
    last = np.full(num_experts, -1e30)
    crf = np.zeros(num_experts)
    ones = np.ones(k)
    n_cached = 0
    hits = 0
    for t in range(T):
        for j in range(k):
            need[experts[t, j]] = True
        for j in range(k):
            e = experts[t, j]
            if cached[e]:
                hits += 1
                continue
            if n_cached == slots:
                victim, v_soon, v_key = -1, True, 0.0
                for c in range(num_experts):
                    if not cached[c] or need[c]:
                        continue
                    soon = when[c] - t <= look
                    # outside the window: lowest LFRU score; inside: farthest next use
                    key = -float(when[c]) if soon else cp._score(cp.POLICY_LFRU, c, float(t), last, crf, decay)
                    if victim < 0 or (v_soon and not soon) or (soon == v_soon and key < v_key):
                        victim, v_soon, v_key = c, soon, key
                cached[victim] = False
                n_cached -= 1
            cached[e] = True
            n_cached += 1
        cp.touch(experts[t], ones, k, float(t), last, crf, decay)
        for j in range(k):
            when[experts[t, j]] = next_use[t, j]
            need[experts[t, j]] = False
    return hits


def hit_rate(sequences, slots: int, look: int, halflife: float = cp.DEFAULT_HALFLIFE) -> float:
    """Hit rate over routing sequences (uint8 [tokens, layers, k] each), replayed one after
    another through per-layer caches that persist between them (as `cache_policy.simulate`)."""
    ex = np.concatenate([np.asarray(s) for s in sequences]).astype(np.int64)
    E = int(ex.max()) + 1
    hits = sum(replay_layer(np.ascontiguousarray(ex[:, l]), E, slots, cp.decay_of(halflife), look)
               for l in range(ex.shape[1]))
    return hits / ex.size


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trace", help="routing trace .npz (../shared/routing format)")
    ap.add_argument("--slots", type=int, nargs="+", default=[8, 12, 16])
    ap.add_argument("--look", type=int, nargs="+", default=[0, 1, 2, 4, 8, 32],
                    help="tokens of foresight (0: LFRU itself)")
    a = ap.parse_args()
    seqs = [ex for ex, _ in load_trace(a.trace)]
    print("hit rate per layer; columns: tokens the policy is told ahead, then Belady's optimum")
    print("slots  " + "  ".join(f"look {n:<3d}" for n in a.look) + "  belady")
    for slots in a.slots:
        rates = [hit_rate(seqs, slots, n) for n in a.look]
        opt = cp.simulate(seqs, slots, "belady")
        print(f"{slots:5d}  " + "  ".join(f"{r:8.3f}" for r in rates) + f"  {opt:6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
