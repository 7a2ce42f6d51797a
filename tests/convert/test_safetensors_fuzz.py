"""The safetensors header reader fed untrusted bytes: every file either opens with every tensor
inside it and readable, or is refused with a SafetensorsError naming the file; never another
exception (tools/fuzz_safetensors.py runs the same check coverage-guided)."""

import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from edgeoss.format.safetensors import DTYPES, SafetensorsError, SafetensorsFile, TensorSpec, write_safetensors


def _file(tmp_path, header: bytes, data: bytes = b"\0" * 16, length: int | None = None):
    p = tmp_path / "x.safetensors"
    p.write_bytes(struct.pack("<Q", len(header) if length is None else length) + header + data)
    return p


def check_opens_or_refuses(path) -> str:
    """Open `path`: 'ok' when every tensor lies in the data section and reads back with its
    shape, 'refused' for a SafetensorsError that names the file; anything else fails."""
    try:
        f = SafetensorsFile(path)
    except SafetensorsError as e:
        assert str(path) in str(e)
        return "refused"
    size = path.stat().st_size
    assert isinstance(f.metadata, dict) and all(isinstance(v, str) for v in f.metadata.values())
    spans = []
    for name, t in f.tensors.items():
        assert isinstance(t.begin, int) and isinstance(t.end, int) and 8 <= t.begin <= t.end <= size
        assert all(type(d) is int and d >= 0 for d in t.shape)
        assert t.nbytes == int(np.prod(t.shape, dtype=object)) * DTYPES[t.dtype].itemsize
        spans.append((t.begin, t.end))
        assert f.get(name).shape == t.shape
        assert f.read(name).shape == t.shape
    spans = sorted(s for s in spans if s[1] > s[0])
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), "overlapping tensors accepted"
    return "ok"


# Each of these crashed the reader (TypeError, OverflowError, RecursionError) or was accepted
# with a wrong meaning (a string shape, booleans as dimensions, a list as metadata) before the fix.
CRAFTED = {
    "nested 100000 deep": b"[" * 100000,
    "data_offsets a string": json.dumps({"a": {"dtype": "U8", "shape": [2], "data_offsets": "ab"}}).encode(),
    "dtype a list": json.dumps({"a": {"dtype": ["U8"], "shape": [2], "data_offsets": [0, 2]}}).encode(),
    "infinite dimension": b'{"a": {"dtype": "U8", "shape": [Infinity], "data_offsets": [0, 2]}}',
    "5000-digit dimension": b'{"a": {"dtype": "U8", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 2]}}',
    "fractional offsets": json.dumps({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0.5, 2.5]}}).encode(),
    "negative dimensions": json.dumps({"a": {"dtype": "U8", "shape": [-1, -2], "data_offsets": [0, 2]}}).encode(),
    "int64 overflow to 0 bytes": json.dumps({"a": {"dtype": "U8", "shape": [2**32, 2**32],
                                                   "data_offsets": [0, 0]}}).encode(),
    "negative begin": json.dumps({"a": {"dtype": "U8", "shape": [2], "data_offsets": [-2, 0]}}).encode(),
    "metadata a list": json.dumps({"__metadata__": [1]}).encode(),
    "metadata values not strings": json.dumps({"__metadata__": {"format": 1}}).encode(),
    "shape a string": json.dumps({"a": {"dtype": "U8", "shape": "2", "data_offsets": [0, 2]}}).encode(),
    "booleans as dimensions": json.dumps({"a": {"dtype": "U8", "shape": [True], "data_offsets": [0, 1]}}).encode(),
    "three offsets": json.dumps({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2, 4]}}).encode(),
    "entry a list": json.dumps({"a": ["U8", [2], [0, 2]]}).encode(),
    "overlapping tensors": json.dumps({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                                       "b": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]}}).encode(),
    "not utf-8": b'{"\xff": 1}',
    "a JSON array": b"[1, 2]",
    "past the end": json.dumps({"a": {"dtype": "U8", "shape": [64], "data_offsets": [0, 64]}}).encode(),
}


@pytest.mark.parametrize("case", CRAFTED)
def test_crafted_headers_are_refused_with_a_safetensors_error(tmp_path, case):
    assert check_opens_or_refuses(_file(tmp_path, CRAFTED[case])) == "refused"


@pytest.mark.parametrize("length", [2**64 - 1, 2**63, 10**9, 19])  # the file holds 8 + 2 + 16 bytes
def test_a_header_length_past_the_file_is_refused(tmp_path, length):
    p = _file(tmp_path, b"{}", length=length)
    with pytest.raises(SafetensorsError, match="header length"):
        SafetensorsFile(p)


def test_files_shorter_than_the_length_field_are_refused(tmp_path):
    for n in range(8):
        p = tmp_path / f"short{n}"
        p.write_bytes(b"\x01" * n)
        with pytest.raises(SafetensorsError, match="not a safetensors file"):
            SafetensorsFile(p)


def test_a_valid_file_still_opens(tmp_path):
    p = tmp_path / "ok.safetensors"
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    write_safetensors(p, [TensorSpec("a", "F32", (3, 4), lambda i, j: a[i:j]),
                          TensorSpec("z", "U8", (0,), lambda i, j: np.zeros(0, np.uint8)),
                          TensorSpec("s", "I32", (), lambda i, j: np.array(7, np.int32))], metadata={"format": "pt"})
    f = SafetensorsFile(p)
    assert check_opens_or_refuses(p) == "ok"
    assert np.array_equal(f.read("a"), a) and f.read("s") == 7 and f.metadata == {"format": "pt"}


# -- properties ----------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12)
dims = st.integers(-3, 2**40) | st.sampled_from([0, 1, 2, 3, 4, 2**32, 2**63, 2**64 + 1]) | json_values
entries = st.fixed_dictionaries(
    {}, optional={"dtype": st.sampled_from(sorted(DTYPES) + ["F8", "", "bf16"]) | json_values,
                  "shape": st.lists(dims, max_size=3) | json_values,
                  "data_offsets": st.lists(st.integers(-4, 80) | json_values, min_size=0, max_size=3) | json_values})
headers = st.dictionaries(st.text(max_size=6) | st.just("__metadata__"), entries | json_values, max_size=4)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=headers, data=st.binary(max_size=96))
def test_any_json_header_opens_or_is_refused(tmp_path, header, data):
    raw = json.dumps(header, allow_nan=True).encode()
    check_opens_or_refuses(_file(tmp_path, raw, data))


def _valid_bytes() -> bytes:
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "v.safetensors"
        write_safetensors(p, [TensorSpec("w", "BF16", (2, 3), lambda i, j: np.ones((j - i, 3), np.uint16)),
                              TensorSpec("b", "F32", (3,), lambda i, j: np.zeros(j - i, np.float32))],
                          metadata={"format": "pt"})
        return p.read_bytes()


VALID = _valid_bytes()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), max_size=6),
       cut=st.integers(0, len(VALID)))
def test_damaged_valid_files_open_or_are_refused(tmp_path, flips, cut):
    raw = bytearray(VALID)
    for pos, byte in flips:
        raw[pos] = byte
    p = tmp_path / "d.safetensors"
    p.write_bytes(bytes(raw[:cut]))
    check_opens_or_refuses(p)
