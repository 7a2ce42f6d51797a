"""Checks of the float64 reference (tests/reference.py) against an outside oracle.

The golden logits were produced by Hugging Face transformers on a random-weight
gpt-oss checkpoint; if the reference disagrees, the reference is wrong.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import reference as ref  # noqa: E402


def _golden_dir() -> Path:
    shared = os.environ.get("EDGEOSS_SHARED")
    if shared:
        return Path(shared) / "golden"
    return Path(__file__).resolve().parents[2].parent / "shared" / "golden"


GOLDEN = _golden_dir()
CKPT = GOLDEN / "tiny-gpt-oss"


@pytest.fixture(scope="module")
def model():
    if not (CKPT / "config.json").exists():
        pytest.skip(f"golden folder not found at {GOLDEN}")
    return ref.load_checkpoint(CKPT)


@pytest.fixture(scope="module")
def tokens():
    if not (GOLDEN / "tokens.json").exists():
        pytest.skip(f"golden folder not found at {GOLDEN}")
    return json.loads((GOLDEN / "tokens.json").read_text())["tokens"]


@pytest.fixture(scope="module")
def full_logits(model, tokens):
    config, weights = model
    return ref.forward(config, weights, tokens)


# ---------------------------------------------------------------- unit checks


def test_bf16_widening_is_exact():
    # 1.0, -2.0, 0.15625 (exact in bf16), smallest normal-ish pattern
    bits = np.array([0x3F80, 0xC000, 0x3E20, 0x0080], dtype=np.uint16)
    got = ref.bf16_to_float64(bits)
    assert got[:3].tolist() == [1.0, -2.0, 0.15625]
    assert got[3] == 2.0**-126


def test_mxfp4_nibble_order_and_scale():
    blocks = np.zeros((1, 16), dtype=np.uint8)
    # Byte 0: low nibble 0x2 (+1.0) is element 0, high nibble 0xF (-6.0) is element 1.
    blocks[0, 0] = 0xF2
    # Byte 1: low 0x9 (-0.5), high 0x7 (+6.0).
    blocks[0, 1] = 0x79
    scales = np.array([128], dtype=np.uint8)  # 2**(128-127) = 2
    got = ref.dequant_mxfp4(blocks, scales)
    assert got.shape == (32,)
    assert got[:4].tolist() == [2.0, -12.0, -1.0, 12.0]
    assert not got[4:].any()


def test_dense_and_single_file_checkpoint_match_mxfp4(model, tmp_path):
    """Rewrite the experts in transformers' dense [E, in, out] layout into a
    single model.safetensors; loading it must give identical weights."""
    config, weights = model
    tensors = {}
    for name, w in weights.items():
        if name.endswith(("experts.gate_up_proj", "experts.down_proj")):
            tensors[name] = w.transpose(0, 2, 1).astype(np.float32)
        else:
            # Every other weight came from bf16, so float32 holds it exactly.
            tensors[name] = w.astype(np.float32)
    _write_safetensors(tmp_path / "model.safetensors", tensors)
    (tmp_path / "config.json").write_text(json.dumps(config))

    config2, weights2 = ref.load_checkpoint(tmp_path)
    assert config2 == config
    assert weights2.keys() == weights.keys()
    for name in weights:
        np.testing.assert_array_equal(weights2[name], weights[name], err_msg=name)


def _write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    header, chunks, offset = {}, [], 0
    for name, arr in tensors.items():
        data = np.ascontiguousarray(arr, dtype=np.float32).tobytes()
        header[name] = {
            "dtype": "F32",
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)
    head = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(len(head).to_bytes(8, "little"))
        f.write(head)
        f.writelines(chunks)


# ------------------------------------------------------------ golden oracle


def test_matches_transformers(full_logits):
    golden = np.load(GOLDEN / "logits_transformers.npy")
    assert full_logits.shape == golden.shape
    err = ref.rel_l2(full_logits, golden)
    assert err < 1e-5, f"rel_l2 vs transformers = {err:.3e}"


# ---------------------------------------------------------- structural checks


def test_causal_prefix(model, tokens, full_logits):
    config, weights = model
    for k in (1, 9, 23):
        prefix = ref.forward(config, weights, tokens[:k])
        np.testing.assert_allclose(prefix, full_logits[:k], rtol=0, atol=1e-9)


def _changed_positions(config, weights, tokens) -> np.ndarray:
    """Positions whose logits move when token 0 is replaced."""
    altered = list(tokens)
    altered[0] = (tokens[0] + 1) % config["vocab_size"]
    a = ref.forward(config, weights, tokens)
    b = ref.forward(config, weights, altered)
    return np.flatnonzero(np.abs(a - b).max(axis=1) > 0)


def test_sliding_window_masks_distant_tokens(model, tokens):
    config, weights = model
    n_layers, window = config["num_hidden_layers"], config["sliding_window"]
    assert window < len(tokens)

    # All layers sliding: token 0 reaches position p only through a chain of
    # hops each shorter than the window, i.e. p <= n_layers * (window - 1).
    sliding = dict(config, layer_types=["sliding_attention"] * n_layers)
    reach = n_layers * (window - 1)
    changed = _changed_positions(sliding, weights, tokens)
    assert changed.tolist() == list(range(reach + 1))

    # With the checkpoint's own (partly full) layers, token 0 reaches the end.
    changed = _changed_positions(config, weights, tokens)
    assert changed.tolist() == list(range(len(tokens)))
