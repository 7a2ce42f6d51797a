#!/usr/bin/env python3
"""A long prompt with streamed experts: 512-token chunks against 2,048-token blocks run layer by
layer (Model._forward_long), each in a fresh process, alternating.

    python tools/bench_long_prompt.py MODEL --memory 14G --prompt 2048 \\
        [--routing-trace TRACE.npz] [--rounds 1] [--json]

Each run loads the model within the budget (`long_prefill` off, then on), replays the trace if
given (the experts are still really read and computed), runs a 1-token warm-up, then times the
forward pass of --prompt random tokens and reports seconds, tokens/s, the expert bytes read and
the seconds the pass stood waiting on the disk.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ONE_RUN = """
import json, sys, time
import numpy as np
from edgeoss.engine.model import load
from edgeoss.engine.warmup import wait_compiled
path, memory, n, blocks, trace = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1", sys.argv[5]
wait_compiled()
model = load(path, memory=memory, context=max(4096, n + 1), long_prefill=blocks)
if not model.plan.streaming:
    sys.exit(f"{path} fits all resident in {memory}: nothing streams, nothing to compare")
if trace:
    from edgeoss.memory.routing_trace import concatenated, load_trace
    model.force_routing(*concatenated(load_trace(trace)))
ids = [int(t) for t in np.random.default_rng(0).integers(0, min(model.config.vocab_size, 199998), n)]
model.forward(ids[:1])
model.reset()
cache = model.expert_cache
cache.reset_counters()
t0 = time.perf_counter()
model.forward(ids)
dt = time.perf_counter() - t0
print(json.dumps({"blocks": model.plan.long_prefill, "seconds": dt, "tokens_per_s": n / dt,
                  "expert_bytes_read": cache.bytes_read, "disk_wait_s": cache.io_wait_s}))
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--memory", required=True, help="a budget under which the experts stream (e.g. 14G)")
    ap.add_argument("--prompt", type=int, default=2048, help="prompt tokens (default 2048)")
    ap.add_argument("--routing-trace", default="", metavar="TRACE.npz")
    ap.add_argument("--rounds", type=int, default=1, help="pairs of runs, chunks then blocks (default 1)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    a = ap.parse_args(argv)
    runs = []
    for _ in range(a.rounds):
        for blocks in (False, True):
            out = subprocess.run([sys.executable, "-c", ONE_RUN, a.model, a.memory, str(a.prompt),
                                  "1" if blocks else "0", a.routing_trace],
                                 capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
            if out.returncode != 0:
                sys.stderr.write(out.stderr)
                return 1
            r = json.loads(out.stdout.strip().splitlines()[-1])
            r["asked_blocks"] = blocks
            runs.append(r)
            if not a.json:
                print(f"{'blocks' if r['blocks'] else 'chunks'}: {r['seconds']:.1f} s ({r['tokens_per_s']:.2f} tok/s), "
                      f"{r['expert_bytes_read'] / 1e9:.1f} GB of experts read, {r['disk_wait_s']:.1f} s waiting on "
                      "the disk", flush=True)
    if a.json:
        print(json.dumps({"model": a.model, "memory": a.memory, "prompt": a.prompt, "runs": runs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
