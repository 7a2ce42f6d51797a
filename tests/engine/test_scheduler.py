"""Continuous batching: requests that share forward passes give each the tokens it gets alone."""

import numpy as np
import pytest

from edgeoss.engine.model import load
from edgeoss.engine.scheduler import Request, Scheduler


def token_ids(vocab: int, n: int, seed: int) -> list[int]:
    return [int(t) for t in np.random.default_rng(seed).integers(0, vocab, n)]


def alone(model, prompt, **sampling):
    return list(model.generate(prompt, sequence=model.new_sequence(), stop=[], **sampling))


@pytest.mark.parametrize("name", ["tiny-s0", "odd-s1"])
def test_batched_greedy_tokens_equal_each_request_run_alone(converted, name):
    """Four requests of different lengths, one arriving while the others decode with a prompt
    longer than a batch (so it joins in chunks beside them): each gets its solo tokens."""
    model = load(converted(name, "q8"))
    V = model.config.vocab_size
    prompts = [token_ids(V, n, seed=20 + n) for n in (5, 12, 3)]
    late = token_ids(V, 40, seed=99)
    want = [alone(model, p, max_tokens=12, temperature=0) for p in prompts + [late]]
    sched = Scheduler(model, max_batch_tokens=16)
    reqs = [sched.add(Request(model.new_sequence(), p, max_tokens=12, temperature=0, stop=[])) for p in prompts]
    sizes = []
    for _ in range(3):
        sched.step()
    reqs.append(sched.add(Request(model.new_sequence(), late, max_tokens=12, temperature=0, stop=[])))
    while sched.active:
        sizes.append(sum(1 for r in sched.active))
        sched.step()
    assert [r.tokens for r in reqs] == want
    assert all(r.done and r.usage.completion_tokens == 12 for r in reqs)
    assert max(sizes) == 4  # they really ran together


def test_sampling_per_request_follows_its_seed(converted):
    model = load(converted("tiny-s0", "q8"))
    V = model.config.vocab_size
    prompts = [token_ids(V, 7, seed=s) for s in (1, 2)]
    want = [alone(model, p, max_tokens=10, temperature=0.9, top_p=0.95, seed=s) for s, p in enumerate(prompts)]
    sched = Scheduler(model)
    got = sched.run([Request(model.new_sequence(), p, max_tokens=10, temperature=0.9, top_p=0.95, seed=s, stop=[])
                     for s, p in enumerate(prompts)])
    assert [r.tokens for r in got] == want


def test_a_request_keeps_what_its_sequence_shares_and_stops_on_a_stop_token(converted):
    model = load(converted("tiny-s0", "q8"))
    V = model.config.vocab_size
    seq = model.new_sequence()
    a = token_ids(V, 10, seed=3)
    first = Scheduler(model).run([Request(seq, a, max_tokens=4, temperature=0, stop=[])])[0]
    b = a + first.tokens + token_ids(V, 3, seed=4)
    second = Scheduler(model).run([Request(seq, b, max_tokens=5, temperature=0, stop=[])])[0]
    assert (second.usage.prompt_tokens, second.usage.cached_tokens) == (len(b), 13)
    stop_at = second.tokens[2]
    third = Scheduler(model).run([Request(model.new_sequence(), b, max_tokens=5, temperature=0, stop=[stop_at])])[0]
    assert third.tokens == second.tokens[:second.tokens.index(stop_at) + 1]


def test_a_cancelled_request_leaves_the_others_running(converted):
    model = load(converted("odd-s1", "q8"))
    V = model.config.vocab_size
    p = [token_ids(V, 6, seed=s) for s in (5, 6)]
    sched = Scheduler(model)
    keep, drop = (sched.add(Request(model.new_sequence(), x, max_tokens=8, temperature=0, stop=[])) for x in p)
    sched.step()
    sched.cancel(drop)
    while sched.active:
        sched.step()
    assert keep.tokens == alone(model, p[0], max_tokens=8, temperature=0) and len(drop.tokens) == 1


def test_a_batch_refuses_more_than_a_chunk_and_a_sequence_twice(converted):
    model = load(converted("tiny-s0", "q8"))
    seq = model.new_sequence()
    with pytest.raises(ValueError, match="only once"):
        model.forward_batch([(seq, [1]), (seq, [2])])
    with pytest.raises(ValueError, match="at most"):
        model.forward_batch([(seq, [1] * 513)])


def test_a_long_prompt_alone_on_streamed_experts_runs_in_blocks(big_experts_model):
    """With the experts streaming and nothing else running, a long prompt's blocks run layer by
    layer (each expert read once a block, Model._forward_long), the rest in chunks; the greedy
    tokens are those of the model with every expert resident."""
    from edgeoss.memory import planner
    from edgeoss.memory.workspace import LONG_PREFILL
    resident = load(big_experts_model)
    cfg = resident.config
    prompt = token_ids(cfg.vocab_size, LONG_PREFILL + 300, seed=5)
    want = alone(resident, prompt, max_tokens=6, temperature=0)
    big = planner.make_plan(resident.files, "1T")
    budget = big.fixed + planner.streaming_work(cfg, 4096) + 6 * cfg.num_hidden_layers * big.expert_bytes
    model = load(big_experts_model, memory=budget, long_prefill=True)
    assert model.plan.streaming and model.plan.long_prefill
    blocks = []
    run_block = model._forward_long
    model._forward_long = lambda ids, *rest: blocks.append(ids.size) or run_block(ids, *rest)
    req = Scheduler(model).run([Request(model.new_sequence(), prompt, max_tokens=6, temperature=0, stop=[])])[0]
    assert req.tokens == want and blocks == [LONG_PREFILL]
    assert req.usage.prompt_tokens == len(prompt) and req.usage.completion_tokens == 6
