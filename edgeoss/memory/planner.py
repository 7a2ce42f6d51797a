"""The memory planner: before anything loads, decide what stays resident, how many expert cache
slots each layer gets, and whether the model fits a memory budget at all.

The budget covers the whole process's resident memory (RSS): the Python runtime and compiled
kernels as they are when the plan is made, the weights kept in memory (attention, router,
norms, lm_head; embedding rows are read from the file on demand), the KV cache for the planned
context, the work buffers, and the expert cache. Everything the engine allocates is sized here,
so the process stays under the budget; `edgeoss bench --memory` measures that it does.
"""

from __future__ import annotations

import mmap
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from math import comb

import numpy as np

from ..errors import EdgeossError
from ..format import model_dir as fmt
from .workspace import DEFAULT_KV, LONG_PREFILL, PREFILL_CHUNK, kv_bytes, long_prefill_bytes, work_bytes

GiB = 1 << 30
MiB = 1 << 20
# Room for what the plan cannot size: Python objects, thread stacks, small temporaries, the
# tokenizer's tables, the allocator's slack. Measured above the planned parts (the process's RSS
# at plan time counted): 20b decode under a budget ~60 MiB; a 32k-token prompt on the 20b 198 MiB
# (peak 12.02 GiB against 11.95 planned with 128 MiB here), which this margin now covers.
RUNTIME_MARGIN = 256 * MiB
# Left to the OS and other programs when no budget is given: 10% of RAM, at least 1 GiB.
HEADROOM_FRACTION, HEADROOM_MIN = 0.10, 1 * GiB
# The most a server keeps of idle sequences for their prefixes unless told (--cache-ram)
DEFAULT_CACHE_RAM = 4 * GiB
# Fraction of the memory-bandwidth roofline decoding reaches here, used to predict speed: the
# median of the 8 q8 runs of BENCHMARKS.md's rounds 7-8 (0.73-0.98) since the 256-row decode
# tiles and huge pages (0.70 before them).
DECODE_EFFICIENCY = 0.85

# Hit rate of the default policy (LFRU, edgeoss.cache_policy) against slots per layer 4..32,
# replayed over the real routing of gpt-oss-20b (../shared/routing, 125,771 tokens). Random
# weights route uniformly and would hit far less: this is what the real model does.
GPT_OSS_20B_HIT_RATE = (0.4309, 0.5134, 0.5793, 0.6361, 0.6861, 0.7303, 0.7687, 0.8023, 0.8316, 0.8568,
                        0.8787, 0.8976, 0.914, 0.9279, 0.9399, 0.9501, 0.9588, 0.9663, 0.9727, 0.9782,
                        0.9829, 0.9869, 0.9902, 0.9929, 0.9952, 0.9971, 0.9984, 0.9994, 0.9999)


# No recorded routing of gpt-oss-120b exists here. Its estimate: LFRU's hit rate at 4, 8, ..., 128
# slots per layer over the synthetic 120b trace fitted to gpt-oss-20b's real routing
# (`tools/make_routing_trace.py ../shared/routing/gpt-oss-20b-routing.npz --experts 128 --layers
# 36`: 64 sequences of 512 tokens, docs/MEMORY.md "Routing for a model without a trace"). Its
# runs decoded within 25 % of the prediction made with it (BENCHMARKS.md, 2026-12-03 night).
GPT_OSS_120B_HIT_RATE_ESTIMATE = (0.3583, 0.5088, 0.5898, 0.6472, 0.6919, 0.7272, 0.7563, 0.7827, 0.8053, 0.8237,
                                  0.8391, 0.853, 0.8662, 0.8788, 0.8909, 0.9026, 0.9137, 0.9242, 0.9341, 0.9434,
                                  0.952, 0.9599, 0.9671, 0.9736, 0.9792, 0.9841, 0.9883, 0.9918, 0.9945, 0.9967,
                                  0.9982, 0.999)


class MemoryBudgetError(EdgeossError):
    """The model cannot run within the memory budget."""


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": MiB, "mb": MiB, "mib": MiB,
          "g": GiB, "gb": GiB, "gib": GiB, "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40}


def parse_size(text: str | int | float) -> int:
    """Bytes from "8G", "8 GB", "6.5GiB", "512M" or a plain number of bytes. K/M/G/T are powers
    of 1024 whether written G, GB or GiB, as RAM is sold ("a 16 GB laptop")."""
    if isinstance(text, (int, float)):
        n = int(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
        if not m or m.group(2).lower() not in _UNITS:
            raise ValueError(f"cannot read {text!r} as a memory size: write e.g. 8G, 6.5GB or 512M")
        n = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if n <= 0:
        raise ValueError(f"a memory budget must be positive; got {text!r}")
    return n


def gb(n: float) -> str:
    return f"{n / GiB:.2f} GiB" if abs(n) >= 0.1 * GiB else f"{n / MiB:.1f} MiB"


def default_budget() -> tuple[int, str]:
    """What this machine can spare now: available memory less headroom for everything else."""
    import psutil
    vm = psutil.virtual_memory()
    headroom = max(HEADROOM_MIN, int(HEADROOM_FRACTION * vm.total))
    return max(0, vm.available - headroom), (f"available memory {gb(vm.available)} less {gb(headroom)} "
                                             "headroom (set one with --memory)")


def process_rss() -> int:
    import psutil
    return psutil.Process().memory_info().rss


def hit_rate(slots: int, num_experts: int, k: int) -> tuple[float, str]:
    """Expected fraction of expert uses found in a cache of `slots` per layer, and where the
    figure comes from: gpt-oss-20b's measured curve for 32 experts, the estimate for gpt-oss-120b
    (GPT_OSS_120B_HIT_RATE_ESTIMATE) for 128, uniform routing (slots / experts) for others."""
    if slots >= num_experts:
        return 1.0, "every expert resident"
    if num_experts == 32 and k == 4:
        return GPT_OSS_20B_HIT_RATE[slots - 4], "gpt-oss-20b's routing, measured"
    if num_experts == 128 and k == 4:
        rate = float(np.interp(slots, np.arange(4, 129, 4), GPT_OSS_120B_HIT_RATE_ESTIMATE))
        return rate, (f"estimated for gpt-oss-120b from gpt-oss-20b's routing; uniform routing, the worst "
                      f"case, would give {slots / num_experts:.2f}")
    return slots / num_experts, "uniform routing"


@dataclass
class MemoryPlan:
    model: str
    budget: int
    budget_source: str
    context: int
    runtime: int            # the process as it is now (interpreter, kernels) + margin
    resident_weights: int   # attention, router, norms, lm_head
    kv_cache: int
    work: int               # work buffers of a prefill chunk, logits, tables
    expert_bytes: int       # one expert's slot (aligned)
    layers: int
    experts_per_layer: int
    experts_per_token: int
    slots_per_layer: int    # experts_per_layer when everything is resident; 0 when it does not fit
    floor: int              # smallest budget that runs at all
    all_resident: int       # smallest budget with every expert in memory
    active_bytes_per_token: int  # weight bytes a decoded token reads from memory
    sequences: int = 1      # sequences running at once, each with its own KV cache (kv_cache counts them all)
    prefix_cache: int = 0   # idle sequences kept for their prefixes (--cache-ram)
    prefix_cache_source: str = "none"
    long_prefill: bool = False  # streaming: long prompts run in blocks of LONG_PREFILL tokens (work counts it)
    hit_rate: float = 1.0
    hit_rate_source: str = "every expert resident"
    disk_bytes_per_token: float = 0.0
    memory_bandwidth: float | None = None
    disk_bandwidth: float | None = None
    predicted_tokens_per_s: float | None = None
    notes: list = field(default_factory=list)

    def set_hit_rate(self, rate: float, source: str | None = None) -> None:
        """The expected hit rate of the expert cache (and where it comes from), and the disk bytes
        a token reads at it."""
        self.hit_rate = rate
        if source is not None:
            self.hit_rate_source = source
        self.disk_bytes_per_token = (1 - rate) * self.experts_per_token * self.layers * self.expert_bytes

    @property
    def fixed(self) -> int:
        reserved = self.prefix_cache if self.prefix_cache_source == "--cache-ram" else 0
        return self.runtime + self.resident_weights + self.kv_cache + self.work + reserved

    @property
    def expert_cache(self) -> int:
        return self.slots_per_layer * self.layers * self.expert_bytes

    @property
    def streaming(self) -> bool:
        return 0 < self.slots_per_layer < self.experts_per_layer

    @property
    def verdict(self) -> str:
        if self.slots_per_layer == 0:
            return "does not fit"
        return "fits with streaming" if self.streaming else "fits all resident"

    def require_fits(self) -> None:
        if self.slots_per_layer == 0:
            raise MemoryBudgetError(
                f"{self.model} needs at least {gb(self.floor)} to run with a {self.context}-token context"
                + (f" for each of {self.sequences} sequences" if self.sequences > 1 else "")
                + f" (resident weights {gb(self.resident_weights)}, KV cache {gb(self.kv_cache)}, work buffers "
                f"{gb(self.work)}, runtime {gb(self.runtime)}, "
                + (f"prefix cache {gb(self.prefix_cache)}, " if self.prefix_cache_source == "--cache-ram" else "")
                + f"and one token's {self.experts_per_token} experts "
                f"per layer {gb(self.experts_per_token * self.layers * self.expert_bytes)}); the budget is "
                f"{gb(self.budget)} ({self.budget_source}). Give more with --memory, or a shorter --context"
                + (", fewer parallel sequences or a smaller --cache-ram." if self.sequences > 1 or self.prefix_cache
                   else "."))

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(verdict=self.verdict, streaming=self.streaming, expert_cache=self.expert_cache, fixed=self.fixed)
        return d


def streaming_work(cfg, context: int) -> int:
    """Work memory a plan adds when its experts stream: the arrays that run a long prompt in
    blocks of LONG_PREFILL tokens (workspace.long_prefill_arrays), for contexts longer than a chunk."""
    return long_prefill_bytes(cfg) if context > PREFILL_CHUNK else 0


def make_plan(files: fmt.ModelFiles, memory: int | str | None = None, context: int = 4096,
              runtime: int | None = None, kv: str = DEFAULT_KV, sequences: int = 1,
              cache_ram: int | str | None = None, prefix_cache: bool = False,
              long_prefill: bool | None = None) -> MemoryPlan:
    """The plan for running `files` in `memory` (bytes or a size string; None: default_budget)
    with `sequences` KV caches of `context` positions each (`kv`: their type). runtime: the
    process's resident bytes before the model loads (default: measured now, plus
    RUNTIME_MARGIN). With prefix_cache (a server), idle sequences are kept in `cache_ram`
    (reserved like the rest), or by default in what the plan leaves free: half of it, at most
    DEFAULT_CACHE_RAM (none when the experts stream: they need every byte). long_prefill: whether
    a streaming plan runs long prompts in blocks (Model._forward_long; None: when it costs at
    most one expert slot a layer)."""
    if sequences < 1:
        raise ValueError(f"sequences must be at least 1; got {sequences}")
    cfg = files.config
    if memory is None:
        budget, source = default_budget()
    else:
        budget, source = parse_size(memory), "--memory"
    context = max(1, min(context, cfg.max_position_embeddings))
    resident = 0
    expert = None
    for name, t in files.tensors.items():
        if t["type"] == "mxfp4_experts":
            expert = t
        elif name != "embed":
            resident += sum(fmt.align_up(p["nbytes"], fmt.ALIGN) for p in t["parts"].values())
    L, E, k = cfg.num_hidden_layers, expert["count"], cfg.num_experts_per_tok
    stride = expert["stride"]
    kv_total = sequences * kv_bytes(cfg, context, kv)
    work = work_bytes(cfg, min(PREFILL_CHUNK, context), context)
    run = (process_rss() + RUNTIME_MARGIN) if runtime is None else runtime
    reserved = parse_size(cache_ram) if (prefix_cache and cache_ram is not None) else 0
    fixed = run + resident + kv_total + work + reserved
    all_res = fixed + E * L * stride
    floor = fixed + k * L * stride
    # streaming, a long prompt runs in blocks layer by layer if their arrays fit beside the
    # smallest cache and, unless asked, cost at most one expert a layer (the 120b: 0.4; a
    # model with tiny experts would give up many slots for it)
    extra = streaming_work(cfg, context)
    blocks = (budget < all_res and extra > 0 and budget >= floor + extra
              and (extra <= L * stride if long_prefill is None else long_prefill))
    if blocks:
        work, fixed = work + extra, fixed + extra
    slots = E if budget >= all_res else (0 if budget < floor else min(E - 1, (budget - fixed) // (L * stride)))
    embed_row = sum(p["nbytes"] for p in files.tensors["embed"]["parts"].values()) // cfg.vocab_size
    plan = MemoryPlan(model=str(files.path), budget=budget, budget_source=source, context=context, runtime=run,
                      resident_weights=resident, kv_cache=kv_total, work=work, expert_bytes=stride, layers=L,
                      experts_per_layer=E, experts_per_token=k, slots_per_layer=int(slots), floor=floor,
                      all_resident=all_res,
                      active_bytes_per_token=resident + embed_row + k * L * expert["expert_bytes"],
                      sequences=sequences, long_prefill=bool(blocks))
    if prefix_cache:
        if reserved:
            plan.prefix_cache, plan.prefix_cache_source = reserved, "--cache-ram"
        else:
            spare = 0 if plan.streaming or not slots else budget - (fixed + plan.expert_cache)
            plan.prefix_cache = int(max(0, min(DEFAULT_CACHE_RAM, spare // 2)))
            plan.prefix_cache_source = "half of what the plan leaves free"
    if slots:
        plan.set_hit_rate(*hit_rate(int(slots), E, k))
    else:
        plan.hit_rate_source = "none: the model does not fit"
    return plan


def use_routing_trace(plan: MemoryPlan, sequences, name: str, policy: str | None = None) -> None:
    """Make the plan's hit rate what the expert cache's policy (default: the cache's default)
    finds over a routing trace's sequences (uint8 [tokens, layers, k] each) at the plan's slots."""
    from . import cache_policy as cp
    policy = policy or cp.DEFAULT_POLICY
    shapes = {tuple(s.shape[1:]) for s in sequences}
    want = (plan.layers, plan.experts_per_token)
    if shapes != {want} or max(int(s.max()) for s in sequences) >= plan.experts_per_layer:
        raise ValueError(f"routing trace {name} does not fit this model: it needs [tokens, {want[0]}, {want[1]}] "
                         f"expert ids below {plan.experts_per_layer}; got shapes {sorted(shapes)}")
    if plan.streaming:
        plan.set_hit_rate(cp.simulate(sequences, plan.slots_per_layer, policy, num_experts=plan.experts_per_layer),
                          f"{policy.upper()} over the routing trace {name}")


def read_bandwidth(nbytes: int = 1 << 30, threads: int = 2, repeats: int = 5) -> float:
    """Best-of-N bytes/s of reading a buffer far larger than the caches with `threads` threads,
    each summing its own contiguous part (NumPy's vectorized sum, which drops the GIL)."""
    a = np.ones(nbytes // 4, np.float32)
    parts = np.array_split(a, threads)
    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(np.sum, parts))  # touch the pages once
        for _ in range(repeats):
            t0 = time.perf_counter()
            list(pool.map(np.sum, parts))
            best = min(best, time.perf_counter() - t0)
    return a.nbytes / best


def measure_disk_bandwidth(files: fmt.ModelFiles, nbytes: int = 256 * MiB) -> float:
    """Bytes/s of reading experts the way the expert cache does (uncached, in pieces, in parallel),
    from expert ranges spread over the file."""
    from .expert_cache import IO_THREADS, READ_PIECE
    from ..format.fileio import PositionalReader
    ranges = []
    for t in files.tensors.values():
        if t["type"] == "mxfp4_experts":
            ranges += [t["offset"] + e * t["stride"] for e in range(t["count"])]
    stride = next(t["stride"] for t in files.tensors.values() if t["type"] == "mxfp4_experts")
    n = max(1, min(len(ranges), nbytes // stride))
    # experts drawn afresh each time: the same ones re-read would come from whatever cache lies
    # under the file (a virtual disk's host page cache measured 2.5 GB/s here against ~1 uncached)
    picks = [ranges[i] for i in np.random.default_rng().choice(len(ranges), n, replace=False)]
    buf = mmap.mmap(-1, n * stride)
    view = memoryview(buf)
    reader = PositionalReader(files.weights_path, uncached=True)
    jobs = [(view[i * stride + o:i * stride + min(o + READ_PIECE, stride)], src + o)
            for i, src in enumerate(picks) for o in range(0, stride, READ_PIECE)]
    try:
        with ThreadPoolExecutor(IO_THREADS) as pool:
            t0 = time.perf_counter()
            list(pool.map(lambda job: reader.read_into(*job), jobs))
            dt = time.perf_counter() - t0
    finally:
        reader.close()
        del jobs, view, buf  # the pieces' views pin the buffer: drop them all, then it goes
    return n * stride / dt


def sequential_read_rates(files: fmt.ModelFiles, nbytes: int = 1 << 30, chunk: int = 8 * MiB,
                          spans: int = 8) -> list[float]:
    """Bytes/s of each of `spans` plain sequential reads (one thread, uncached, `chunk` bytes a
    request, as `dd` would) placed at random in the experts' region, adding to `nbytes`: the
    disk bandwidth that reads while decoding are measured against. A span the disk's host
    happens to cache comes back several times faster (see measure_disk_bandwidth): take the
    median of several spans, not their total."""
    from ..format.fileio import PositionalReader
    start = min(t["offset"] for t in files.tensors.values() if t["type"] == "mxfp4_experts")
    total = files.manifest["weights_bytes"] - start
    chunk = max(4096, min(chunk, total // 4096 * 4096))  # O_DIRECT: whole pages, inside the file
    per_span = max(chunk, min(nbytes // spans, total // spans) // chunk * chunk)
    # spans placed afresh each time (see measure_disk_bandwidth: no cache under the file to hit)
    rng = np.random.default_rng()
    firsts = sorted({start + int(rng.integers(0, total - per_span + 1)) // 4096 * 4096 for _ in range(spans)})
    buf = mmap.mmap(-1, chunk)
    view = memoryview(buf)
    reader = PositionalReader(files.weights_path, uncached=True)
    rates = []
    try:
        for first in firsts:
            t0 = time.perf_counter()
            for off in range(first, first + per_span, chunk):
                reader.read_into(view, off)
            rates.append(per_span / (time.perf_counter() - t0))
    finally:
        reader.close()
        del view, buf
    return rates


def exposed_read_time(k: int, miss_rate: float, read_s: float, compute_s: float) -> float:
    """Expected seconds a layer waits on the disk when decoding a token: each of its k experts
    misses with probability miss_rate (the count m binomial), the m reads run together, m * read_s,
    while the k - m cached experts compute, (k - m) * compute_s, and only what the reads take
    beyond that adds. Spreading the misses evenly over the layers instead would undercount: a
    layer that misses nothing has cached work to spare that no other layer's reads can use."""
    return sum(comb(k, m) * miss_rate ** m * (1 - miss_rate) ** (k - m) * max(0.0, m * read_s - (k - m) * compute_s)
               for m in range(1, k + 1))


def predict(plan: MemoryPlan, memory_bandwidth: float, disk_bandwidth: float) -> MemoryPlan:
    """Fill in the predicted decode tokens/s. Weights read from memory take their bytes over
    DECODE_EFFICIENCY of the measured bandwidth; each layer adds the time its misses' reads (at
    the disk's bandwidth) take beyond its cached experts' computing (exposed_read_time)."""
    plan.memory_bandwidth, plan.disk_bandwidth = memory_bandwidth, disk_bandwidth
    if not plan.slots_per_layer:
        return plan
    mem = memory_bandwidth * DECODE_EFFICIENCY
    t = plan.active_bytes_per_token / mem
    if plan.disk_bytes_per_token > 0:
        k = plan.experts_per_token
        t += plan.layers * exposed_read_time(k, 1 - plan.hit_rate, plan.expert_bytes / disk_bandwidth,
                                             plan.expert_bytes / mem)
    plan.predicted_tokens_per_s = 1.0 / t
    return plan


def format_plan(p: MemoryPlan) -> str:
    lines = [
        f"memory plan for {p.model}, {p.context}-token context",
        f"  budget {gb(p.budget)} ({p.budget_source})",
        f"  resident weights (attention, router, norms, lm_head) {gb(p.resident_weights)}; "
        "embedding rows read on demand",
        f"  KV cache {gb(p.kv_cache)}" + (f" for {p.sequences} sequences" if p.sequences > 1 else "")
        + " (sliding layers keep their window, a rollback margin and checkpoints)",
        f"  work buffers {gb(p.work)}" + (f" (with long prompts' {LONG_PREFILL}-token blocks, each layer's experts "
                                          "read once a block)" if p.long_prefill else "")
        + f", runtime {gb(p.runtime)} (interpreter and kernels, with margin)",
    ]
    if p.prefix_cache_source != "none":
        lines.append(f"  prefix cache {gb(p.prefix_cache)} of idle sequences ({p.prefix_cache_source})")
    if p.slots_per_layer:
        lines.append(f"  expert cache: {p.slots_per_layer} of {p.experts_per_layer} experts per layer x {p.layers} "
                     f"layers = {gb(p.expert_cache)} (one expert {gb(p.expert_bytes)})")
        if p.streaming:
            lines.append(f"  expected hit rate {p.hit_rate:.2f} ({p.hit_rate_source}) -> "
                         f"{p.disk_bytes_per_token / 1e6:.0f} MB read from disk per token")
    lines.append(f"  decode reads {p.active_bytes_per_token / 1e9:.2f} GB of weights per token from memory")
    if p.predicted_tokens_per_s is not None:
        lines.append(f"  measured bandwidth: memory {p.memory_bandwidth / 1e9:.1f} GB/s, disk "
                     f"{p.disk_bandwidth / 1e9:.2f} GB/s -> predicted decode {p.predicted_tokens_per_s:.1f} tok/s")
    verdict = f"verdict: {p.verdict}"
    if p.verdict == "fits with streaming":
        verdict += f" (all resident needs {gb(p.all_resident)})"
    elif p.verdict == "does not fit":
        verdict += f": the smallest budget that runs is {gb(p.floor)}; all resident needs {gb(p.all_resident)}"
    lines.append(verdict)
    return "\n".join(lines + [f"  note: {n}" for n in p.notes])
