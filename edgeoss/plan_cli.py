"""`edgeoss plan`: the memory plan for a model, with measured bandwidths and a speed prediction,
and optionally a routing trace replayed through every eviction policy."""

from __future__ import annotations

import json

from . import cache_policy as cp
from . import format as fmt
from . import planner

SIM_SLOTS = (8, 12, 16, 24)


def simulate_trace(path, slots=SIM_SLOTS, extra: int | None = None) -> dict:
    """{slots: {policy: hit rate}} for LRU, LFRU and Belady's optimum over a routing trace."""
    from .routing_trace import load_trace
    seqs = [e for e, _ in load_trace(path)]
    k = seqs[0].shape[2]
    wanted = sorted({s for s in slots if s >= k} | ({extra} if extra and extra >= k else set()))
    return {s: {p: cp.simulate(seqs, s, p) for p in ("lru", "lfru", "belady")} for s in wanted}


def main_plan(a) -> int:
    files = fmt.ModelFiles(a.model)
    from .kernels import loops  # noqa: F401  (the runtime measured is the one that will run)
    plan = planner.make_plan(files, a.memory, context=a.context)
    if not a.no_measure and plan.slots_per_layer:
        from .bench import read_bandwidth
        planner.predict(plan, read_bandwidth(256 << 20), planner.measure_disk_bandwidth(files))
    sim = None
    if a.simulate:
        sim = simulate_trace(a.simulate, extra=plan.slots_per_layer if plan.streaming else None)
    if a.json:
        d = plan.to_dict()
        if sim:
            d["simulation"] = {str(s): r for s, r in sim.items()}
        print(json.dumps(d))
    else:
        print(planner.format_plan(plan))
        if sim:
            print(f"hit rate over {a.simulate} (per-layer caches, persisting across sequences):")
            print("  slots/layer    LRU   LFRU  optimum (Belady)")
            for s, r in sim.items():
                mark = "  <- this plan" if s == plan.slots_per_layer else ""
                print(f"  {s:11d}  {r['lru']:.3f}  {r['lfru']:.3f}  {r['belady']:.3f}{mark}")
    return 0 if plan.slots_per_layer else 3
