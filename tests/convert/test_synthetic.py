"""Synthetic gpt-oss checkpoints (edgeoss.convert.synthetic): layout, determinism, MXFP4 encoding,
the dense-experts twin, the health of a forward pass through tests/reference.py, and the CLI."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeoss.convert import synthetic
from edgeoss.format.safetensors import SafetensorsFile, bf16_bits_to_f32
from edgeoss.convert.synthetic import make_checkpoint, plan_checkpoint

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / "tools" / "make_synthetic_checkpoint.py"


def _load_reference():
    spec = importlib.util.spec_from_file_location("reference", Path(__file__).resolve().parents[1] / "reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


R = _load_reference()


def make(path, **kw):
    kw.setdefault("tokenizer_dir", None)
    kw.setdefault("progress", False)
    return make_checkpoint(path, **kw)


def read_dir(path: Path) -> dict[str, tuple[str, tuple, SafetensorsFile]]:
    """{tensor name: (dtype, shape, file)} over every .safetensors file in a checkpoint."""
    out = {}
    for f in sorted(path.glob("*.safetensors")):
        st = SafetensorsFile(f)
        assert st.metadata == {"format": "pt"}
        for name, t in st.tensors.items():
            assert name not in out, f"{name} appears in two shards"
            out[name] = (t.dtype, t.shape, st)
    return out


def expected_tensors(H, I, L, nh, nkv, hd, E, V, dense=False) -> dict[str, tuple[str, tuple]]:
    """The gpt-oss-20b tensor list, written out independently of edgeoss.convert.synthetic."""
    t = {"model.embed_tokens.weight": ("BF16", (V, H)), "model.norm.weight": ("BF16", (H,)),
         "lm_head.weight": ("BF16", (V, H))}
    for i in range(L):
        p = f"model.layers.{i}."
        t.update({
            p + "input_layernorm.weight": ("BF16", (H,)),
            p + "post_attention_layernorm.weight": ("BF16", (H,)),
            p + "self_attn.q_proj.weight": ("BF16", (nh * hd, H)),
            p + "self_attn.q_proj.bias": ("BF16", (nh * hd,)),
            p + "self_attn.k_proj.weight": ("BF16", (nkv * hd, H)),
            p + "self_attn.k_proj.bias": ("BF16", (nkv * hd,)),
            p + "self_attn.v_proj.weight": ("BF16", (nkv * hd, H)),
            p + "self_attn.v_proj.bias": ("BF16", (nkv * hd,)),
            p + "self_attn.o_proj.weight": ("BF16", (H, nh * hd)),
            p + "self_attn.o_proj.bias": ("BF16", (H,)),
            p + "self_attn.sinks": ("BF16", (nh,)),
            p + "mlp.router.weight": ("BF16", (E, H)),
            p + "mlp.router.bias": ("BF16", (E,)),
            p + "mlp.experts.gate_up_proj_bias": ("BF16", (E, 2 * I)),
            p + "mlp.experts.down_proj_bias": ("BF16", (E, H)),
        })
        if dense:
            t[p + "mlp.experts.gate_up_proj"] = ("BF16", (E, H, 2 * I))
            t[p + "mlp.experts.down_proj"] = ("BF16", (E, I, H))
        else:
            t[p + "mlp.experts.gate_up_proj_blocks"] = ("U8", (E, 2 * I, H // 32, 16))
            t[p + "mlp.experts.gate_up_proj_scales"] = ("U8", (E, 2 * I, H // 32))
            t[p + "mlp.experts.down_proj_blocks"] = ("U8", (E, H, I // 32, 16))
            t[p + "mlp.experts.down_proj_scales"] = ("U8", (E, H, I // 32))
    return t


def check_layout(path: Path, expect: dict, shard_names: list[str]):
    tensors = read_dir(path)
    assert {n: (d, s) for n, (d, s, _) in tensors.items()} == expect
    assert sorted(p.name for p in path.glob("*.safetensors")) == sorted(shard_names)
    index_path = path / "model.safetensors.index.json"
    if len(shard_names) == 1:
        assert not index_path.exists()
        return
    index = json.loads(index_path.read_text())
    weight_map = index["weight_map"]
    assert sorted(weight_map) == sorted(expect)  # every tensor exactly once (JSON keys are unique)
    for name, shard in weight_map.items():
        assert tensors[name][2].path.name == shard
    total = sum(st.tensors[n].nbytes for n, (_, _, st) in tensors.items())
    assert index["metadata"]["total_size"] == total


def file_hashes(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


# ---------------------------------------------------------------------------------------
# Layout


def test_tiny_layout_and_config(tmp_path):
    out = make(tmp_path / "tiny")
    check_layout(out, expected_tensors(128, 128, 4, 4, 2, 64, 8, 201088),
                 ["model-00000-of-00001.safetensors", "model-00001-of-00001.safetensors"])
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["GptOssForCausalLM"] and cfg["model_type"] == "gpt_oss"
    assert (cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]) == (128, 128, 4)
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]) == (4, 2, 64)
    assert (cfg["num_local_experts"], cfg["num_experts_per_tok"], cfg["experts_per_token"]) == (8, 4, 4)
    assert (cfg["vocab_size"], cfg["sliding_window"]) == (201088, 8)
    assert cfg["layer_types"] == ["sliding_attention", "full_attention"] * 2
    assert cfg["quantization_config"]["quant_method"] == "mxfp4"
    assert (cfg["eos_token_id"], cfg["pad_token_id"]) == (200002, 199999)
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["bos_token_id"] == 199998 and gen["eos_token_id"] == [200002, 199999, 200012]
    assert gen["pad_token_id"] == 199999 and gen["do_sample"] is True
    assert not (out / "tokenizer.json").exists()


def test_small_variant_layout(tmp_path):
    out = make(tmp_path / "small", layers=1, experts=4, vocab=1024, shards=3)
    check_layout(out, expected_tensors(128, 128, 1, 4, 2, 64, 4, 1024),
                 [f"model-0000{i}-of-00002.safetensors" for i in range(3)])
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["layer_types"] == ["sliding_attention"] and cfg["num_local_experts"] == 4
    # the real special ids do not fit a 1024-token vocabulary: the top ids stand in
    assert (cfg["eos_token_id"], cfg["pad_token_id"]) == (1022, 1023)
    gen = json.loads((out / "generation_config.json").read_text())
    assert max([gen["bos_token_id"], gen["pad_token_id"], *gen["eos_token_id"]]) < 1024


def test_real_widths_layout_and_hf_naming(tmp_path):
    out = make(tmp_path / "w", preset="20b", layers=1, experts=2, experts_per_token=2, vocab=64,
               shard_naming="hf", shards=2)
    check_layout(out, expected_tensors(2880, 2880, 1, 64, 8, 64, 2, 64),
                 ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"])


def test_single_shard_is_model_safetensors(tmp_path):
    out = make(tmp_path / "one", layers=1, experts=4, vocab=256, shards=1)
    check_layout(out, expected_tensors(128, 128, 1, 4, 2, 64, 4, 256), ["model.safetensors"])
    cfg, w = R.load_checkpoint(out)
    assert w["model.layers.0.mlp.experts.gate_up_proj"].shape == (4, 256, 128)


def test_official_safetensors_reader_agrees(tmp_path):
    safetensors = pytest.importorskip("safetensors")
    out = make(tmp_path / "o", layers=1, experts=4, vocab=256)
    for f in out.glob("*.safetensors"):
        ours = SafetensorsFile(f)
        with safetensors.safe_open(str(f), framework="np") as g:
            assert g.metadata() == {"format": "pt"}
            assert sorted(g.keys()) == sorted(ours.tensors)
            for name in g.keys():
                if ours.tensors[name].dtype == "U8":  # NumPy cannot hold BF16
                    assert np.array_equal(g.get_tensor(name), ours.get(name))


# The real openai/gpt-oss-20b config.json, as published.
REAL_20B_CONFIG = {
    "architectures": ["GptOssForCausalLM"], "attention_bias": True, "attention_dropout": 0.0,
    "eos_token_id": 200002, "experts_per_token": 4, "head_dim": 64, "hidden_act": "silu",
    "hidden_size": 2880, "initial_context_length": 4096, "initializer_range": 0.02,
    "intermediate_size": 2880,
    "layer_types": ["sliding_attention", "full_attention"] * 12,
    "max_position_embeddings": 131072, "model_type": "gpt_oss", "num_attention_heads": 64,
    "num_experts_per_tok": 4, "num_hidden_layers": 24, "num_key_value_heads": 8,
    "num_local_experts": 32, "output_router_logits": False, "pad_token_id": 199999,
    "quantization_config": {"modules_to_not_convert": ["model.layers.*.self_attn",
                                                       "model.layers.*.mlp.router",
                                                       "model.embed_tokens", "lm_head"],
                            "quant_method": "mxfp4"},
    "rms_norm_eps": 1e-05,
    "rope_scaling": {"beta_fast": 32.0, "beta_slow": 1.0, "factor": 32.0,
                     "original_max_position_embeddings": 4096, "rope_type": "yarn",
                     "truncate": False},
    "rope_theta": 150000, "router_aux_loss_coef": 0.9, "sliding_window": 128,
    "swiglu_limit": 7.0, "tie_word_embeddings": False, "transformers_version": "4.55.0.dev0",
    "use_cache": True, "vocab_size": 201088,
}


def test_20b_plan_matches_the_real_repo():
    config, plan = plan_checkpoint("20b")
    assert {k: v for k, v in config.items() if k != "torch_dtype"} == REAL_20B_CONFIG
    assert config["torch_dtype"] == "bfloat16"
    assert list(plan) == ["model-00000-of-00002.safetensors", "model-00001-of-00002.safetensors",
                          "model-00002-of-00002.safetensors"]
    specs = [s for group in plan.values() for s in group]
    assert {s.name: (s.dtype, s.shape) for s in specs} == expected_tensors(
        2880, 2880, 24, 64, 8, 64, 32, 201088)
    assert sum(s.nbytes for s in specs) == 13_761_264_768  # the real index's total_size
    where = {s.name: f for f, group in plan.items() for s in group}
    # where the real index puts a few tensors (shards are cut inside layers 18 and 6)
    assert where["model.layers.18.self_attn.v_proj.bias"] == "model-00000-of-00002.safetensors"
    assert where["model.layers.18.self_attn.q_proj.weight"] == "model-00001-of-00002.safetensors"
    assert where["model.layers.6.mlp.experts.gate_up_proj_bias"] == "model-00001-of-00002.safetensors"
    assert where["model.layers.6.mlp.experts.gate_up_proj_blocks"] == "model-00002-of-00002.safetensors"
    assert where["model.layers.17.mlp.experts.down_proj_scales"] == "model-00000-of-00002.safetensors"
    assert where["model.layers.9.post_attention_layernorm.weight"] == "model-00002-of-00002.safetensors"
    assert where["lm_head.weight"] == where["model.embed_tokens.weight"] == "model-00002-of-00002.safetensors"
    # within a file, data is laid out as the safetensors library does: BF16 first, by name
    first = plan["model-00000-of-00002.safetensors"]
    assert [s.dtype for s in first] == sorted((s.dtype for s in first), key=lambda d: d != "BF16")
    assert [s.name for s in first if s.dtype == "U8"] == sorted(s.name for s in first if s.dtype == "U8")


def test_120b_plan():
    config, plan = plan_checkpoint("120b")
    assert config["num_hidden_layers"] == 36 and config["num_local_experts"] == 128
    assert list(plan) == [f"model-{i:05d}-of-00014.safetensors" for i in range(15)]
    assert all(sum(s.nbytes for s in g) <= 5_000_000_000 for g in plan.values())
    assert sum(s.nbytes for g in plan.values() for s in g) == 65_248_815_744


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="multiples of 32"):
        synthetic.make_config("tiny", hidden=100)
    with pytest.raises(ValueError, match="num_key_value_heads"):
        synthetic.make_config("tiny", heads=6, kv_heads=4)
    with pytest.raises(ValueError, match="exceeds"):
        synthetic.make_config("tiny", experts=2)
    with pytest.raises(ValueError, match="unknown preset"):
        synthetic.make_config("7b")


# ---------------------------------------------------------------------------------------
# Determinism and encoding


def test_deterministic_by_seed(tmp_path):
    a = file_hashes(make(tmp_path / "a", layers=2, seed=5))
    b = file_hashes(make(tmp_path / "b", layers=2, seed=5, workers=1, chunk_bytes=1 << 16))
    c = file_hashes(make(tmp_path / "c", layers=2, seed=6))
    assert a == b
    shards = [n for n in a if n.endswith(".safetensors")]
    assert all(a[n] != c[n] for n in shards)
    assert a["config.json"] == c["config.json"]


def test_fill_does_not_depend_on_chunking():
    config = synthetic.make_config("tiny", layers=1, vocab=300)
    for dense in (False, True):
        whole = {s.name: s.fill(0, s.shape[0]) for s in synthetic.tensor_specs(config, 3, dense)}
        # fresh specs (no scales cached from the blocks), read back to front in odd pieces
        for s in synthetic.tensor_specs(config, 3, dense):
            n = s.shape[0]
            cuts = sorted({0, n, *[c for c in (1, n // 3, n // 2 + 1, n - 1) if 0 < c < n]})
            pieces = [s.fill(a, b) for a, b in zip(cuts, cuts[1:])][::-1]
            assert np.array_equal(np.concatenate(pieces[::-1]), whole[s.name]), s.name


def test_mxfp4_encoding(tmp_path):
    out = make(tmp_path / "m", layers=2, experts=4, vocab=256, intermediate=256)
    tensors = read_dir(out)
    for i in range(2):
        for proj, fan_in, gain in (("gate_up_proj", 128, 1.8), ("down_proj", 256, 0.3)):
            base = f"model.layers.{i}.mlp.experts.{proj}"
            blocks = tensors[base + "_blocks"][2].get(base + "_blocks")
            scales = tensors[base + "_scales"][2].get(base + "_scales")
            assert scales.max() < 255 and scales.min() > 0
            assert len(np.unique(scales)) >= 3  # scales vary from block to block
            w = R.dequant_mxfp4(blocks, scales)  # the reference's reading: low nibble first
            assert np.array_equal(w, synthetic.mxfp4_dequantize(blocks, scales))
            assert 0.8 < w.std() * math.sqrt(fan_in) / gain < 1.5
            assert abs(w.mean()) < 0.05 * w.std()
            assert np.isin(w[0, 0, :32] / np.ldexp(1.0, int(scales[0, 0, 0]) - 127),
                           [s * m for s in (1, -1) for m in (0, .5, 1, 1.5, 2, 3, 4, 6)]).all()


def test_value_scales(tmp_path):
    out = make(tmp_path / "v", layers=1, vocab=4096)
    t = read_dir(out)

    def f(name):
        return bf16_bits_to_f32(t[name][2].get(name)).astype(np.float64)

    assert abs(f("model.embed_tokens.weight").std() - 1.0) < 0.05
    assert abs(f("model.norm.weight").mean() - 1.0) < 0.05 and f("model.norm.weight").min() > 0.5
    assert abs(f("model.layers.0.self_attn.q_proj.weight").std() * math.sqrt(128) - 1) < 0.1
    assert abs(f("model.layers.0.self_attn.o_proj.weight").std() * math.sqrt(256) - 1) < 0.1
    sinks = f("model.layers.0.self_attn.sinks")
    assert sinks.min() >= -1 and sinks.max() <= 4 and sinks.std() > 0.3
    assert abs(f("lm_head.weight").std() * math.sqrt(128) - 2) < 0.1


def test_dense_experts_twin(tmp_path):
    kw = dict(layers=2, experts=4, vocab=512, seed=11)
    q = make(tmp_path / "q", **kw)
    d = make(tmp_path / "d", dense_experts=True, **kw)
    check_layout(d, expected_tensors(128, 128, 2, 4, 2, 64, 4, 512, dense=True),
                 ["model-00000-of-00001.safetensors", "model-00001-of-00001.safetensors"])
    qcfg = json.loads((q / "config.json").read_text())
    dcfg = json.loads((d / "config.json").read_text())
    assert "quantization_config" not in dcfg
    assert {k: v for k, v in qcfg.items() if k != "quantization_config"} == dcfg
    tq, td = read_dir(q), read_dir(d)
    for name, (dtype, _, st) in td.items():
        if name.endswith(("gate_up_proj", "down_proj")):
            dense = bf16_bits_to_f32(st.get(name))  # [E, in, out]
            w = R.dequant_mxfp4(tq[name + "_blocks"][2].get(name + "_blocks"),
                                tq[name + "_scales"][2].get(name + "_scales"))  # [E, out, in]
            assert np.array_equal(dense.transpose(0, 2, 1), w), name  # exactly the same values
        else:
            assert np.array_equal(st.get(name), tq[name][2].get(name)), name
    ids = [5, 9, 500, 3, 3, 17, 100, 2, 42, 7]
    lq = R.forward(*R.load_checkpoint(q), ids)
    ld = R.forward(*R.load_checkpoint(d), ids)
    assert np.array_equal(lq, ld)


# ---------------------------------------------------------------------------------------
# Health of a forward pass (tests/reference.py, float64)


def _convert(raw: dict, names) -> dict[str, np.ndarray]:
    """Like reference.load_checkpoint, for the named tensors only. MXFP4 goes through
    synthetic.mxfp4_dequantize (float32, exact, 5x faster than the reference's; the two agree,
    see test_mxfp4_encoding)."""
    w = {}
    for name in names:
        if name.endswith("_scales"):
            continue
        dtype, arr = raw[name]
        if name.endswith("_blocks"):
            base = name[: -len("_blocks")]
            w[base] = synthetic.mxfp4_dequantize(arr, raw[base + "_scales"][1]).astype(np.float64)
        elif name.endswith(("mlp.experts.gate_up_proj", "mlp.experts.down_proj")):
            w[name] = np.ascontiguousarray(R.bf16_to_float64(arr).transpose(0, 2, 1))
        else:
            w[name] = R.bf16_to_float64(arr)
    return w


def layerwise_forward(path: Path, ids) -> tuple[np.ndarray, list[float]]:
    """reference.forward, one layer's weights in memory at a time; also the RMS of the hidden
    state after the embedding and after each layer."""
    cfg = json.loads((path / "config.json").read_text())
    raw = {}
    for f in sorted(path.glob("*.safetensors")):
        raw.update(R.read_safetensors(f))
    ids = np.asarray(ids)
    T, eps = len(ids), cfg["rms_norm_eps"]
    inv_freq, factor = R.rope_parameters(cfg)
    angles = np.arange(T)[:, None] * inv_freq[None, :]
    cos, sin = np.cos(angles) * factor, np.sin(angles) * factor
    x = R.bf16_to_float64(raw["model.embed_tokens.weight"][1][ids])
    rms = [float(np.sqrt(np.mean(x * x)))]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}"
        w = _convert(raw, [n for n in raw if n.startswith(p + ".")])
        window = cfg["sliding_window"] if R.layer_type(cfg, i) == "sliding_attention" else None
        h = R.rms_norm(x, w[f"{p}.input_layernorm.weight"], eps)
        x = x + R.attention(cfg, w, f"{p}.self_attn", h, cos, sin, window)
        h = R.rms_norm(x, w[f"{p}.post_attention_layernorm.weight"], eps)
        x = x + R.moe(cfg, w, f"{p}.mlp", h)
        rms.append(float(np.sqrt(np.mean(x * x))))
        del w
    w = _convert(raw, ["model.norm.weight", "lm_head.weight"])
    x = R.rms_norm(x, w["model.norm.weight"], eps)
    return x @ w["lm_head.weight"].T, rms


def assert_healthy(logits: np.ndarray, rms: list[float]):
    assert np.isfinite(logits).all()
    spread = logits.std(axis=1)
    assert (spread > 0.1).all() and (spread < 100).all(), spread
    assert np.ptp(logits, axis=0).max() > 0.1  # positions differ
    assert len(set(logits.argmax(axis=1).tolist())) > 1
    assert all(0.1 < r < 20 for r in rms), rms
    # every layer changes the hidden state, none blows it up
    steps = np.diff(rms)
    assert (np.abs(steps) > 1e-3).all() and (np.asarray(rms[1:]) < 3 * np.asarray(rms[:-1])).all(), rms


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tiny_preset_is_healthy(tmp_path, seed):
    out = make(tmp_path / "t", seed=seed)
    ids = np.random.default_rng(seed).integers(0, 200019, 20)  # longer than the window of 8
    logits, rms = layerwise_forward(out, ids)
    assert_healthy(logits, rms)
    if seed == 0:  # the layer-by-layer pass is reference.forward itself
        assert np.array_equal(logits, R.forward(*R.load_checkpoint(out), ids))


def test_deep_model_stays_healthy(tmp_path):
    """24 layers (the 20b depth) at tiny widths: the residual stream grows slowly, no more."""
    out = make(tmp_path / "deep", layers=24, vocab=4096, seed=7)
    logits, rms = layerwise_forward(out, np.arange(0, 4000, 250))
    assert_healthy(logits, rms)
    assert rms[-1] < 10


def test_real_widths_are_healthy(tmp_path):
    """hidden 2880, intermediate 2880, 64 heads, 8 kv heads: the scales follow the widths."""
    out = make(tmp_path / "wide", preset="20b", layers=2, experts=2, experts_per_token=2,
               vocab=1024, seed=1)  # 2 experts: float64 experts of 2880 x 5760 are costly
    logits, rms = layerwise_forward(out, [3, 700, 12, 999, 12, 64])
    assert_healthy(logits, rms)


# ---------------------------------------------------------------------------------------
# Tokenizer, safety of the output folder, CLI


@pytest.fixture
def fake_tokenizer(tmp_path):
    d = tmp_path / "tok"
    d.mkdir()
    for f in synthetic.TOKENIZER_FILES:
        (d / f).write_text(json.dumps({"file": f}))
    return d


def test_tokenizer_files(tmp_path, fake_tokenizer, monkeypatch):
    out = make(tmp_path / "t", layers=1, tokenizer_dir=fake_tokenizer)
    for f in synthetic.TOKENIZER_FILES:
        assert (out / f).read_bytes() == (fake_tokenizer / f).read_bytes()
    monkeypatch.setenv("EDGEOSS_TOKENIZER_DIR", str(fake_tokenizer))
    assert synthetic.default_tokenizer_dir() == fake_tokenizer
    out = make(tmp_path / "auto", layers=1, tokenizer_dir="auto")
    assert (out / "tokenizer.json").read_bytes() == (fake_tokenizer / "tokenizer.json").read_bytes()
    with pytest.raises(ValueError, match="cannot hold"):
        make(tmp_path / "small", layers=1, vocab=1000, tokenizer_dir=fake_tokenizer)
    with pytest.raises(FileNotFoundError):
        make(tmp_path / "missing", layers=1, tokenizer_dir=tmp_path / "nowhere")


def test_no_tokenizer_found_is_said(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(synthetic, "default_tokenizer_dir", lambda: None)
    out = make(tmp_path / "t", layers=1, tokenizer_dir="auto")
    assert not (out / "tokenizer.json").exists()
    assert "no tokenizer" in capsys.readouterr().err


@pytest.mark.skipif(synthetic.default_tokenizer_dir() is None, reason="no ../shared/tokenizer")
def test_shared_tokenizer_is_copied_by_default(tmp_path):
    out = make_checkpoint(tmp_path / "t", layers=1, progress=False)
    tok = json.loads((out / "tokenizer.json").read_text())
    assert any(t["content"] == "<|return|>" and t["id"] == 200002 for t in tok["added_tokens"])


def test_existing_output_is_refused_unless_forced(tmp_path):
    out = make(tmp_path / "x", layers=1, seed=1)
    before = file_hashes(out)
    with pytest.raises(FileExistsError):
        make(out, layers=1, seed=2)
    assert file_hashes(out) == before
    make(out, layers=1, seed=2, force=True)
    assert file_hashes(out) != before
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="does not look like"):
        make(other, layers=1, force=True)
    assert (other / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes", "x"]


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    real = synthetic.write_safetensors
    calls = []

    def failing(path, specs, **kw):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(path, specs, **kw)

    monkeypatch.setattr(synthetic, "write_safetensors", failing)
    with pytest.raises(KeyboardInterrupt):
        make(tmp_path / "out", layers=1, shards=3, workers=1)
    assert list(tmp_path.iterdir()) == []


def test_cli(tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, str(CLI), str(out), "--preset", "tiny", "--layers", "1", "--experts", "4",
           "--experts-per-token", "2", "--vocab", "2048", "--sliding-window", "16", "--shards", "3",
           "--seed", "4", "--no-tokenizer", "--quiet"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["num_hidden_layers"], cfg["num_local_experts"], cfg["num_experts_per_tok"],
            cfg["vocab_size"], cfg["sliding_window"]) == (1, 4, 2, 2048, 16)
    assert len(list(out.glob("model-*.safetensors"))) == 3
    assert file_hashes(out) == file_hashes(make(tmp_path / "lib", layers=1, experts=4,
                                                experts_per_token=2, vocab=2048,
                                                sliding_window=16, shards=3, seed=4))
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "already exists" in r.stderr
    r = subprocess.run(cmd + ["--dense-experts", "--force", "--hidden", "64", "--heads", "2",
                              "--kv-heads", "1", "--head-dim", "32", "--intermediate", "96"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    check_layout(out, expected_tensors(64, 96, 1, 2, 1, 32, 4, 2048, dense=True),
                 [f"model-0000{i}-of-00002.safetensors" for i in range(3)])


def test_converted_directly_equals_converted_from_the_checkpoint(tmp_path):
    """--converted: the model without the checkpoint on disk is the same bytes as converting it."""
    from edgeoss.convert import convert
    from edgeoss.format.model_dir import ModelFiles

    kw = dict(preset="tiny", seed=4, tokenizer_dir=None, num_hidden_layers=2)
    hf = make(tmp_path / "hf", **kw)
    via = convert(str(hf), tmp_path / "via", preset="q8", progress=False, no_tokenizer=True)
    direct = synthetic.make_model(tmp_path / "direct", quant="q8", progress=False, **kw)
    assert (via / "weights.bin").read_bytes() == (direct / "weights.bin").read_bytes()
    a, b = (json.loads((p / "edgeoss.json").read_text()) for p in (via, direct))
    assert a["tensors"] == b["tensors"] and a["config"] == b["config"]
    assert ModelFiles(direct).config.num_hidden_layers == 2
    assert not list(tmp_path.glob(".direct*")), "the config-only source folder is left behind"


def test_converted_directly_refuses_a_disk_too_small(tmp_path, monkeypatch):
    import shutil as sh
    from collections import namedtuple

    from edgeoss.convert import ConvertError

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(sh, "disk_usage", lambda p: usage(10 << 30, 10 << 30, 1 << 20))
    with pytest.raises(ConvertError, match="GB free; the model needs"):
        synthetic.make_model(tmp_path / "m", preset="tiny", tokenizer_dir=None, progress=False)
    assert not (tmp_path / "m").exists() and not list(tmp_path.iterdir())


def test_cli_converted(tmp_path):
    out = tmp_path / "m"
    cmd = [sys.executable, str(CLI), str(out), "--preset", "tiny", "--layers", "1", "--no-tokenizer", "--quiet",
           "--converted", "q4"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    man = json.loads((out / "edgeoss.json").read_text())
    assert man["preset"] == "q4" and man["config"]["num_hidden_layers"] == 1
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "already exists" in r.stderr
    r = subprocess.run(cmd + ["--shards", "2", "--force"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "do not apply" in r.stderr
