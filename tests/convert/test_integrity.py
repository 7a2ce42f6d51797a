"""Integrity: checksums recorded at conversion and checked by `edgeoss verify`; a manifest that
contradicts itself or its file is refused with a message naming the field, never a traceback;
progress bars only on a terminal."""

import json
import shutil

import numpy as np
import pytest
import xxhash

from edgeoss.cli.main import main
from edgeoss.format import integrity
from edgeoss.format import model_dir as fmt


@pytest.fixture
def model(converted, tmp_path):
    """A private copy of a converted tiny model, free to damage."""
    return shutil.copytree(converted("tiny-s0", "q8"), tmp_path / "model")


def read_manifest(path):
    return json.loads((path / "edgeoss.json").read_text())


def write_manifest(path, m):
    (path / "edgeoss.json").write_text(json.dumps(m))


def flip(path, offset):
    with open(path / "weights.bin", "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x40]))


# -- checksums ---------------------------------------------------------------------------------

def test_checksums_cover_what_format_md_says(model):
    """Each part's checksum is XXH3-64 of its nbytes at offset; each expert's of its expert_bytes."""
    m = read_manifest(model)
    data = (model / "weights.bin").read_bytes()
    n = 0
    for t in m["tensors"].values():
        if t["type"] == "mxfp4_experts":
            assert len(t["checksums"]) == t["count"]
            for e, s in enumerate(t["checksums"]):
                a = t["offset"] + e * t["stride"]
                assert s == "xxh3_64:" + xxhash.xxh3_64_hexdigest(data[a:a + t["expert_bytes"]])
                n += 1
        else:
            for p in t["parts"].values():
                assert p["checksum"] == "xxh3_64:" + xxhash.xxh3_64_hexdigest(data[p["offset"]:p["offset"] + p["nbytes"]])
                n += 1
    assert n > 40


def test_intact_model_verifies(model, capsys):
    rep = integrity.verify_model(model)
    assert rep.ok and rep.checked > 40 and rep.bytes_read == (model / "weights.bin").stat().st_size
    assert main(["verify", str(model)]) == 0
    out, err = capsys.readouterr()
    assert "OK" in out and "\r" not in out + err
    assert err.count("\n") == 1 and err.startswith("verify: ")   # not a terminal: one stage line


@pytest.mark.parametrize("tensor,part,expert", [
    ("layers.1.qkv", "qs", None), ("embed", "scales", None), ("lm_head", "qs", None),
    ("layers.2.experts", None, 3), ("norm", "data", None)])
def test_a_flipped_byte_is_named(model, capsys, tensor, part, expert):
    t = read_manifest(model)["tensors"][tensor]
    if expert is None:
        p = t["parts"][part]
        flip(model, p["offset"] + p["nbytes"] // 2)
        label = f"{tensor} (part {part})"
    else:
        flip(model, t["offset"] + expert * t["stride"] + t["expert_bytes"] - 1)
        label = f"{tensor} (expert {expert})"
    assert integrity.verify_model(model).mismatched == [label]
    assert main(["verify", str(model)]) == 1
    out = capsys.readouterr().out
    assert f"MISMATCH {label}" in out and "DAMAGED" in out


def test_4kib_overwritten_is_found(model, capsys):
    """The issue's case: 4 KiB of garbage somewhere inside weights.bin."""
    size = (model / "weights.bin").stat().st_size
    with open(model / "weights.bin", "r+b") as f:
        f.seek(size // 3)
        f.write(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    rep = integrity.verify_model(model)
    assert rep.mismatched and not rep.ok
    assert main(["verify", str(model)]) == 1


def test_nonzero_padding_is_reported(model):
    t = read_manifest(model)["tensors"]["layers.0.attn_norm"]["parts"]["data"]
    flip(model, t["offset"] + t["nbytes"] + 5)   # inside the zero padding up to the next 4 KiB
    rep = integrity.verify_model(model)
    assert len(rep.mismatched) == 1 and "padding" in rep.mismatched[0] and "layers.0.attn_norm" in rep.mismatched[0]


def test_small_reads_give_the_same_answer(model):
    """Reads that split spans and gaps anywhere: the same checksums as one read."""
    p = read_manifest(model)["tensors"]["layers.3.o"]["parts"]["scales"]
    flip(model, p["offset"] + 1)
    rep = integrity.Verifier(model).run(chunk=4096 + 7)
    assert rep.mismatched == ["layers.3.o (part scales)"]


def test_a_model_without_checksums_loads_but_cannot_be_verified(model, capsys):
    m = read_manifest(model)
    for t in m["tensors"].values():
        t.pop("checksums", None)
        for p in t["parts"].values():
            p.pop("checksum", None)
    write_manifest(model, m)
    fmt.ModelFiles(model)   # older models still load
    assert main(["verify", str(model)]) == 2
    err = capsys.readouterr().err
    assert "no checksums recorded (converted by an older edgeoss): reconvert to get them" in err
    assert "Traceback" not in err


def test_a_missing_checksum_among_others_fails(model, capsys):
    m = read_manifest(model)
    del m["tensors"]["layers.1.sinks"]["parts"]["data"]["checksum"]
    write_manifest(model, m)
    assert integrity.verify_model(model).unrecorded == ["layers.1.sinks (part data)"]
    assert main(["verify", str(model)]) == 1
    assert "NO CHECKSUM layers.1.sinks" in capsys.readouterr().out


def test_an_unknown_checksum_algorithm_is_refused(model, capsys):
    m = read_manifest(model)
    m["tensors"]["norm"]["parts"]["data"]["checksum"] = "blake9:00ff"
    write_manifest(model, m)
    assert main(["verify", str(model)]) == 2
    assert "blake9" in capsys.readouterr().err


# -- manifest validation -----------------------------------------------------------------------

def _set(path, value):
    def go(m):
        *head, last = path
        d = m
        for k in head:
            d = d[k]
        d[last] = value
    return go


def _del(path):
    def go(m):
        *head, last = path
        d = m
        for k in head:
            d = d[k]
        del d[last]
    return go


def _layers(n):
    def go(m):
        m["config"]["num_hidden_layers"] = n
    return go


QS = ("tensors", "layers.1.qkv", "parts", "qs")
EXP = ("tensors", "layers.2.experts")

FAULTS = {   # case -> (change to the manifest, text the message must contain)
    "no weights_bytes": (_del(("weights_bytes",)), "weights_bytes: missing"),
    "no config.hidden_size": (_del(("config", "hidden_size")), "config.hidden_size: missing"),
    "no tensor": (_del(("tensors", "layers.1.qkv")), 'tensors["layers.1.qkv"]: missing'),
    "no part offset": (_del(QS + ("offset",)), 'tensors["layers.1.qkv"].parts["qs"].offset: missing'),
    "no experts stride": (_del(EXP + ("stride",)), 'tensors["layers.2.experts"].stride: missing'),
    "no layer_types": (_del(("config", "layer_types")), "config.layer_types: missing"),
    "string for an int": (_set(("config", "num_hidden_layers"), "4"), "config.num_hidden_layers: expected an integer, got a string"),
    "bool for an int": (_set(("config", "hidden_size"), True), "config.hidden_size: expected an integer, got a boolean"),
    "float offset": (_set(QS + ("offset",), 4096.0), ".offset: expected an integer, got a number"),
    "bool format_version": (_set(("format_version",), True), "format_version: expected an integer"),
    "config not an object": (_set(("config",), [1, 2]), "config: expected an object, got a list"),
    "tensors not an object": (_set(("tensors",), None), "tensors: expected an object, got null"),
    "shape of strings": (_set(QS + ("shape",), ["512", 4, 32]), ".shape: [\"512\", 4, 32] is not a list of positive integers"),
    "more layers than layer_types": (_layers(5), "config.num_hidden_layers: 5, but config.layer_types lists 4 layers"),
    "fewer layers than layer_types": (_layers(3), "config.num_hidden_layers: 3, but config.layer_types lists 4 layers"),
    "unknown layer type": (_set(("config", "layer_types", 2), "global"), "config.layer_types[2]"),
    "experts count": (_set(EXP + ("count",), 7), 'tensors["layers.2.experts"].count: 7, but config.num_local_experts is 8'),
    "k above experts": (_set(("config", "num_experts_per_tok"), 9), "config.num_experts_per_tok: 9 is more than"),
    "heads vs kv heads": (_set(("config", "num_key_value_heads"), 3), "config.num_attention_heads"),
    "head_dim vs shape": (_set(("config", "head_dim"), 32), 'tensors["layers.0.qkv"].shape'),
    "offset out of range": (_set(QS + ("offset",), 1 << 30), "runs past the end of weights.bin"),
    "experts out of range": (_set(EXP + ("offset",), 1 << 30), 'tensors["layers.2.experts"].offset'),
    "negative offset": (_set(QS + ("offset",), -4096), ".offset: -4096 is less than 0"),
    "misaligned offset": (_set(QS + ("offset",), 4096 + 64), "is not a multiple of 4096"),
    "overlap": (_set(QS + ("offset",), 0), "overlap"),
    "nbytes vs shape": (_set(QS + ("nbytes",), 1000), 'tensors["layers.1.qkv"].parts["qs"].nbytes: 1000, but int8'),
    "shape vs config": (_set(QS + ("shape",), [512, 4, 16]), 'parts["qs"].shape: [512, 4, 16], but the config implies'),
    "unknown dtype": (_set(QS + ("dtype",), "int3"), '.dtype: "int3" is not a known dtype'),
    "wrong type": (_set(("tensors", "layers.1.qkv", "type"), "q4"), 'tensors["layers.1.qkv"].type: "q4"'),
    "expert_bytes above stride": (_set(EXP + ("expert_bytes",), 1 << 20), ".expert_bytes: 1048576 is more than the stride"),
    "expert part outside": (_set(EXP + ("parts", "down_bias", "offset"), 1 << 20), "runs past the expert's expert_bytes"),
    "checksum not hex": (_set(QS + ("checksum",), "xxh3_64:XYZ"), '.checksum: "xxh3_64:XYZ" is not'),
    "checksums short": (_set(EXP + ("checksums",), []), ".checksums: 0 checksums for 8 experts"),
    "bad preset": (_set(("preset",), "q3"), 'preset: "q3", expected one of'),
    "weights_file escapes": (_set(("weights_file",), "../weights.bin"), "weights_file"),
    "eos negative": (_set(("config", "eos_token_ids"), [-1]), "config.eos_token_ids[0]"),
    "nan theta": (_set(("config", "rope_theta"), float("nan")), "config.rope_theta"),
    "window beyond context": (_set(("config", "sliding_window"), 1 << 70), "config.sliding_window: 1180591620717411303424 is more than"),
    "unknown tensor": (_set(("tensors", "extra"), {}), 'tensors["extra"]: is not a tensor of this format'),
    "only the format fields": (lambda m: m.clear() or m.update({"format": "edgeoss", "format_version": 1}), "preset: missing"),
}


@pytest.mark.parametrize("case", list(FAULTS))
def test_manifest_faults_are_named(model, capsys, case):
    change, text = FAULTS[case]
    m = read_manifest(model)
    change(m)
    write_manifest(model, m)
    with pytest.raises(fmt.FormatError) as e:
        fmt.ModelFiles(model)
    assert text in str(e.value)
    assert "reconvert" in str(e.value)
    assert main(["info", str(model)]) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in err and err.count("\n") == 1 and text in err
    assert main(["verify", str(model)]) == 2   # verify validates the manifest first
    assert text in capsys.readouterr().err


def test_weights_size_mismatch(model, capsys):
    with open(model / "weights.bin", "ab") as f:
        f.write(b"\0")
    assert main(["info", str(model)]) == 2
    assert "weights_bytes" in capsys.readouterr().err


def test_valid_manifests_of_every_preset_and_shape_load(converted):
    for shape in ("tiny-s0", "odd-s1"):
        for preset in ("q8", "q4", "bf16"):
            fmt.ModelFiles(converted(shape, preset))



# -- progress: bars on a terminal only, one line per stage in a log -------------------------------

def test_progress_in_a_log_is_one_line_per_stage(tmp_path, capsys):
    from edgeoss.convert import convert
    from edgeoss.convert.synthetic import make_checkpoint
    make_checkpoint(tmp_path / "hf", preset="tiny", tokenizer_dir=False, progress=True, vocab_size=1024)
    convert(str(tmp_path / "hf"), tmp_path / "out", no_tokenizer=True, progress=True)
    out, err = capsys.readouterr()
    assert "\r" not in out + err
    lines = err.splitlines()
    assert lines[0].startswith("wrote ") and len(lines) == 2, err      # the checkpoint, then the convert stage
    assert lines[1].startswith("convert q8: ") and " MB written in " in lines[1]
    assert out.startswith("wrote ") and out.count("\n") == 1


def test_manifest_that_is_not_an_object(model, capsys):
    (model / "edgeoss.json").write_text("[1, 2]")
    assert main(["info", str(model)]) == 2
    assert "expected a JSON object, got a list" in capsys.readouterr().err

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

JUNK = [None, True, False, 0, -1, 7, 1.5, float("inf"), "x", "", [], [1, "a"], {}, {"a": 1}, 1 << 70]


def _paths(x, prefix=()):
    yield prefix
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(x, list) and len(x) < 16:
        for i, v in enumerate(x):
            yield from _paths(v, prefix + (i,))


class Pristine(tuple):
    def __repr__(self):
        return "pristine"   # not 47 kB of manifest in every hypothesis report


@pytest.fixture(scope="module")
def pristine(converted, tmp_path_factory):
    src = converted("odd-s1", "q4")
    d = shutil.copytree(src, tmp_path_factory.mktemp("prop") / "model")
    return Pristine((d, read_manifest(d), [p for p in _paths(read_manifest(d)) if p]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_damage_to_the_manifest_is_a_format_error(pristine, data):
    """Random deletions and type swaps anywhere in the manifest: it loads, or FormatError; never
    another exception (KeyError, TypeError, IndexError, ...)."""
    d, good, paths = pristine
    m = json.loads(json.dumps(good))
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        parent = m
        try:
            for k in path[:-1]:
                parent = parent[k]
            parent[path[-1]]
        except (KeyError, IndexError, TypeError):
            continue   # an earlier change removed or replaced this path
        if data.draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(st.sampled_from(JUNK))
    write_manifest(d, m)
    try:
        files = fmt.ModelFiles(d)
    except fmt.FormatError as e:
        assert "\n" not in str(e)
        return
    from edgeoss.cli.info import describe
    describe(d)   # what loads can be described
    del files
