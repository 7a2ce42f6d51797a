"""The converter: lossless experts, bounded quantization error, FORMAT.md's layout claims, and
clear refusals of bad input that leave nothing behind."""

import hashlib
import json
import shutil

import numpy as np
import pytest

import reference
from conftest import tokenizer_dir
from edgeoss.format import model_dir as fmt
from edgeoss.cli.main import main
from edgeoss.convert import convert
from edgeoss.convert.quantize import (dequantize_mxfp4, dequantize_q4, dequantize_q8, hf_to_kernel_order,
                                      quantize_mxfp4)
from edgeoss.convert.vocab import O200K_BASE_SHA256


def source_tensors(path):
    out = {}
    for f in sorted(path.glob("*.safetensors")):
        out.update(reference.read_safetensors(f))
    return out


@pytest.mark.parametrize("preset", ["q8", "q4", "bf16"])
def test_experts_are_bit_exact(hf_checkpoints, converted, preset):
    src = source_tensors(hf_checkpoints["odd-s1"])
    m = fmt.ModelFiles(converted("odd-s1", preset))
    cfg = m.config
    for layer in range(cfg.num_hidden_layers):
        name = fmt.layer_tensor_names(layer)["experts"]
        blob, parts = m.experts(name), m.tensors[name]["parts"]
        p = f"model.layers.{layer}.mlp.experts."
        for e in range(cfg.num_local_experts):
            def part(k):
                q = parts[k]
                return blob[e, q["offset"]:q["offset"] + q["nbytes"]].view(fmt.DTYPES[q["dtype"]]).reshape(q["shape"])
            for proj in ("gate_up", "down"):
                blocks = src[p + f"{proj}_proj_blocks"][1][e]
                assert np.array_equal(part(f"{proj}_blocks"), hf_to_kernel_order(blocks))
                assert np.array_equal(part(f"{proj}_scales"), src[p + f"{proj}_proj_scales"][1][e])
                bias = reference.bf16_to_float64(src[p + f"{proj}_proj_bias"][1][e])
                assert np.array_equal(part(f"{proj}_bias"), bias.astype(np.float32))


def test_nibble_reorder_is_a_lossless_permutation():
    packed = np.random.default_rng(0).integers(0, 256, (5, 3, 16), dtype=np.uint8)
    hf = reference.dequant_mxfp4(packed, np.full((5, 3), 127, np.uint8))
    ours = dequantize_mxfp4(hf_to_kernel_order(packed), np.full((5, 3), 127, np.uint8))
    assert np.array_equal(hf, ours)


@pytest.mark.parametrize("preset", ["q8", "q4"])
def test_quantized_matrices_error_bounds(hf_checkpoints, converted, preset):
    """Every element is within one quantization step (q4) or half a step (q8) of the source."""
    src = source_tensors(hf_checkpoints["tiny-s0"])
    m = fmt.ModelFiles(converted("tiny-s0", preset))
    for name, sources in (("embed", ["model.embed_tokens.weight"]), ("lm_head", ["lm_head.weight"]),
                          ("layers.1.qkv", [f"model.layers.1.self_attn.{x}_proj.weight" for x in "qkv"]),
                          ("layers.2.o", ["model.layers.2.self_attn.o_proj.weight"])):
        want = np.concatenate([reference.bf16_to_float64(src[s][1]) for s in sources])
        kind, parts = m.matrix(name)
        assert kind == preset
        deq = (dequantize_q8 if preset == "q8" else dequantize_q4)(parts["qs"], parts["scales"])
        step = np.repeat(np.abs(parts["scales"].astype(np.float64)), 32, axis=-1)
        allowed = step * (0.5 if preset == "q8" else 1.0) * 1.001 + 1e-12
        assert np.all(np.abs(deq - want) <= allowed), name
        err = np.linalg.norm(deq - want) / np.linalg.norm(want)
        assert err < (0.01 if preset == "q8" else 0.15), (name, err)


def test_bf16_preset_keeps_bits(hf_checkpoints, converted):
    src = source_tensors(hf_checkpoints["tiny-s0"])
    m = fmt.ModelFiles(converted("tiny-s0", "bf16"))
    assert np.array_equal(m.matrix("lm_head")[1]["data"], src["lm_head.weight"][1])
    assert np.array_equal(m.matrix("layers.0.router")[1]["data"], src["model.layers.0.mlp.router.weight"][1])


def test_dense_experts_are_quantized_to_mxfp4(tmp_path):
    """Fine-tunes published with bf16 experts: each block gets a power-of-two scale and every
    value lands within half an e2m1 step of the source."""
    from edgeoss.convert.synthetic import make_checkpoint
    hf = make_checkpoint(tmp_path / "dense", preset="tiny", seed=3, tokenizer_dir=False, vocab_size=512,
                         num_hidden_layers=2, dense_experts=True)
    src = source_tensors(hf)
    m = fmt.ModelFiles(convert(str(hf), tmp_path / "out", no_tokenizer=True, progress=False))
    name = fmt.layer_tensor_names(1)["experts"]
    blob, parts = m.experts(name), m.tensors[name]["parts"]
    w = reference.bf16_to_float64(src["model.layers.1.mlp.experts.gate_up_proj"][1])  # [E, in, out]
    for e in range(m.config.num_local_experts):
        q = parts["gate_up_blocks"]
        blocks = blob[e, q["offset"]:q["offset"] + q["nbytes"]].reshape(q["shape"])
        s = parts["gate_up_scales"]
        scales = blob[e, s["offset"]:s["offset"] + s["nbytes"]].reshape(s["shape"])
        deq = dequantize_mxfp4(blocks, scales)
        want = w[e].T
        scale = np.repeat(2.0 ** (scales.astype(np.float64) - 127), 32, axis=-1)
        assert np.all(np.abs(deq - want) <= scale * 1.0 + 1e-12)   # half the widest e2m1 gap (4 -> 6)
        assert np.abs(want).max() <= 6 * scale.max()
        err = np.linalg.norm(deq - want) / np.linalg.norm(want)
        assert err < 0.12, err


def test_mxfp4_quantizer_round_trips_representable_values():
    rng = np.random.default_rng(1)
    blocks = rng.integers(0, 256, (7, 4, 16), dtype=np.uint8)
    scales = rng.integers(100, 140, (7, 4), dtype=np.uint8)
    values = dequantize_mxfp4(blocks, scales)
    b2, s2 = quantize_mxfp4(values)
    assert np.array_equal(dequantize_mxfp4(b2, s2), values)


def test_format_alignment_and_contiguity_claims(converted):
    """docs/FORMAT.md: every tensor and expert starts on a 4 KiB boundary, one expert's six
    parts lie inside its own contiguous range, nothing overlaps, the file size is exact."""
    path = converted("odd-s1", "q8")
    manifest = json.loads((path / "edgeoss.json").read_text())
    size = (path / "weights.bin").stat().st_size
    assert manifest["weights_bytes"] == size and manifest["alignment"] == 4096
    ranges = []
    for name, t in manifest["tensors"].items():
        if t["type"] == "mxfp4_experts":
            assert t["offset"] % 4096 == 0 and t["stride"] % 4096 == 0
            assert t["nbytes"] == t["count"] * t["stride"] and t["expert_bytes"] <= t["stride"]
            inner = sorted((p["offset"], p["offset"] + p["nbytes"]) for p in t["parts"].values())
            assert all(a % 64 == 0 for a, _ in inner)
            assert all(b1 <= a2 for (_, b1), (a2, _) in zip(inner, inner[1:]))
            assert inner[-1][1] == t["expert_bytes"]
            ranges.append((t["offset"], t["offset"] + t["nbytes"]))
        else:
            for p in t["parts"].values():
                assert p["offset"] % 4096 == 0
                assert p["nbytes"] == int(np.prod(p["shape"])) * np.dtype(fmt.DTYPES[p["dtype"]]).itemsize
                ranges.append((p["offset"], p["offset"] + p["nbytes"]))
    ranges.sort()
    assert all(b1 <= a2 for (_, b1), (a2, _) in zip(ranges, ranges[1:]))
    assert ranges[-1][1] == size


def test_tokenizer_is_bundled_and_checked(tmp_path):
    tok = tokenizer_dir()
    if tok is None:
        pytest.skip("no gpt-oss tokenizer in ../shared/tokenizer (set EDGEOSS_TOKENIZER_DIR)")
    from edgeoss.convert.synthetic import make_checkpoint
    hf = make_checkpoint(tmp_path / "hf", preset="tiny", seed=0, tokenizer_dir=tok, num_hidden_layers=2)
    out = convert(str(hf), tmp_path / "m", progress=False)
    data = (out / "o200k_base.tiktoken").read_bytes()
    assert hashlib.sha256(data).hexdigest() == O200K_BASE_SHA256
    # a different vocabulary is refused, and nothing is written
    t = json.loads((hf / "tokenizer.json").read_text())
    t["model"]["vocab"]["!!injected!!"] = len(t["model"]["vocab"])
    (hf / "tokenizer.json").write_text(json.dumps(t))
    with pytest.raises(ValueError, match="not gpt-oss's o200k vocabulary"):
        convert(str(hf), tmp_path / "m2", progress=False)
    assert not (tmp_path / "m2").exists()


# -- bad input: one clear line on stderr, exit code 2, nothing left behind ------------------

def _break_header(shard, old: bytes, new: bytes):
    data = bytearray(shard.read_bytes())
    n = int.from_bytes(data[:8], "little")
    head = bytes(data[8:8 + n])
    assert old in head and len(old) == len(new)
    data[8:8 + n] = head.replace(old, new, 1)
    shard.write_bytes(bytes(data))


def _first_shard_with(path, name):
    index = json.loads((path / "model.safetensors.index.json").read_text())
    return path / index["weight_map"][name]


BREAKAGES = {
    "missing shard": (lambda p: _first_shard_with(p, "lm_head.weight").unlink(), "missing"),
    "truncated shard": (lambda p: (lambda f: f.write_bytes(f.read_bytes()[:-1000]))(
        _first_shard_with(p, "model.layers.1.mlp.experts.down_proj_blocks")), "truncated"),
    "wrong shape": (lambda p: _break_header(_first_shard_with(p, "model.layers.0.self_attn.o_proj.weight"),
                                            b'"shape":[128,256]', b'"shape":[256,128]'), "expected"),
    "wrong dtype": (lambda p: _break_header(
        _first_shard_with(p, "model.layers.0.mlp.experts.down_proj_scales"), b'"dtype":"U8"', b'"dtype":"I8"'),
        "expected"),
    "not gpt-oss": (lambda p: (p / "config.json").write_text(
        (p / "config.json").read_text().replace('"gpt_oss"', '"llama"')), "not 'gpt_oss'"),
    "garbage bytes": (lambda p: _first_shard_with(p, "model.norm.weight").write_bytes(
        np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()), "safetensors"),
    "garbage config": (lambda p: (p / "config.json").write_bytes(b"\x00\xffnot json"), "config.json"),
}


@pytest.mark.parametrize("case", list(BREAKAGES))
def test_bad_checkpoints_are_refused_cleanly(hf_checkpoints, tmp_path, capsys, case):
    src = tmp_path / "src"
    shutil.copytree(hf_checkpoints["tiny-s0"], src)
    # the tiny shapes the breakages refer to
    assert json.loads((src / "config.json").read_text())["hidden_size"] == 128
    breaker, needle = BREAKAGES[case]
    breaker(src)
    out = tmp_path / "out"
    code = main(["convert", str(src), str(out), "--no-tokenizer"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("edgeoss: error: ") and "Traceback" not in err
    assert needle in err, err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no partial directory either


def test_existing_output_is_kept_without_force(hf_checkpoints, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    assert main(["convert", str(hf_checkpoints["tiny-s0"]), str(out), "--no-tokenizer"]) == 2
    assert "--force" in capsys.readouterr().err
    assert (out / "precious.txt").read_text() == "keep me"


def test_failed_forced_conversion_keeps_the_old_model(hf_checkpoints, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    import edgeoss.convert as conv

    def boom(*a, **k):
        raise KeyboardInterrupt  # the user pressing Ctrl-C in the middle of the experts
    monkeypatch.setattr(conv, "_write_experts", boom)
    with pytest.raises(KeyboardInterrupt):
        convert(str(hf_checkpoints["tiny-s0"]), out, force=True, no_tokenizer=True, progress=False)
    assert (out / "precious.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_checkpoint_without_tokenizer_files_gets_the_shipped_vocabulary(tmp_path):
    """gpt-oss has one vocabulary: edgeoss ships it, so a bare checkpoint converts to a model
    that speaks text, offline."""
    from edgeoss.convert.synthetic import make_checkpoint
    from edgeoss.convert.vocab import O200K_BASE_SHA256
    from edgeoss.engine.model import load
    hf = make_checkpoint(tmp_path / "hf", preset="tiny", seed=0, tokenizer_dir=None, num_hidden_layers=2)
    assert not (hf / "tokenizer.json").exists()
    out = convert(str(hf), tmp_path / "out", progress=False)
    manifest = json.loads((out / "edgeoss.json").read_text())
    assert manifest["tokenizer"]["sha256"] == O200K_BASE_SHA256
    enc = load(out).tokenizer
    assert enc.decode(enc.encode("Hello, world")) == "Hello, world"


def test_missing_tokenizer_needs_an_explicit_choice(hf_checkpoints, tmp_path, capsys):
    """A vocabulary smaller than gpt-oss's cannot take it: converting needs --no-tokenizer."""
    assert main(["convert", str(hf_checkpoints["tiny-s0"]), str(tmp_path / "o")]) == 2
    assert "--no-tokenizer" in capsys.readouterr().err


def test_loading_something_that_is_not_a_model(tmp_path, capsys):
    assert main(["info", str(tmp_path)]) == 2
    assert "not an edgeoss model" in capsys.readouterr().err
