"""What `edgeoss bench` measures: prefill and decode speed, time to first token, memory, and how close decoding
comes to this machine's memory-bandwidth roofline (measured in the same run: it drifts)."""

from __future__ import annotations

import dataclasses
import resource
import statistics
import sys
import time

import numpy as np

from ..format import model_dir as fmt


def decode_bytes_per_token(files: fmt.ModelFiles) -> int:
    """Weight bytes one decoded token reads: every non-expert matrix and vector except the
    embedding (one row of it), plus k experts per layer."""
    c = files.config
    total = 0
    for name, t in files.tensors.items():
        if t["type"] == "mxfp4_experts":
            total += c.num_experts_per_tok * t["expert_bytes"]
        elif name == "embed":
            total += sum(p["nbytes"] for p in t["parts"].values()) // c.vocab_size
        else:
            total += sum(p["nbytes"] for p in t["parts"].values())
    return total


def peak_rss_bytes() -> int:
    """This process's peak resident memory. On Linux, the high-water mark of its own address
    space (VmHWM): ru_maxrss also counts the parent's memory at the fork before exec."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024


def run_concurrent(model, streams: int, prompt: int, gen: int, rng, trace=None) -> dict:
    """`streams` requests of `prompt` random tokens, submitted together and decoded greedily in
    shared forward passes (engine.scheduler), each on its own sequence and, with a routing
    trace, replaying its own sequence of it. Aggregate decode counts the tokens of the steps
    in which every stream was decoding; per stream, its tokens after the first over the time of
    the steps that made them.
    Between those steps a solo sequence (the next sequence of the trace) decodes one token, so
    the speedup compares the two in alternation, as the machine's speed drifts."""
    from .scheduler import Request, Scheduler
    vocab = model.config.vocab_size

    def tokens(n):
        return [int(t) for t in rng.integers(0, min(vocab, 199998), n)]

    seqs = [model.new_sequence() for _ in range(streams + 1)]
    if trace is not None:
        for i, seq in enumerate(seqs):
            model.force_routing(*trace[i % len(trace)], sequence=seq)
    solo = seqs.pop()
    solo_tok = int(np.argmax(model.prefill(tokens(prompt), solo)[0]))
    sched = Scheduler(model)
    t0 = time.perf_counter()
    reqs = [sched.add(Request(seq, tokens(prompt), max_tokens=gen, temperature=0, stop=[])) for seq in seqs]
    first, busy = {}, {}  # per request: when its first token came, time in the steps since
    all_decoding, steady_tokens, steady_time = False, 0, 0.0
    together, alone = [], []
    while sched.active:
        t1 = time.perf_counter()
        out = sched.step()
        now = time.perf_counter()
        for r, _ in out:
            if id(r) in first:
                busy[id(r)] = busy.get(id(r), 0.0) + now - t1
            first.setdefault(id(r), now)
        if all_decoding and len(out) == streams:
            steady_tokens += len(out)
            steady_time += now - t1
            together.append(now - t1)
            t2 = time.perf_counter()
            solo_tok = int(np.argmax(model.step(solo_tok, solo)))
            alone.append(time.perf_counter() - t2)
        elif len(first) == streams and len(out) == streams:
            all_decoding = True  # from the next step on, every step decodes one token of every stream
    per_stream = [(len(r.tokens) - 1) / busy[id(r)] for r in reqs if len(r.tokens) > 1]
    return {"concurrent": streams,
            "aggregate_decode_tokens_per_s": steady_tokens / steady_time if steady_tokens else float("nan"),
            "per_stream_decode_tokens_per_s": per_stream,
            "ttft_s": [first[id(r)] - t0 for r in reqs],
            "solo_decode_tokens_per_s_alternating": 1.0 / statistics.median(alone) if alone else float("nan"),
            "aggregate_speedup": (streams * statistics.median(alone) / statistics.median(together)
                                  if alone else float("nan"))}


# streaming benchmarks decode in blocks of this many tokens, a short sequential read of the
# disk before and after each
DISK_BLOCK_TOKENS = 16


def sequential_probe(files) -> float:
    """A plain sequential read's bytes/s now: the median of three 48 MiB spans
    (planner.sequential_read_rates; one the host happens to cache does not count)."""
    from ..memory import planner
    return statistics.median(planner.sequential_read_rates(files, nbytes=144 << 20, spans=3))


def run_bench(path, prompt: int = 512, gen: int = 128, threads: int | None = None, repeats: int = 3,
              seed: int = 0, context: int = 4096, memory=None, routing_trace=None, concurrent: int = 1,
              depth: int = 0, kv_cache: str = "f16") -> dict:
    """The figures of `edgeoss bench`. depth: decode (and prefill) after a context of that many
    tokens, as llama-bench's -d (prefilled once, then stepped back to for each repeat).
    concurrent > 1: also `concurrent` streams decoding together (run_concurrent)."""
    from ..memory import planner
    from ..kernels import dot
    from .model import load
    from .warmup import wait_compiled

    wait_compiled()  # the figures are the compiled loops' (a first run compiles them first)
    t_start = time.perf_counter()
    need = depth + prompt + gen
    model = load(path, context=max(context, need), threads=threads, memory=memory, kv_cache=kv_cache)
    files = model.files
    trace = None
    if routing_trace is not None:
        from ..memory.routing_trace import concatenated, load_trace
        trace = load_trace(routing_trace)
        model.force_routing(*concatenated(trace))
    cache = model.expert_cache
    vocab = model.config.vocab_size
    rng = np.random.default_rng(seed)
    ids = [int(t) for t in rng.integers(0, min(vocab, 199998), prompt)]
    context_ids = [int(t) for t in rng.integers(0, min(vocab, 199998), depth)]

    # cold: the first token of this process (Numba cache load, page faults on the weights)
    model.reset()
    model.forward(ids[:1])
    ttft_cold = time.perf_counter() - t_start

    # a streaming model's disk drifts (a shared virtual disk: 0.5-1.6 GB/s within minutes here):
    # its bandwidths are measured before the runs and after them
    disk_before = None
    if cache is not None:
        disk_before = planner.measure_disk_bandwidth(files)

    depth_s = None
    if depth:
        model.reset()
        t0 = time.perf_counter()
        model.forward(context_ids)
        depth_s = time.perf_counter() - t0
        model.sequence.checkpoint()  # each repeat steps back here

    prefill, decode, ttft = [], [], []
    hits = misses = disk = 0
    io_busy = io_wait = 0.0
    disk_blocks = []  # streaming: (bytes read, seconds reading, seconds decoding, sequential B/s around)
    for _ in range(repeats):
        if depth:
            model.sequence.rewind(context_ids + [0])  # back to exactly the depth's context
        else:
            model.reset()
        t0 = time.perf_counter()
        logits = model.forward(ids)
        t1 = time.perf_counter()
        tok = int(np.argmax(logits))
        prefill.append(prompt / (t1 - t0))
        ttft.append(t1 - t0)
        if gen:
            if cache is not None:
                cache.reset_counters()
            decode_s, done = 0.0, 0
            probe = sequential_probe(files) if cache is not None else None
            while done < gen:  # streaming: blocks of tokens between probes of the disk
                n = gen - done if cache is None else min(DISK_BLOCK_TOKENS, gen - done)
                read0, busy0 = (cache.bytes_read, cache.io_busy_s) if cache is not None else (0, 0.0)
                t2 = time.perf_counter()
                for _ in range(n):
                    tok = int(np.argmax(model.step(tok)))
                dt = time.perf_counter() - t2
                decode_s, done = decode_s + dt, done + n
                if cache is not None:
                    after = sequential_probe(files)
                    disk_blocks.append((cache.bytes_read - read0, cache.io_busy_s - busy0, dt, (probe + after) / 2))
                    probe = after
            decode.append(gen / decode_s)
            if cache is not None:
                hits, misses, disk = hits + cache.hits, misses + cache.misses, disk + cache.bytes_read
                io_busy, io_wait = io_busy + cache.io_busy_s, io_wait + cache.io_wait_s

    together = {}
    if concurrent > 1:
        together = run_concurrent(model, concurrent, prompt, gen, rng, trace)
    rss = peak_rss_bytes()  # before the bandwidth sweep allocates its buffer
    plan = model.plan
    # under a budget, a sweep buffer that still dwarfs the caches but not the budget
    bw = planner.read_bandwidth(nbytes=(1 << 30) if memory is None else (256 << 20), threads=model.threads)
    bpt = decode_bytes_per_token(files)
    dec = statistics.median(decode) if decode else float("nan")
    streamed = {}
    if cache is not None:
        if trace is not None:  # predict with the hit rate of the routing the run replayed
            planner.use_routing_trace(plan, [e for e, _ in trace], str(routing_trace), cache.policy_name)
        disk_bw = (disk_before + planner.measure_disk_bandwidth(files)) / 2
        planner.predict(plan, bw, disk_bw)
        decode_s = sum(gen / d for d in decode) if gen else 0.0
        read_rate = disk / decode_s if decode_s else float("nan")
        reading_rate = disk / io_busy if io_busy else float("nan")
        # the same plan fed the hit rate and the disk speed the decode met: checks the model of
        # the overlap apart from the probes' guess of a drifting disk's speed
        at_observed = None
        if io_busy:
            observed = dataclasses.replace(plan)
            observed.set_hit_rate(hits / max(1, hits + misses))
            at_observed = planner.predict(observed, bw, reading_rate).predicted_tokens_per_s
        # each block's reads against the sequential probes taken just before and after it: this
        # disk switches between speeds minutes apart, so only a comparison in time holds
        reading = [b / busy / seq for b, busy, _, seq in disk_blocks if busy > 0]
        decoding = [b / dt / seq for b, _, dt, seq in disk_blocks]
        tokens = max(1, gen * repeats)
        streamed = {"expert_hit_rate": hits / max(1, hits + misses), "predicted_hit_rate": plan.hit_rate,
                    "disk_bytes_per_token": disk / tokens,
                    "disk_bandwidth_bytes_per_s": plan.disk_bandwidth, "io_mode": cache.io_mode,
                    "predicted_decode_tokens_per_s": plan.predicted_tokens_per_s,
                    "predicted_decode_tokens_per_s_at_observed_disk": at_observed,
                    # the decode's reads: over the whole decode, and over the time they were in
                    # flight (a layer's misses are known only once its router has run: between
                    # the layers' reads the disk waits for the computing)
                    "disk_read_bytes_per_s_while_decoding": read_rate,
                    "disk_read_bytes_per_s_while_reading": reading_rate,
                    "disk_busy_fraction_of_decode": io_busy / decode_s if decode_s else float("nan"),
                    "disk_wait_s_per_token": io_wait / tokens,
                    # against a plain sequential read, block by block (median over the blocks)
                    "disk_sequential_bytes_per_s": statistics.median(seq for *_, seq in disk_blocks)
                    if disk_blocks else float("nan"),
                    "disk_read_fraction_of_sequential": statistics.median(reading) if reading else float("nan"),
                    "disk_decode_fraction_of_sequential": statistics.median(decoding) if decoding else float("nan"),
                    "disk_blocks": [{"read_bytes": b, "reading_s": busy, "decode_s": dt,
                                     "sequential_bytes_per_s": seq} for b, busy, dt, seq in disk_blocks]}
    return {
        "model": str(files.path), "preset": files.preset, "threads": model.threads,
        "kernels": f"{dot.BACKEND}" + (f"/{dot.simd_variant_name()}" if dot.BACKEND == "c" else ""),
        "prompt_tokens": prompt, "gen_tokens": gen, "repeats": repeats, "context": model.cache.capacity,
        "depth": depth, "depth_prefill_s": depth_s, "kv_cache": kv_cache,
        "prefill_tokens_per_s": statistics.median(prefill),
        "decode_tokens_per_s": dec,
        "prefill_runs": prefill, "decode_runs": decode,
        "ttft_cold_s": ttft_cold, "ttft_warm_s": statistics.median(ttft),
        "peak_rss_bytes": rss, "model_bytes": files.manifest["weights_bytes"],
        "bytes_per_token": bpt, "bandwidth_bytes_per_s": bw,
        "roofline_tokens_per_s": bw / bpt, "roofline_fraction": dec * bpt / bw,
        "memory_budget_bytes": plan.budget, "peak_rss_within_budget": rss <= plan.budget,
        "memory_plan": plan.verdict, "expert_slots_per_layer":
        plan.slots_per_layer, "routing_trace": None if routing_trace is None else str(routing_trace),
        **streamed, **together,
    }
