"""Sequences: several conversations on one model, and a new prompt that keeps the longest prefix
it shares with what a sequence holds, sliding-window layers included."""

import numpy as np
import pytest

from edgeoss.engine.model import load
from edgeoss.engine.sequence import common_prefix


def token_ids(vocab: int, n: int, seed: int) -> list[int]:
    return [int(t) for t in np.random.default_rng(seed).integers(0, vocab, n)]


def greedy(model, seq, ids, n):
    """Prefill `ids` on `seq`, then decode n tokens greedily; returns them."""
    logits, _ = model.prefill(ids, seq)
    out = []
    for _ in range(n):
        out.append(int(np.argmax(logits)))
        logits = model.step(out[-1], seq)
    return out


def fresh_logits(model, ids, kept):
    """What a new sequence computes for `ids` run in the same two pieces (so equal bit for bit)."""
    seq = model.new_sequence()
    if kept:
        model.forward(ids[:kept], sequence=seq)
    return model.forward(ids[kept:], sequence=seq)


def test_common_prefix():
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix([1, 2], [1, 2, 3]) == 2
    assert common_prefix([], [1]) == 0
    assert common_prefix([5] * 100 + [1], [5] * 100 + [2]) == 100


@pytest.mark.parametrize("kv", ["f16", "q8"])
@pytest.mark.parametrize("name", ["tiny-s0", "odd-s1"])
def test_a_rewritten_tail_within_the_ring_margin_reruns_only_the_new_tokens(converted, name, kv):
    """The reply is dropped and the prompt goes on differently, further back than the sliding
    window: the rings' margin still holds what the window needs there."""
    model = load(converted(name, "q8"), kv_cache=kv)
    V, w = model.config.vocab_size, model.config.sliding_window
    a = token_ids(V, 20, seed=1)
    seq = model.new_sequence()
    reply = greedy(model, seq, a, 3 * w)
    b = a + reply[:2] + token_ids(V, 7, seed=2)   # steps back 3w - 2 positions
    logits, kept = model.prefill(b, seq)
    assert kept == len(a) + 2 and seq.tokens == b
    assert np.array_equal(logits, fresh_logits(model, b, kept))


@pytest.mark.parametrize("kv", ["f16", "q8"])
def test_further_back_a_checkpoint_where_the_prompt_ended_restores_the_windows(converted, monkeypatch, kv):
    """With no margin at all, stepping back past the window needs the checkpoint taken where the
    previous prompt ended: a harmony turn's case (the reply rewritten, the prompt kept)."""
    import edgeoss.engine.kvcache as kvcache
    monkeypatch.setattr(kvcache, "SLIDING_ROLLBACK", 0)
    model = load(converted("odd-s1", "q8"), kv_cache=kv)
    V = model.config.vocab_size
    a = token_ids(V, 20, seed=3)
    seq = model.new_sequence()
    greedy(model, seq, a, 12)
    assert not seq.reachable(len(a))
    b = a + token_ids(V, 9, seed=4)
    logits, kept = model.prefill(b, seq)
    assert kept == len(a)
    assert np.array_equal(logits, fresh_logits(model, b, kept))
    # back before every checkpoint: nothing can be kept, and the result is still exact
    greedy(model, seq, b, 12)
    c = a[:12] + token_ids(V, 5, seed=5)
    logits, kept = model.prefill(c, seq)
    assert kept == 0
    assert np.array_equal(logits, fresh_logits(model, c, 0))


def test_an_extension_runs_only_its_new_tokens_and_usage_says_so(converted):
    model = load(converted("tiny-s0", "q8"))
    V = model.config.vocab_size
    seq = model.new_sequence()
    a = token_ids(V, 15, seed=6)
    first = list(model.generate(a, max_tokens=4, temperature=0, stop=[], sequence=seq))
    assert (seq.usage.prompt_tokens, seq.usage.cached_tokens, seq.usage.completion_tokens) == (15, 0, 4)
    b = a + first + token_ids(V, 6, seed=7)
    list(model.generate(b, max_tokens=3, temperature=0, stop=[], sequence=seq))
    # the last generated token was never run (it was sampled, not fed back): it runs now
    assert (seq.usage.prompt_tokens, seq.usage.cached_tokens, seq.usage.completion_tokens) == (len(b), 18, 3)
    # the same prompt again keeps all but its last token, whose logits are needed
    list(model.generate(b, max_tokens=1, temperature=0, stop=[], sequence=seq))
    assert seq.usage.cached_tokens == len(b) - 1


def test_sequences_on_one_model_do_not_disturb_each_other(converted):
    model = load(converted("odd-s1", "q8"))
    V = model.config.vocab_size
    prompts = [token_ids(V, 13, seed=8), token_ids(V, 21, seed=9)]
    alone = [greedy(model, model.new_sequence(), p, 10) for p in prompts]
    seqs = [model.new_sequence() for _ in prompts]
    logits = [model.prefill(p, s)[0].copy() for p, s in zip(prompts, seqs)]
    together = [[], []]
    for _ in range(10):  # interleaved, one token each in turn
        for i, s in enumerate(seqs):
            together[i].append(int(np.argmax(logits[i])))
            logits[i] = model.step(together[i][-1], s).copy()
    assert together == alone


@pytest.mark.parametrize("kv", ["f16", "f32", "q8"])
def test_the_memory_plan_counts_a_sequence_and_its_checkpoints(converted, kv):
    from edgeoss.memory.workspace import SEQUENCE_CHECKPOINTS, kv_bytes
    model = load(converted("odd-s1", "q8"), context=64, kv_cache=kv)
    V = model.config.vocab_size
    seq = model.new_sequence()
    for i in range(SEQUENCE_CHECKPOINTS + 2):  # each prompt checkpoints where it ends
        model.prefill(seq.tokens + token_ids(V, 8, seed=10 + i), seq)
    assert [c[0] for c in seq.checkpoints] == [8 * i for i in range(3, SEQUENCE_CHECKPOINTS + 3)]
    held = seq.cache.nbytes + sum(a.nbytes for _, ks, vs in seq.checkpoints for a in ks + vs)
    assert held == kv_bytes(model.config, 64, kv) == model.plan.kv_cache
