"""The engine's logits against the float64 reference and the transformers golden logits."""

import json

import numpy as np
import pytest

import reference
from conftest import SHAPES, shared_dir
from edgeoss.engine.model import load

# Relative L2 error bounds of the whole logits matrix against the float64 reference: the
# issue's acceptance bounds for bf16 and q8. q4 has no target: 4-bit blocks of Gaussian random
# weights lose ~8.6% per matrix (0.23-0.29 at the logits of these models, 0.17 on the golden
# checkpoint); its bound only guards against regressions.
BOUNDS = {"bf16": 0.02, "q8": 0.03, "q4": 0.35}
# Top-k routing is discontinuous: when two experts' router logits are nearly tied, rounding
# anywhere upstream can pick the other one, which moves that token's logits by a lot. That is a
# property of quantizing a MoE, not an arithmetic error, so the synthetic comparisons run the
# reference with the engine's expert choices (the reference's own router still weighs them) and
# check separately that such flips are rare. The golden test below compares raw logits.
MIN_ROUTING_AGREEMENT = {"bf16": 1.0, "q8": 0.97, "q4": 0.75}


def token_ids(vocab: int, n: int, seed: int) -> list[int]:
    return [int(t) for t in np.random.default_rng(seed).integers(0, vocab, n)]


@pytest.fixture(scope="module")
def reference_model(hf_checkpoints):
    """name -> (config, float64 weights, ids, float64 logits, reference routing [T, L, k])."""
    out = {}
    for name, path in hf_checkpoints.items():
        cfg, w = reference.load_checkpoint(path)
        ids = token_ids(cfg["vocab_size"], 37, seed=len(name))  # longer than every sliding window
        chosen = []
        logits = reference.forward(cfg, w, ids, chosen=chosen)
        out[name] = (cfg, w, ids, logits, np.stack(chosen, axis=1))
    return out


@pytest.mark.parametrize("preset", ["bf16", "q8", "q4"])
@pytest.mark.parametrize("name", list(SHAPES))
def test_logits_match_float64_reference(converted, reference_model, name, preset):
    cfg, w, ids, want, ref_routing = reference_model[name]
    model = load(converted(name, preset))
    got = model.logits(ids)
    assert got.dtype == np.float32 and got.shape == want.shape
    routing = model.last_routing
    agree = np.mean(np.sort(routing, axis=-1) == np.sort(ref_routing, axis=-1), axis=-1).mean()
    same_routing = reference.forward(cfg, w, ids, routing=routing)
    err = reference.rel_l2(got, same_routing)
    print(f"{name} {preset}: relative L2 {err:.4f} with the engine's routing "
          f"(raw {reference.rel_l2(got, want):.4f}), routing agreement {agree:.3f}")
    assert err <= BOUNDS[preset]
    assert agree >= MIN_ROUTING_AGREEMENT[preset]


@pytest.mark.parametrize("name", list(SHAPES))
def test_a_float16_kv_cache_moves_logits_far_less_than_the_bounds(converted, reference_model, name):
    """The default KV cache keeps float16 keys and values; float32 is the exact option. What
    float16 adds to the bf16 preset's error is a small fraction of its bound."""
    cfg, w, ids, want, _ = reference_model[name]
    path = converted(name, "bf16")
    half, full = load(path).logits(ids), load(path, kv_cache="f32").logits(ids)
    moved = reference.rel_l2(half, full)
    print(f"{name}: float16 KV moves bf16 logits by {moved:.2e} relative L2")
    assert 0 < moved < BOUNDS["bf16"] / 20
    with pytest.raises(ValueError, match="unknown KV cache type"):
        load(path, kv_cache="f8")


@pytest.mark.parametrize("preset", ["bf16", "q8"])
@pytest.mark.parametrize("name", list(SHAPES))
def test_a_q8_kv_cache_keeps_the_logits_within_the_bounds(converted, reference_model, name, preset):
    """--kv-cache q8: keys and values as 8-bit blocks (0.56x float16's bytes). Against the
    reference with the engine's expert choices, the logits stay within the preset's bound; on
    bf16 weights what the q8 cache adds is ~0.8 % relative L2 (float16: 0.03 %)."""
    cfg, w, ids, _, _ = reference_model[name]
    model = load(converted(name, preset), kv_cache="q8")
    got = model.logits(ids)
    err = reference.rel_l2(got, reference.forward(cfg, w, ids, routing=model.last_routing))
    print(f"{name} {preset}: q8 KV cache: relative L2 {err:.4f}")
    assert err <= BOUNDS[preset]
    assert model.sequence.cache.layers[0].k.dtype == np.int8


def test_kv_bytes_per_token_of_each_kv_cache_type():
    """f16 is half of f32; q8 keeps 64 int8 values and two float32 scales a head row: 72/128 of f16."""
    from edgeoss.config import GptOssConfig
    from edgeoss.convert.synthetic import PRESETS
    from edgeoss.memory.workspace import kv_bytes
    cfg = GptOssConfig.from_hf(dict(PRESETS["20b"], model_type="gpt_oss"))
    per_token = {kv: kv_bytes(cfg, 2, kv) - kv_bytes(cfg, 1, kv) for kv in ("f32", "f16", "q8")}
    assert per_token["f16"] * 2 == per_token["f32"] == 12 * 2 * 8 * 64 * 4
    assert per_token["q8"] * 128 == per_token["f16"] * 72


@pytest.mark.parametrize("preset", ["bf16", "q8"])
def test_golden_transformers_logits(tmp_path, preset):
    """An outside oracle: logits computed by Hugging Face transformers on a tiny checkpoint."""
    golden = shared_dir() / "golden"
    if not (golden / "tiny-gpt-oss").exists():
        pytest.skip(f"no golden checkpoint at {golden} (set EDGEOSS_SHARED)")
    from edgeoss.convert import convert
    model_dir = convert(str(golden / "tiny-gpt-oss"), tmp_path / "m", preset=preset, no_tokenizer=True,
                        progress=False)
    ids = json.loads((golden / "tokens.json").read_text())["tokens"]
    want = np.load(golden / "logits_transformers.npy")
    err = reference.rel_l2(load(model_dir).logits(ids), want)
    print(f"golden {preset}: relative L2 {err:.4f}")
    assert err <= BOUNDS[preset]


def chunked_logits(model, ids: list[int]) -> np.ndarray:
    """The logits of ids (30 of them) run afresh as a chunk of 11, 9 single tokens and the rest."""
    model.reset()
    steps = [model.forward(ids[:11], all_logits=True)]
    steps += [model.forward([t], all_logits=True) for t in ids[11:20]]
    steps.append(model.forward(ids[20:], all_logits=True))
    return np.concatenate(steps)


@pytest.mark.parametrize("kv", ["f16", "q8"])
@pytest.mark.parametrize("name", ["tiny-s0", "odd-s1"])
def test_decode_through_cache_equals_prefill(converted, name, kv):
    """Token-by-token decoding (and uneven prefill chunks) reproduce one big prefill."""
    model = load(converted(name, "q8"), kv_cache=kv)
    ids = token_ids(model.config.vocab_size, 30, seed=5)
    full = model.logits(ids)
    assert reference.rel_l2(chunked_logits(model, ids), full) < 1e-5
    # step(), the decoding loop's entry point, matches forward() token by token
    model.reset()
    model.forward(ids[:20])
    stepped = np.stack([model.step(t).copy() for t in ids[20:]])
    assert reference.rel_l2(stepped, full[20:]) < 1e-5


def test_long_inputs_run_in_chunks(converted, monkeypatch):
    """A prompt longer than PREFILL_CHUNK runs as several chunks with the same logits."""
    import edgeoss.engine.model as model_module
    model = load(converted("tiny-s0", "q8"))
    ids = token_ids(model.config.vocab_size, 23, seed=6)
    full = model.logits(ids)
    routing = model.last_routing.copy()
    monkeypatch.setattr(model_module, "PREFILL_CHUNK", 5)
    assert reference.rel_l2(model.logits(ids), full) < 1e-5
    assert np.array_equal(model.last_routing, routing)
    model.reset()
    np.testing.assert_allclose(model.forward(ids), full[-1], rtol=1e-5, atol=1e-5)


def test_decoding_allocates_no_array_data(tmp_path):
    """After the first token, decoding reuses its buffers: no per-token array allocation.
    A 65536-token vocabulary makes one logits row 256 KiB, so a copy per token would show."""
    import tracemalloc

    from edgeoss.convert import convert
    from edgeoss.convert.synthetic import make_checkpoint
    hf = make_checkpoint(tmp_path / "hf", preset="tiny", seed=3, tokenizer_dir=False, vocab_size=65536)
    model = load(convert(str(hf), tmp_path / "q8", preset="q8", no_tokenizer=True, progress=False))
    model.forward(token_ids(model.config.vocab_size, 9, seed=2))
    tok = int(np.argmax(model.step(3)))
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(5):
            tok = int(np.argmax(model.step(tok)))
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024, peak  # Python objects only (array views, the token list)


def test_generate_greedy_follows_argmax_and_stops(converted):
    model = load(converted("tiny-s0", "q8"))
    prompt = token_ids(model.config.vocab_size, 6, seed=9)
    out = list(model.generate(prompt, max_tokens=8, temperature=0, stop=[]))
    assert len(out) == 8
    logits = model.logits(prompt + out[:-1])
    assert out == [int(np.argmax(row)) for row in logits[len(prompt) - 1:]]
    # the same call again reuses nothing stale and gives the same tokens
    assert list(model.generate(prompt, max_tokens=8, temperature=0, stop=[])) == out
    # a stop token ends generation right after it is produced
    assert list(model.generate(prompt, max_tokens=8, temperature=0, stop=[out[2]])) == out[:out.index(out[2]) + 1]


def test_generate_sampling_is_seeded(converted):
    model = load(converted("tiny-s0", "q8"))
    prompt = [1, 2, 3]
    a = list(model.generate(prompt, max_tokens=6, temperature=1.0, top_p=0.9, top_k=50, seed=7, stop=[]))
    b = list(model.generate(prompt, max_tokens=6, temperature=1.0, top_p=0.9, top_k=50, seed=7, stop=[]))
    assert a == b


def test_bad_token_ids_are_refused(converted):
    model = load(converted("tiny-s0", "q8"))
    with pytest.raises(ValueError, match="token ids must be in"):
        model.logits([0, model.config.vocab_size])


def test_120b_layout_converts_and_runs(tmp_path):
    """Nothing is specific to 20b: the 120b preset's depth and expert count (36 layers, 128
    experts) at tiny widths converts and matches the reference."""
    from edgeoss.convert import convert
    from edgeoss.convert.synthetic import make_checkpoint
    hf = make_checkpoint(tmp_path / "hf", preset="120b", seed=4, tokenizer_dir=False, progress=False,
                         hidden_size=64, intermediate_size=64, num_attention_heads=2, num_key_value_heads=1,
                         vocab_size=300, sliding_window=4)
    cfg, w = reference.load_checkpoint(hf)
    assert cfg["num_hidden_layers"] == 36 and cfg["num_local_experts"] == 128
    model = load(convert(str(hf), tmp_path / "m", preset="bf16", no_tokenizer=True, progress=False))
    ids = token_ids(300, 12, seed=1)
    got = model.logits(ids)
    assert reference.rel_l2(got, reference.forward(cfg, w, ids, routing=model.last_routing)) <= BOUNDS["bf16"]
