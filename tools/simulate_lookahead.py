"""How close to Belady's optimum can an expert cache get? Replays a routing trace through the
default policy (LFRU, per layer) that is *told* the experts of the next `look` tokens, an oracle
no engine has (`cache_policy.foresight_layer`). look = 0 is LFRU; a window as long as the trace
is Belady's optimum. The gap that remains with a look-ahead of one token bounds what any
history-based policy could close (docs/MEMORY.md, "Eviction").

    python tools/simulate_lookahead.py ../shared/routing/gpt-oss-20b-routing.npz --slots 8 12 16
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from edgeoss.memory import cache_policy as cp  # noqa: E402
from edgeoss.memory.routing_trace import concatenated, load_trace  # noqa: E402


def hit_rate(sequences, slots: int, look: int, halflife: float = cp.DEFAULT_HALFLIFE) -> float:
    """Hit rate over routing sequences (uint8 [tokens, layers, k] each), replayed one after
    another through per-layer caches that persist between them (as `cache_policy.simulate`)."""
    ex = np.concatenate([np.asarray(s) for s in sequences]).astype(np.int64)
    E = int(ex.max()) + 1
    hits = sum(cp.foresight_layer(np.ascontiguousarray(ex[:, l]), E, slots, cp.decay_of(halflife), look)
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
