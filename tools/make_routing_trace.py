#!/usr/bin/env python3
"""Write a synthetic routing trace fitted to a recorded one (edgeoss/memory/synthetic_routing.py),
for a model that has no trace of its own, and show whether the fit can be trusted.

    python tools/make_routing_trace.py ../shared/routing/gpt-oss-20b-routing.npz \\
        --experts 128 --layers 36 --out routing-120b.npz

prints, before writing: the fitted parameters' range, then the expert cache's hit rates (LRU and
LFRU) on the recorded trace against a trace generated from the fit in the recorded trace's own
shape (the check that the model captures what a cache sees), then the hit rates of the trace
written. `edgeoss bench MODEL --routing-trace routing-120b.npz` replays it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgeoss.memory import cache_policy, synthetic_routing  # noqa: E402
from edgeoss.memory.routing_trace import load_trace  # noqa: E402


def hit_rates(seqs, num_experts: int, slots) -> dict:
    return {s: {p: round(cache_policy.simulate(seqs, s, p, num_experts=num_experts), 4) for p in ("lru", "lfru")}
            for s in slots}


def write_uniform(a) -> int:
    import numpy as np
    k = load_trace(a.trace)[0][0].shape[2]
    rng = np.random.default_rng(a.seed)
    out = [np.argsort(rng.random((a.tokens, a.layers, a.experts)), axis=-1)[..., :k].astype(np.uint8)
           for _ in range(a.sequences)]
    synthetic_routing.save_trace(a.out, out)
    slots = sorted({max(k, round(a.experts * f)) for f in (0.125, 0.25, 0.5)})
    report = {"written": {"path": a.out, "uniform": True, "hit_rates": hit_rates(out, a.experts, slots)}}
    print(json.dumps(report) if a.json else f"wrote {a.out}: uniform routing, {a.sequences} x {a.tokens} tokens, "
          f"hit rates {report['written']['hit_rates']}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trace", help="a recorded routing trace (.npz) to fit")
    ap.add_argument("--experts", type=int, default=128, help="experts a layer of the trace to write (default 128)")
    ap.add_argument("--layers", type=int, default=36, help="layers of the trace to write (default 36)")
    ap.add_argument("--sequences", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=512, help="tokens a sequence")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="the .npz to write")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    ap.add_argument("--uniform", action="store_true",
                    help="write uniform random routing instead (every expert equally likely, tokens "
                         "independent: the worst case for a cache); TRACE gives only k")
    a = ap.parse_args(argv)
    if a.uniform:
        return write_uniform(a)

    seqs = [e for e, _ in load_trace(a.trace)]
    E0 = max(int(s.max()) for s in seqs) + 1
    t0 = time.perf_counter()
    tty = sys.stderr.isatty() and not a.json  # progress on a terminal only

    def progress(layer):
        print(f"\rfitting layer {layer + 1}/{seqs[0].shape[1]}", end="\n" if layer + 1 == seqs[0].shape[1] else "",
              file=sys.stderr)

    model = synthetic_routing.fit(seqs, E0, seed=a.seed, progress=progress if tty else None)
    fit_s = time.perf_counter() - t0
    same_shape = model.generate([s.shape[0] for s in seqs], seed=a.seed + 1)
    k = seqs[0].shape[2]
    check_slots = [s for s in (8, 12, 16, 24) if k <= s < E0] or [k]
    scaled = model.scaled(a.experts, a.layers)
    out = scaled.generate([a.tokens] * a.sequences, seed=a.seed + 2)
    out_slots = sorted({max(k, round(a.experts * f)) for f in (0.125, 0.25, 0.375, 0.5, 0.75)})
    report = {
        "fitted_trace": str(a.trace), "fit_seconds": round(fit_s, 1),
        "keep": [round(float(v), 3) for v in model.keep], "recent": [round(float(v), 3) for v in model.recent],
        "beta": [round(float(v), 3) for v in model.beta],
        "check_recorded": hit_rates(seqs, E0, check_slots),
        "check_generated": hit_rates(same_shape, E0, check_slots),
        "written": {"path": a.out, "experts": a.experts, "layers": a.layers, "sequences": a.sequences,
                    "tokens": a.tokens, "top_quarter_share": round(float(scaled.popularity[:, :a.experts // 4]
                                                                         .sum(1).mean()), 4),
                    "hit_rates": hit_rates(out, a.experts, out_slots)},
    }
    synthetic_routing.save_trace(a.out, out, scaled)
    if a.json:
        print(json.dumps(report))
        return 0
    print(f"fitted {a.trace} ({len(seqs)} sequences, {E0} experts) in {fit_s:.0f} s")
    print("expert cache hit rates, recorded trace vs generated from the fit in its shape:")
    for s in check_slots:
        r, g = report["check_recorded"][s], report["check_generated"][s]
        print(f"  {s:3d} slots  LRU {r['lru']:.3f} vs {g['lru']:.3f}   LFRU {r['lfru']:.3f} vs {g['lfru']:.3f}")
    w = report["written"]
    print(f"wrote {a.out}: {a.sequences} sequences x {a.tokens} tokens, {a.layers} layers x {a.experts} experts "
          f"(top quarter of experts: {w['top_quarter_share']:.0%} of picks)")
    for s, r in w["hit_rates"].items():
        print(f"  {s:3d} slots  LRU {r['lru']:.3f}   LFRU {r['lfru']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
