"""`edgeoss plan`: the memory plan for a model, with measured bandwidths and a speed prediction,
and optionally a routing trace replayed through every eviction policy."""

from __future__ import annotations

import json

from ..format import model_dir as fmt
from ..memory import cache_policy as cp
from ..memory import planner
from .args import MODEL_HELP, add_kv_cache_arg, add_memory_arg, model_arg


def add_parser(sub) -> None:
    pl = sub.add_parser("plan", help="say, before loading, whether and how a model fits a memory budget")
    pl.add_argument("model", type=model_arg, help=MODEL_HELP)
    add_memory_arg(pl)
    pl.add_argument("--context", type=int, default=4096, help="KV-cache size in tokens (default 4096)")
    add_kv_cache_arg(pl)
    pl.add_argument("--parallel", type=int, default=1, metavar="N",
                    help="sequences running at once, each with its own KV cache (as `serve --parallel`)")
    pl.add_argument("--cache-ram", default=None, metavar="SIZE",
                    help="plan a server's prefix cache of this size (default with --parallel: half of what is "
                         "left free, at most 4 GiB)")
    pl.add_argument("--simulate", default=None, metavar="TRACE.npz",
                    help="replay a routing trace through each eviction policy and Belady's optimum")
    pl.add_argument("--routing-trace", default=None, metavar="TRACE.npz",
                    help="expect the hit rate the expert cache finds over this routing trace (as `bench "
                         "--routing-trace` replays it) instead of the built-in curve")
    pl.add_argument("--no-measure", action="store_true",
                    help="skip measuring memory and disk bandwidth (no speed prediction)")
    pl.add_argument("--json", action="store_true", help="print one JSON object")
    pl.set_defaults(func=run)


def run(a) -> int:
    files = fmt.ModelFiles(a.model)
    from ..kernels import loops  # noqa: F401  (the runtime measured is the one that will run)
    plan = planner.make_plan(files, a.memory, context=a.context, kv=a.kv_cache, sequences=a.parallel,
                             cache_ram=a.cache_ram, prefix_cache=a.parallel > 1 or a.cache_ram is not None)
    if a.routing_trace:
        from ..memory.routing_trace import load_trace
        planner.use_routing_trace(plan, [e for e, _ in load_trace(a.routing_trace)], a.routing_trace)
    if not a.no_measure and plan.slots_per_layer:
        planner.predict(plan, planner.read_bandwidth(256 << 20), planner.measure_disk_bandwidth(files))
    sim = None
    if a.simulate:
        sim = cp.simulate_trace(a.simulate, extra=plan.slots_per_layer if plan.streaming else None)
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
