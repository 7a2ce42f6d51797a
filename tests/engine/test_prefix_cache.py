"""The prefix cache: a new prompt starts from the longest prefix a finished or running
sequence holds, within a RAM bound."""

import numpy as np

from edgeoss.engine.model import load
from edgeoss.engine.prefix_cache import PrefixCache
from edgeoss.engine.scheduler import Request, Scheduler


def token_ids(vocab: int, n: int, seed: int) -> list[int]:
    return [int(t) for t in np.random.default_rng(seed).integers(0, vocab, n)]


def alone(model, prompt, n):
    return list(model.generate(prompt, sequence=model.new_sequence(), max_tokens=n, temperature=0, stop=[]))


def test_an_agent_resending_its_history_runs_only_what_is_new(converted):
    """Request 2 resends request 1's prompt, its reply and a tool result: it takes the sequence
    request 1 left, steps back to where its prompt ended (a checkpoint: the reply ran past the
    ring's margin here) and runs the rest; its tokens are those of a fresh run."""
    model = load(converted("odd-s1", "q8"))
    V = model.config.vocab_size
    sched = Scheduler(model, prefix_cache=PrefixCache(model, 1 << 30))
    first = sched.run([Request(None, token_ids(V, 30, seed=1), max_tokens=6, temperature=0, stop=[])])[0]
    assert len(sched.prefix_cache) == 1
    history = first.prompt + first.tokens[:3] + token_ids(V, 8, seed=2)  # the reply rewritten, a tool result
    second = sched.run([Request(None, history, max_tokens=6, temperature=0, stop=[])])[0]
    assert second.usage.cached_tokens == 33 and second.sequence is first.sequence
    assert second.tokens == alone(model, history, 6)


def test_concurrent_requests_share_a_system_prompt_by_forking_it(converted):
    model = load(converted("tiny-s0", "q8"))
    V = model.config.vocab_size
    system = token_ids(V, 24, seed=3)
    prompts = [system + token_ids(V, 5, seed=4), system + token_ids(V, 7, seed=5)]
    sched = Scheduler(model, prefix_cache=PrefixCache(model, 1 << 30))
    a = sched.add(Request(None, prompts[0], max_tokens=5, temperature=0, stop=[]))
    sched.step()  # a's prompt has run: b arrives while a decodes
    b = sched.add(Request(None, prompts[1], max_tokens=5, temperature=0, stop=[]))
    assert b.usage.cached_tokens == len(system) and b.sequence is not a.sequence
    while sched.active:
        sched.step()
    assert [a.tokens, b.tokens] == [alone(model, p, 5) for p in prompts]
    assert a.sequence.tokens[:len(system)] == system  # the fork copied, a's own cache is intact


def test_idle_sequences_stay_within_the_ram_bound_least_recently_used_first(converted):
    model = load(converted("tiny-s0", "q8"), context=64)
    V = model.config.vocab_size
    one = model.new_sequence().nbytes
    cache = PrefixCache(model, int(2.5 * one))
    sched = Scheduler(model, prefix_cache=cache)
    prompts = [token_ids(V, 10, seed=s) for s in range(4)]
    for p in prompts:
        sched.run([Request(None, p, max_tokens=2, temperature=0, stop=[])])
    assert len(cache) == 2 and cache.nbytes <= cache.ram_bytes
    # the two most recent are kept: the first prompt starts from scratch, the last does not
    assert cache.acquire(prompts[0] + [1]).length == 0
    assert cache.acquire(prompts[3] + [1]).tokens[:10] == prompts[3]


def test_the_longest_prefix_wins(converted):
    model = load(converted("tiny-s0", "q8"))
    V = model.config.vocab_size
    base = token_ids(V, 20, seed=7)
    cache = PrefixCache(model, 1 << 30)
    for n in (8, 15, 11):
        seq = model.new_sequence()
        model.prefill(base[:n] + token_ids(V, 3, seed=n), seq)
        cache.release(seq)
    got = cache.acquire(base + [5])
    assert got.tokens[:15] == base[:15] and len(cache) == 2
