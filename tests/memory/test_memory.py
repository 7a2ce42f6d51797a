"""The memory planner and the expert cache: budgets, refusals, eviction policies against the
simulator and Belady's optimum, identical logits when streaming, and resident memory under the
budget (measured in a fresh process)."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import REPO, shared_dir
from edgeoss.memory import cache_policy as cp
from edgeoss.memory import planner
from edgeoss.engine.model import load


@pytest.fixture(autouse=True)
def steady_runtime(monkeypatch):
    """Plans in this process see a fixed runtime figure: the tiny models' expert slots are far
    smaller than this process's RSS jitter, which would otherwise move a slot count between a
    test's plan and the engine's. (The RSS test measures a real process instead.)"""
    monkeypatch.setattr(planner, "process_rss", lambda: 200 << 20)


def token_ids(vocab, n, seed):
    return [int(t) for t in np.random.default_rng(seed).integers(0, vocab, n)]


def skewed_trace(tokens, layers, experts, k, seed):
    """Routing with hot experts and runs of reuse, as real routers have (random weights route
    uniformly): each token keeps some of the previous token's experts."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(experts, 0.5))
    out = np.empty((tokens, layers, k), np.int64)
    for li in range(layers):
        prev = rng.choice(experts, k, replace=False, p=p)
        for t in range(tokens):
            keep = [e for e in prev if rng.random() < 0.5]
            rest = [e for e in rng.choice(experts, experts, replace=False, p=p) if e not in keep]
            out[t, li] = prev = np.array((keep + rest)[:k])
    return out


# -- sizes and budgets ---------------------------------------------------------------------------

def test_parse_size_reads_what_users_write():
    assert planner.parse_size("8G") == 8 << 30
    assert planner.parse_size("8 GB") == 8 << 30
    assert planner.parse_size("6.5GiB") == int(6.5 * (1 << 30))
    assert planner.parse_size("512m") == 512 << 20
    assert planner.parse_size(123456) == 123456
    for bad in ("eight gigs", "8Q", "-1G", "0"):
        with pytest.raises(ValueError, match="memory"):
            planner.parse_size(bad)


def test_plan_accounts_every_part_and_picks_slots(converted):
    model = load(converted("tiny-s0", "q8"))
    files, cfg = model.files, model.config
    big = planner.make_plan(files, "1T")
    assert big.verdict == "fits all resident" and not big.streaming
    assert big.slots_per_layer == cfg.num_local_experts
    per_slot = cfg.num_hidden_layers * big.expert_bytes
    assert big.floor == big.fixed + cfg.num_experts_per_tok * per_slot
    assert big.all_resident == big.fixed + cfg.num_local_experts * per_slot
    # a budget between the two streams with as many slots as fit (a long prompt's blocks would
    # cost this model's tiny experts many slots: not planned)
    assert planner.streaming_work(cfg, 4096) > per_slot
    for slots in range(cfg.num_experts_per_tok, cfg.num_local_experts):
        p = planner.make_plan(files, big.fixed + slots * per_slot + per_slot // 2, runtime=big.runtime)
        assert p.work == big.work and not p.long_prefill
        assert (p.verdict, p.slots_per_layer) == ("fits with streaming", slots)
        assert p.fixed + p.expert_cache <= p.budget
    low = planner.make_plan(files, big.floor - 1, runtime=big.runtime)
    assert low.verdict == "does not fit"
    with pytest.raises(planner.MemoryBudgetError, match=f"needs at least {planner.gb(big.floor)}"):
        low.require_fits()
    # the KV cache grows with the context only on full-attention layers
    short = planner.make_plan(files, "1T", context=64, runtime=big.runtime)
    full_layers = sum(not cfg.is_sliding(i) for i in range(cfg.num_hidden_layers))
    assert big.kv_cache - short.kv_cache == full_layers * (4096 - 64) * 2 * cfg.kv_dim * 2  # float16 k and v
    exact = planner.make_plan(files, "1T", runtime=big.runtime, kv="f32")
    assert exact.kv_cache == 2 * big.kv_cache  # float32: twice the bytes, every part of it


def test_plan_counts_parallel_sequences_and_the_prefix_cache(converted):
    model = load(converted("tiny-s0", "q8"))
    files = model.files
    one = planner.make_plan(files, "1T", runtime=1 << 28)
    four = planner.make_plan(files, "1T", runtime=1 << 28, sequences=4, cache_ram="64M", prefix_cache=True)
    assert four.kv_cache == 4 * one.kv_cache
    assert four.prefix_cache == 64 << 20 and four.fixed == one.fixed + 3 * one.kv_cache + (64 << 20)
    assert four.floor == one.floor + 3 * one.kv_cache + (64 << 20)
    with pytest.raises(planner.MemoryBudgetError, match="each of 4 sequences.*prefix cache 64.0 MiB"):
        planner.make_plan(files, four.floor - 1, runtime=1 << 28, sequences=4, cache_ram="64M",
                          prefix_cache=True).require_fits()
    # by default a server keeps idle sequences in half of what is left free, at most 4 GiB
    spare = planner.make_plan(files, "1T", runtime=1 << 28, sequences=4, prefix_cache=True)
    assert spare.prefix_cache == planner.DEFAULT_CACHE_RAM and spare.fixed == four.fixed - (64 << 20)


def test_work_bytes_covers_what_a_forward_allocates(converted):
    from edgeoss.memory.workspace import PREFILL_CHUNK, work_bytes
    model = load(converted("odd-s1", "q8"), context=600)
    model.forward(token_ids(model.config.vocab_size, 600, seed=1))  # two chunks, the first full
    held = sum(a.nbytes for a in model._buf._arrays.values())
    held += sum(a.nbytes for a in model._att_scratch + model._moe_scratch)
    held += model._cos.nbytes + model._sin.nbytes
    planned = work_bytes(model.config, PREFILL_CHUNK, 600)
    assert held <= planned <= 1.5 * held + (1 << 20)


def test_loading_below_the_floor_is_refused_with_the_floor(converted, tmp_path):
    from edgeoss.cli.main import main
    path = converted("tiny-s0", "q8")
    with pytest.raises(planner.MemoryBudgetError, match="needs at least") as e:
        load(path, memory="64M")
    assert "--memory" in str(e.value)
    assert main(["generate", str(path), "1 2 3", "--ids", "--memory", "64M"]) == 2


def test_plan_command_reports_verdict_and_floor(converted, capsys):
    from edgeoss.cli.main import main
    path = converted("tiny-s0", "q8")
    assert main(["plan", str(path), "--memory", "64M", "--no-measure"]) == 3
    out = capsys.readouterr().out
    assert "does not fit" in out and "smallest budget that runs is" in out
    assert main(["plan", str(path), "--memory", "64G", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["verdict"] == "fits all resident" and d["predicted_tokens_per_s"] > 0


def test_plan_with_a_routing_trace_expects_its_hit_rate(converted, capsys, tmp_path, monkeypatch):
    from edgeoss.cli.main import main
    from edgeoss.format.model_dir import ModelFiles
    path = converted("tiny-s0", "q8")
    cfg = ModelFiles(path).config
    rng = np.random.default_rng(4)
    ex = np.stack([np.sort(rng.permutation(cfg.num_local_experts)[:cfg.num_experts_per_tok])
                   for _ in range(40 * cfg.num_hidden_layers)]).reshape(40, cfg.num_hidden_layers, -1)
    trace = tmp_path / "trace.npz"
    np.savez(trace, seq000_experts=ex.astype(np.uint8), seq000_weights=np.full(ex.shape, 0.25, np.float16))
    monkeypatch.setattr(planner, "process_rss", lambda: 200 << 20)
    big = planner.make_plan(ModelFiles(path), "1T")
    budget = str(big.fixed + 5 * cfg.num_hidden_layers * big.expert_bytes)
    assert main(["plan", str(path), "--memory", budget, "--routing-trace", str(trace), "--no-measure", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["slots_per_layer"] == 5 and d["hit_rate"] == cp.simulate([ex], 5, "lfru", num_experts=cfg.num_local_experts)
    assert str(trace) in d["hit_rate_source"]
    assert main(["plan", str(path), "--memory", budget, "--routing-trace", str(trace), "--no-measure"]) == 0
    assert f"({d['hit_rate_source']})" in capsys.readouterr().out
    # a trace of another model's shape is refused, saying what it should be
    np.savez(trace, seq000_experts=ex[:, :1].astype(np.uint8), seq000_weights=np.full(ex[:, :1].shape, 0.25, np.float16))
    assert main(["plan", str(path), "--memory", budget, "--routing-trace", str(trace), "--no-measure"]) != 0
    assert f"[tokens, {cfg.num_hidden_layers}, {cfg.num_experts_per_tok}]" in capsys.readouterr().err


# -- eviction policies and the simulator ------------------------------------------------------------

def test_predicted_disk_wait_on_hand_worked_layers():
    """A layer's wait on the disk: its misses' reads beyond its cached experts' computing,
    averaged over how many of its experts miss (binomial), so a layer missing nothing does not
    lend its spare computing to another's reads."""
    # k = 2, half the uses miss: m = 0 (1/4) waits 0; m = 1 (1/2) reads 10, computes 1 -> 9;
    # m = 2 (1/4) reads 20 -> 20. Expected 0.5 * 9 + 0.25 * 20 = 9.5 (even spreading: 1 miss, 9)
    assert planner.exposed_read_time(2, 0.5, 10.0, 1.0) == pytest.approx(9.5)
    assert planner.exposed_read_time(4, 0.0, 10.0, 1.0) == 0.0
    assert planner.exposed_read_time(4, 1.0, 10.0, 1.0) == pytest.approx(40.0)
    # reads twice as fast as a cached expert's computing hide entirely while at most two of four miss
    assert planner.exposed_read_time(4, 0.1, 1.0, 2.0) == pytest.approx(
        6 * 0.01 * 0.81 * 0.0 + 4 * 0.001 * 0.9 * 1.0 + 0.0001 * 4.0)


def test_prediction_slows_with_misses_and_a_slower_disk(converted):
    from edgeoss.format.model_dir import ModelFiles
    plan = planner.make_plan(ModelFiles(converted("tiny-s0", "q8")), "1T")
    plan.slots_per_layer = plan.experts_per_token  # streaming, as a tight budget would give
    speeds = {}
    for rate in (1.0, 0.9, 0.5):
        for disk in (2e9, 0.5e9):
            plan.set_hit_rate(rate)
            speeds[rate, disk] = planner.predict(plan, 20e9, disk).predicted_tokens_per_s
    # every weight from memory: the roofline at the decode efficiency
    assert speeds[1.0, 2e9] == pytest.approx(20e9 * planner.DECODE_EFFICIENCY / plan.active_bytes_per_token)
    assert speeds[1.0, 2e9] == speeds[1.0, 0.5e9]
    assert speeds[1.0, 2e9] > speeds[0.9, 2e9] > speeds[0.5, 2e9]
    assert speeds[0.9, 2e9] > speeds[0.9, 0.5e9] and speeds[0.5, 2e9] > speeds[0.5, 0.5e9]


def test_lru_and_belady_on_a_hand_worked_trace():
    # one layer, 2 slots, one expert per step: a b c a b c a
    seq = np.array([0, 1, 2, 0, 1, 2, 0], np.int64)[:, None, None]
    assert cp.simulate([seq], 2, "lru", num_experts=3) == 0.0     # LRU always evicts the next one needed
    # Belady: misses a, b; c evicts b (a is used sooner); a hits; b evicts a... 3 hits of 7
    assert cp.simulate([seq], 2, "belady", num_experts=3) == pytest.approx(2 / 7)
    # LFRU told one step ahead: c evicts a (neither is next, a is older); a evicts c (b is next);
    # b hits; c evicts b (a is next); a hits
    assert cp.foresight_layer(seq[:, 0], 3, 2, cp.decay_of(16.0), 1) == 2


def test_belady_bounds_every_policy_and_frequency_pays_on_hot_experts():
    tr = skewed_trace(400, 3, 16, 4, seed=0)
    for slots in (4, 6, 8, 12):
        opt = cp.simulate([tr], slots, "belady", num_experts=16)
        lru, lfru = (cp.simulate([tr], slots, p, num_experts=16) for p in ("lru", "lfru"))
        assert max(lru, lfru) <= opt + 1e-12
        if slots in (6, 8):  # with hot experts, remembering frequency beats recency alone
            assert lfru > lru


def test_real_routing_hit_rates_match_the_published_measurements():
    path = shared_dir() / "routing" / "gpt-oss-20b-routing.npz"
    if not path.exists():
        pytest.skip("no ../shared/routing trace")
    from edgeoss.memory.routing_trace import load_trace
    seqs = [e for e, _ in load_trace(path)]
    # LRU / Belady at 8 and 16 slots over the whole trace: 0.65 / 0.77 and 0.89 / 0.94 (issue 4)
    assert cp.simulate(seqs, 8, "lru") == pytest.approx(0.648, abs=0.005)
    assert cp.simulate(seqs, 8, "belady") == pytest.approx(0.769, abs=0.005)
    assert cp.simulate(seqs, 16, "lru") == pytest.approx(0.895, abs=0.005)
    assert cp.simulate(seqs, 16, "belady") == pytest.approx(0.949, abs=0.005)
    # the planner's built-in curve is what the default policy does on it
    for slots in (8, 12, 16):
        assert planner.hit_rate(slots, 32, 4)[0] == pytest.approx(cp.simulate(seqs, slots, "lfru"), abs=1e-4)


def test_prefetch_simulator_learns_cross_layer_routing():
    # tools/simulate_prefetch.py backs docs/MEMORY.md's prefetch figures: without prefetch it must
    # count what the cache's own simulator counts, and where each layer's experts follow from the
    # previous layer's it must learn that and have the cache's misses read ahead
    sys.path.insert(0, str(REPO / "tools"))
    from simulate_prefetch import replay
    rng = np.random.default_rng(3)
    T, L, E, k = 600, 4, 16, 2
    ex = np.empty((T, L, k), np.int64)
    ex[:, 0] = np.stack([rng.permutation(E)[:k] for _ in range(T)])
    for layer in range(1, L):  # layer l's experts: a fixed shuffle of layer l-1's
        ex[:, layer] = np.argsort(rng.permutation(E))[ex[:, layer - 1]]
    decay = cp.decay_of(cp.DEFAULT_HALFLIFE)
    hits, phits, pf = replay(ex, E, 4, 0, 1.0, decay)
    assert (phits, pf) == (0, 0)
    assert hits / ex.size == pytest.approx(cp.simulate([ex.astype(np.uint8)], 4, "lfru", num_experts=E))
    layer0_misses = T * k - replay(np.ascontiguousarray(ex[:, :1]), E, 4, 0, 1.0, decay)[0]
    misses = ex.size - hits
    hits2, phits, pf = replay(ex, E, 4, k, 0.5, decay)
    assert hits2 == hits  # prefetch never changes what the cache holds
    # deterministic routing: every guess right once learned; most later-layer misses read ahead
    assert pf == phits and phits > 0.5 * (misses - layer0_misses)


def test_lookahead_simulator_runs_from_lfru_to_the_optimum():
    # tools/simulate_lookahead.py backs docs/MEMORY.md's bound on what an online policy can reach:
    # no foresight must be exactly LFRU (simulated by its own loop), and foresight lies between
    # it and the optimum
    sys.path.insert(0, str(REPO / "tools"))
    from simulate_lookahead import hit_rate
    tr = skewed_trace(500, 3, 16, 4, seed=2)
    for slots in (5, 8):
        lfru = cp.simulate([tr], slots, "lfru", num_experts=16)
        opt = cp.simulate([tr], slots, "belady", num_experts=16)
        assert hit_rate([tr], slots, 0) == lfru
        assert lfru < hit_rate([tr], slots, 1) <= opt  # one token of foresight already pays here


# -- the engine's cache -------------------------------------------------------------------------------

def streaming_budget(path, slots, context=4096, long_prefill=False):
    files = load(path).files
    big = planner.make_plan(files, "1T", context=context)
    extra = planner.streaming_work(files.config, context) if long_prefill else 0
    return big.fixed + extra + slots * files.config.num_hidden_layers * big.expert_bytes


@pytest.mark.parametrize("preset", ["q8", "bf16"])
def test_streamed_logits_are_identical_to_resident(converted, preset):
    path = converted("tiny-s0", preset)
    resident = load(path)
    ids = token_ids(resident.config.vocab_size, 37, seed=4)
    want = resident.logits(ids)
    gen = list(resident.generate(ids[:5], max_tokens=12, temperature=0, stop=[]))
    for slots in (4, 5, 7):  # fewer slots than a prompt's experts: computed in rounds
        model = load(path, memory=streaming_budget(path, slots))
        assert model.expert_cache is not None and model.plan.slots_per_layer == slots
        np.testing.assert_array_equal(model.logits(ids), want)
        assert list(model.generate(ids[:5], max_tokens=12, temperature=0, stop=[])) == gen
        assert model.expert_cache.misses > 0


def test_a_long_prompt_streamed_layer_by_layer_gives_the_resident_logits(big_experts_model):
    """Streaming, a prompt longer than a chunk runs in blocks layer by layer, each layer's experts
    read once a block (Model._forward_long): the logits, the KV cache it leaves (the decode
    after it) and the routing record are the resident model's, chunk after chunk, bit for bit."""
    from edgeoss.memory.workspace import LONG_PREFILL, PREFILL_CHUNK
    path = big_experts_model
    resident = load(path)
    cfg = resident.config
    n = LONG_PREFILL + PREFILL_CHUNK + 37  # a whole block, then a chunk and a tail the usual way
    ids = token_ids(cfg.vocab_size, n, seed=8)
    want = resident.forward(ids)
    want_routing = resident.last_routing.copy()
    want_next = [resident.step(t).copy() for t in (3, 5)]
    extra = planner.streaming_work(cfg, 4096)
    for slots in (4, 6):
        model = load(path, memory=streaming_budget(path, slots, long_prefill=True), long_prefill=True)
        assert model.plan.slots_per_layer == slots and model.plan.long_prefill
        assert model.plan.work == resident.plan.work + extra  # the blocks' arrays are planned
        np.testing.assert_array_equal(model.forward(ids), want)
        np.testing.assert_array_equal(model.last_routing, want_routing)
        for t, w in zip((3, 5), want_next):
            np.testing.assert_array_equal(model.step(t), w)
        # each layer read an expert at most once a round of its cache per block, not once a chunk:
        # far fewer misses than a chunk-major prefill of the same prompt
        chunked = load(path, memory=streaming_budget(path, slots, long_prefill=True), long_prefill=False)
        assert not chunked.plan.long_prefill
        for c0 in range(0, n, PREFILL_CHUNK):
            chunked.forward(ids[c0:c0 + PREFILL_CHUNK])
        assert model.expert_cache.misses < chunked.expert_cache.misses
    # a replayed routing trace too
    tr = skewed_trace(n, cfg.num_hidden_layers, cfg.num_local_experts, cfg.num_experts_per_tok, seed=9)
    resident.reset()
    resident.force_routing(tr)
    want = resident.forward(ids)
    model = load(path, memory=streaming_budget(path, 5, long_prefill=True), long_prefill=True)
    model.force_routing(tr)
    np.testing.assert_array_equal(model.forward(ids), want)
    np.testing.assert_array_equal(model.last_routing, resident.last_routing)


def test_engine_hit_counter_agrees_with_the_simulator(converted):
    path = converted("tiny-s0", "q8")
    base = load(path)
    cfg = base.config
    tr = skewed_trace(60, cfg.num_hidden_layers, cfg.num_local_experts, cfg.num_experts_per_tok, seed=5)
    for slots in (4, 5, 6):
        model = load(path, memory=streaming_budget(path, slots))
        model.force_routing(tr)
        for t in token_ids(cfg.vocab_size, tr.shape[0], seed=6):  # one step per token, as simulated
            model.forward([t])
        c = model.expert_cache
        assert c.hits + c.misses == tr.size
        assert c.hits / tr.size == pytest.approx(cp.simulate([tr], slots, "lfru", num_experts=cfg.num_local_experts))
        assert c.bytes_read == c.misses * c.stride
        np.testing.assert_array_equal(model.last_routing[0], tr[-1])


def test_streaming_plan_caps_the_kv_cache(converted):
    path = converted("tiny-s0", "q8")
    model = load(path, context=16, memory=streaming_budget(path, 5, context=16))
    assert model.plan.streaming
    model.forward(token_ids(model.config.vocab_size, 16, seed=1))
    with pytest.raises(ValueError, match="memory plan made room"):
        model.forward([1])


def test_routing_trace_errors_are_clear(tmp_path, converted):
    from edgeoss.memory.routing_trace import TraceError, load_trace
    bad = tmp_path / "bad.npz"
    np.savez(bad, foo=np.zeros(3))
    with pytest.raises(TraceError, match="not a routing trace"):
        load_trace(bad)
    model = load(converted("tiny-s0", "q8"))
    with pytest.raises(ValueError, match="routing trace for this model"):
        model.force_routing(np.zeros((5, 24, 4), np.int64))


# -- resident memory under the budget, measured ----------------------------------------------------

RSS_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from edgeoss.memory import planner
    from edgeoss.engine.benchmark import peak_rss_bytes as peak
    from edgeoss.format.model_dir import ModelFiles
    from edgeoss.kernels import loops  # noqa: F401  (the runtime as it will be when the plan is made)
    from edgeoss.engine.model import load
    path, slots, prompt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    # a prompt longer than a chunk: the context to hold it, and its blocks' arrays in the plan
    context, blocks = (256, None) if prompt <= 40 else (4096, True)
    budget = None
    if slots:
        f = ModelFiles(path)
        big = planner.make_plan(f, "1T", context=context)
        budget = (big.fixed + (planner.streaming_work(f.config, context) if blocks else 0)
                  + slots * f.config.num_hidden_layers * big.expert_bytes)
    model = load(path, memory=budget or "1T", context=context, long_prefill=blocks)
    cfg = model.config
    L, E, k = cfg.num_hidden_layers, cfg.num_local_experts, cfg.num_experts_per_tok
    rng = np.random.default_rng(0)
    # uniform routing, the worst case for a cache: every expert of every layer gets used
    model.force_routing(np.stack([rng.permutation(E)[:k] for _ in range(64 * L)]).reshape(64, L, k))
    print("peak after load", peak(), file=sys.stderr)
    model.forward([int(t) for t in rng.integers(0, cfg.vocab_size, prompt)])
    print("peak after prompt", peak(), file=sys.stderr)
    for t in range(24):
        model.step(t)
    print(json.dumps({"budget": budget, "peak": peak(), "streaming": model.expert_cache is not None,
                      "blocks": model.plan.long_prefill}))
""")


@pytest.mark.skipif(sys.platform != "linux", reason="peak RSS read from /proc")
def test_resident_memory_stays_under_the_budget(big_experts_model):
    def run(slots, prompt=40):
        out = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(big_experts_model), str(slots), str(prompt)],
                             capture_output=True, text=True, cwd=REPO, timeout=600)
        assert out.returncode == 0, out.stderr
        return dict(json.loads(out.stdout.strip().splitlines()[-1]), log=out.stderr)

    run(6)  # a first run may compile kernels (LLVM's memory, once per install): the budget is for runs
    streamed = run(6)
    assert streamed["streaming"]
    assert streamed["peak"] <= streamed["budget"], streamed
    resident = run(0)  # the same work with every expert mapped would not have fit
    assert resident["peak"] > streamed["budget"], (resident, streamed)
    # a long prompt, run in blocks layer by layer: its arrays stay within what the plan counted
    long = run(6, prompt=2100)
    assert long["streaming"] and long["blocks"] and long["peak"] <= long["budget"], long


@pytest.mark.parametrize("mode", ["fadvise", "thread-files"])
def test_streaming_without_o_direct_gives_the_same_logits(converted, monkeypatch, mode):
    """File systems that refuse O_DIRECT, and platforms without positional reads in `os`
    (Windows: a file object per I/O thread), stream the same bytes."""
    import os

    from edgeoss.format import fileio
    path = converted("tiny-s0", "q8")
    resident = load(path)
    ids = token_ids(resident.config.vocab_size, 21, seed=8)
    want = resident.logits(ids)
    monkeypatch.delattr(os, "O_DIRECT", raising=False)
    if mode == "thread-files":
        monkeypatch.delattr(os, "preadv")
    model = load(path, memory=streaming_budget(path, 5))
    assert model.expert_cache.io_mode == ("fadvise" if mode == "fadvise" else "plain")
    np.testing.assert_array_equal(model.logits(ids), want)
    assert model.expert_cache.misses > 0
    reader = fileio.PositionalReader(model.files.weights_path)
    with pytest.raises(OSError, match="truncated or damaged"):
        reader.read_into(memoryview(bytearray(16)), model.files.weights_path.stat().st_size - 8)


def test_a_failed_read_is_forgotten_not_used(converted, monkeypatch):
    """A read error mid-layer surfaces to the caller, and the experts whose slots it was filling
    are not taken as loaded afterwards: the next run is right again."""
    path = converted("tiny-s0", "q8")
    resident = load(path)
    ids = token_ids(resident.config.vocab_size, 30, seed=11)
    want = resident.logits(ids)
    model = load(path, memory=streaming_budget(path, 5))
    reader = model.expert_cache.reader
    real, calls = reader.read_into, []

    def flaky(view, offset):
        calls.append(offset)
        if len(calls) == 6:
            view[:] = b"\xff" * len(view)  # half-written garbage, then the error
            raise OSError("simulated I/O error")
        return real(view, offset)

    monkeypatch.setattr(reader, "read_into", flaky)
    with pytest.raises(OSError, match="simulated"):
        model.logits(ids)
    monkeypatch.setattr(reader, "read_into", real)
    np.testing.assert_array_equal(model.logits(ids), want)


def test_plan_simulate_prints_every_policy_against_the_optimum(converted, capsys, tmp_path):
    from edgeoss.cli.main import main
    tr = skewed_trace(300, 24, 32, 4, seed=2).astype(np.uint8)
    trace = tmp_path / "trace.npz"
    np.savez(trace, seq000_experts=tr[:200], seq000_weights=np.full((200, 24, 4), 0.25, np.float16),
             seq001_experts=tr[200:], seq001_weights=np.full((100, 24, 4), 0.25, np.float16))
    assert main(["plan", str(converted("tiny-s0", "q8")), "--simulate", str(trace), "--no-measure", "--json"]) == 0
    sim = json.loads(capsys.readouterr().out)["simulation"]
    assert sorted(map(int, sim)) == [8, 12, 16, 24]
    for s, r in sim.items():
        assert r == {p: cp.simulate([tr], int(s), p) for p in ("lru", "lfru", "belady")}
        assert max(r["lru"], r["lfru"]) <= r["belady"]


def test_long_prompt_tool_compares_chunks_with_blocks(big_experts_model, capsys):
    """tools/bench_long_prompt.py: the same prompt chunk after chunk, then in blocks; the blocks
    read each layer's experts once, so fewer bytes."""
    sys.path.insert(0, str(REPO / "tools"))
    import bench_long_prompt
    budget = streaming_budget(big_experts_model, 6, long_prefill=True)
    assert bench_long_prompt.main([str(big_experts_model), "--memory", str(budget), "--prompt", "1100",
                                   "--json"]) == 0
    chunks, blocks = json.loads(capsys.readouterr().out)["runs"]
    assert (chunks["blocks"], blocks["blocks"]) == (False, True)
    assert 0 < blocks["expert_bytes_read"] < chunks["expert_bytes_read"]
    assert chunks["seconds"] > 0 and blocks["tokens_per_s"] > 0
