"""`edgeoss bench`: runs engine.benchmark and prints its report (or one JSON object)."""

from __future__ import annotations

import json

from ..engine.benchmark import DISK_BLOCK_TOKENS
from .args import MODEL_HELP, add_kv_cache_arg, add_memory_arg, model_arg


def format_report(r: dict) -> str:
    gb = 1e9
    return "\n".join([
        f"model {r['model']} ({r['preset']}), {r['threads']} threads, kernels {r['kernels']}",
        f"prefill {r['prompt_tokens']} tokens: {r['prefill_tokens_per_s']:.2f} tok/s (median of {r['repeats']})",
        f"decode {r['gen_tokens']} tokens: {r['decode_tokens_per_s']:.2f} tok/s",
        f"time to first token: cold {r['ttft_cold_s']:.2f} s (1-token prompt, new process), "
        f"warm {r['ttft_warm_s']:.2f} s ({r['prompt_tokens']}-token prompt)",
        f"decode reads {r['bytes_per_token'] / gb:.2f} GB/token; read bandwidth now "
        f"{r['bandwidth_bytes_per_s'] / gb:.1f} GB/s -> roofline {r['roofline_tokens_per_s']:.2f} tok/s; "
        f"decode at {100 * r['roofline_fraction']:.0f}% of it",
        f"peak RSS {r['peak_rss_bytes'] / gb:.2f} GB (model {r['model_bytes'] / gb:.2f} GB, mapped; "
        f"{r['context']}-token KV cache); budget {r['memory_budget_bytes'] / gb:.2f} GB: {r['memory_plan']}, "
        + ("stayed within it" if r["peak_rss_within_budget"] else "EXCEEDED IT"),
    ] + ([
        f"expert cache {r['expert_slots_per_layer']} slots/layer: decode hit rate {r['expert_hit_rate']:.3f}, "
        f"{r['disk_bytes_per_token'] / 1e6:.0f} MB/token from disk ({r['io_mode']}, "
        f"{r['disk_bandwidth_bytes_per_s'] / gb:.2f} GB/s); plan predicted {r['predicted_decode_tokens_per_s']:.2f} "
        "tok/s"] if "expert_hit_rate" in r else []) + ([
        f"disk while decoding: reads in flight {100 * r['disk_busy_fraction_of_decode']:.0f}% of the time at "
        f"{r['disk_read_bytes_per_s_while_reading'] / gb:.2f} GB/s ({100 * r['disk_read_fraction_of_sequential']:.0f}% "
        f"of a sequential read just before and after, median of blocks of {DISK_BLOCK_TOKENS} tokens; "
        f"sequential {r['disk_sequential_bytes_per_s'] / gb:.2f} GB/s); at that speed the plan predicts "
        f"{r['predicted_decode_tokens_per_s_at_observed_disk']:.2f} tok/s"]
        if r.get("predicted_decode_tokens_per_s_at_observed_disk") else []) + ([
        f"after a {r['depth']}-token context (prefilled in {r['depth_prefill_s']:.1f} s): the figures above"]
        if r["depth"] else []) + ([
        f"{r['concurrent']} streams together: aggregate decode {r['aggregate_decode_tokens_per_s']:.2f} tok/s "
        f"({r['aggregate_speedup']:.2f}x one stream decoding in alternation with it, "
        f"{r['solo_decode_tokens_per_s_alternating']:.2f} tok/s); per stream "
        + ", ".join(f"{x:.2f}" for x in r["per_stream_decode_tokens_per_s"])
        + "; time to first token " + ", ".join(f"{x:.2f}" for x in r["ttft_s"]) + " s"]
        if r.get("concurrent") else []))


def add_parser(sub) -> None:
    b = sub.add_parser("bench", help="prefill/decode speed, memory and the bandwidth roofline")
    b.add_argument("model", type=model_arg, help=MODEL_HELP)
    b.add_argument("--prompt", type=int, default=512, help="prompt tokens (default 512)")
    b.add_argument("--gen", type=int, default=128, help="decoded tokens (default 128)")
    b.add_argument("--repeats", type=int, default=3)
    b.add_argument("--threads", type=int, default=None)
    b.add_argument("--context", type=int, default=4096,
                   help="KV-cache size in tokens, as a default run has (default 4096)")
    b.add_argument("--routing-trace", default=None, metavar="FILE.npz",
                   help="force each token's experts from a recorded trace (real compute and reads)")
    b.add_argument("--depth", type=int, default=0, metavar="D",
                   help="prefill and decode after a D-token context (as llama-bench -d)")
    b.add_argument("--concurrent", type=int, default=1, metavar="N",
                   help="also decode N streams together (continuous batching); with --routing-trace each "
                        "replays its own sequence of the trace")
    add_memory_arg(b)
    add_kv_cache_arg(b)
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(func=run)


def run(args) -> int:
    from ..engine.benchmark import run_bench
    r = run_bench(args.model, prompt=args.prompt, gen=args.gen, threads=args.threads, repeats=args.repeats,
                  context=args.context, memory=args.memory, routing_trace=args.routing_trace,
                  concurrent=args.concurrent, depth=args.depth, kv_cache=args.kv_cache)
    print(json.dumps(r) if args.json else format_report(r))
    return 0
