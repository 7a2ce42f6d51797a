"""Routing trace files are untrusted input (`edgeoss bench --routing-trace`, `edgeoss plan
--simulate`): any file loads as a well-formed trace or is refused with a TraceError, never another
exception, and nothing it loads can index outside an expert table (ids are 0-255, never negative)."""

import io
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from edgeoss.memory import cache_policy as cp
from edgeoss.memory.routing_trace import TraceError, load_trace


def check(path) -> str:
    try:
        trace = load_trace(path)
    except TraceError as e:
        assert str(path) in str(e) and "\n" not in str(e)
        return "refused"
    assert trace
    for ex, wt in trace:
        assert ex.dtype == np.uint8 and ex.ndim == 3 and 0 not in ex.shape
        assert wt.dtype == np.float32 and wt.shape == ex.shape and np.all(np.isfinite(wt))
        s = np.sort(ex, axis=-1)
        assert not np.any(s[..., 1:] == s[..., :-1])
    assert len({ex.shape[1:] for ex, _ in trace}) == 1
    k = trace[0][0].shape[2]
    cp.simulate([ex for ex, _ in trace], k, "lru")   # what `plan --simulate` does with it
    return "ok"


def _npz(**arrays) -> bytes:
    b = io.BytesIO()
    np.savez(b, **arrays)
    return b.getvalue()


def _good() -> dict:
    rng = np.random.default_rng(0)
    ex = np.stack([rng.permutation(8)[:4] for _ in range(6 * 3)]).reshape(6, 3, 4).astype(np.uint8)
    return {"seq000_experts": ex, "seq000_weights": np.full(ex.shape, 0.25, np.float16)}


GOOD = _npz(**_good())

# Each of these raised ValueError, IndexError, ZeroDivisionError, BadZipFile or AttributeError
# before the fix, or loaded ids that index outside a table (negative, fractional).
CRAFTED = {
    "object array": dict(a_experts=np.array([{"x": 1}], dtype=object)),
    "0-d experts": dict(a_experts=np.array(3)),
    "string weights": dict(a_experts=np.array([[[0, 1]]], np.uint8), a_weights=np.array([[["a", "b"]]])),
    "float ids": dict(a_experts=np.full((2, 2, 2), 1.5)),
    "negative ids": dict(a_experts=np.array([[[-1, 2]]], np.int64)),
    "ids past 255": dict(a_experts=np.array([[[300, 2]]], np.int64)),
    "k = 0": dict(a_experts=np.zeros((2, 2, 0), np.uint8)),
    "no tokens": dict(a_experts=np.zeros((0, 2, 2), np.uint8)),
    "repeated expert": dict(a_experts=np.array([[[3, 3]]], np.uint8)),
    "NaN weights": dict(a_experts=np.array([[[0, 1]]], np.uint8), a_weights=np.full((1, 1, 2), np.nan)),
    "weights of another shape": dict(a_experts=np.array([[[0, 1]]], np.uint8), a_weights=np.ones((1, 2))),
    "sequences disagree": dict(a_experts=np.array([[[0, 1]]], np.uint8), b_experts=np.array([[[0, 1, 2]]], np.uint8)),
}


@pytest.mark.parametrize("case", CRAFTED)
def test_crafted_traces_are_refused(tmp_path, case):
    p = tmp_path / "t.npz"
    p.write_bytes(_npz(**CRAFTED[case]))
    assert check(p) == "refused"


def test_damaged_member_a_single_npy_and_a_pickle_are_refused(tmp_path):
    raw = bytearray(GOOD)
    with zipfile.ZipFile(io.BytesIO(GOOD)) as z:
        info = z.getinfo("seq000_experts.npy")
    at = info.header_offset + 30 + len(info.filename) + 100   # inside the member's data: a bad CRC
    raw[at] ^= 0xFF
    cases = {"crc": bytes(raw), "npy": b"", "pickle": b"\x80\x04\x95" + b"\0" * 20}
    b = io.BytesIO()
    np.save(b, np.zeros((2, 2, 2), np.uint8))
    cases["npy"] = b.getvalue()
    for name, data in cases.items():
        p = tmp_path / f"{name}.npz"
        p.write_bytes(data)
        assert check(p) == "refused", name


def test_a_good_trace_loads(tmp_path):
    p = tmp_path / "t.npz"
    p.write_bytes(GOOD)
    assert check(p) == "ok"
    (ex, wt), = load_trace(p)
    assert np.array_equal(ex, _good()["seq000_experts"]) and np.all(wt == 0.25)


settings_ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@settings_
@given(flips=st.lists(st.tuples(st.integers(0, len(GOOD) - 1), st.integers(0, 255)), max_size=4),
       cut=st.integers(0, len(GOOD)))
def test_damaged_traces_load_or_are_refused(tmp_path, flips, cut):
    raw = bytearray(GOOD)
    for pos, byte in flips:
        raw[pos] = byte
    p = tmp_path / "t.npz"
    p.write_bytes(bytes(raw[:cut]))
    check(p)


arrays = hnp.arrays(dtype=st.sampled_from([np.uint8, np.int8, np.int64, np.uint16, np.float16, np.float32,
                                           np.bool_, np.dtype("U2")]),
                    shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4))


@settings_
@given(members=st.dictionaries(st.sampled_from(["a_experts", "a_weights", "b_experts", "b_weights", "x"]), arrays,
                               max_size=4))
def test_any_arrays_load_or_are_refused(tmp_path, members):
    p = tmp_path / "t.npz"
    p.write_bytes(_npz(**members))
    check(p)
