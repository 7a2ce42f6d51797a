"""Expert streaming under faults: short reads, the file ending inside an expert, a read error, and
the weights file replaced underneath a running model. A fault is a clear error for the request it
hits, and the next request is exact. (A read error raised by the reader itself is covered in
test_memory.py; here the faults come from the operating system's reads.) Nothing global is set
outside monkeypatch."""

import errno
import os
import shutil

import numpy as np
import pytest

from edgeoss.engine.model import load
from edgeoss.memory import planner


@pytest.fixture(autouse=True)
def steady_runtime(monkeypatch):
    monkeypatch.setattr(planner, "process_rss", lambda: 200 << 20)   # as test_memory.py: stable slot counts


def streaming_budget(path, slots):
    files = load(path).files
    big = planner.make_plan(files, "1T", context=4096)
    return big.fixed + slots * files.config.num_hidden_layers * big.expert_bytes


@pytest.fixture
def streamed(converted):
    """(streaming model, token ids, the resident model's logits for them)."""
    path = converted("tiny-s0", "q8")
    resident = load(path)
    ids = [int(t) for t in np.random.default_rng(5).integers(0, resident.config.vocab_size, 24)]
    want = resident.logits(ids)
    model = load(path, memory=streaming_budget(path, 5))
    assert model.plan.streaming and model.expert_cache.io_mode != "plain"
    return model, ids, want


def faulty_preadv(monkeypatch, fault, after: int):
    """os.preadv that calls `fault(fd, buffers, offset)` instead of reading, from its `after`-th
    call on, while `calls` (returned) counts them."""
    real, calls = os.preadv, []

    def preadv(fd, buffers, offset, *flags):
        calls.append(offset)
        if len(calls) > after:
            return fault(real, fd, buffers, offset)
        return real(fd, buffers, offset, *flags)

    monkeypatch.setattr(os, "preadv", preadv)
    return calls


def test_short_reads_are_completed(streamed, monkeypatch):
    """The OS may return fewer bytes than asked (a signal, a network file system): the reader asks
    again for the rest. Every read here returns one 4 KiB page (aligned, as O_DIRECT needs)."""
    model, ids, want = streamed
    calls = faulty_preadv(monkeypatch, lambda real, fd, bufs, off: real(fd, [memoryview(bufs[0])[:4096]], off), 0)
    np.testing.assert_array_equal(model.logits(ids), want)
    assert len(calls) > model.expert_cache.misses, "reads were not split"


def test_the_file_ending_inside_an_expert_is_a_clear_error_then_exact(streamed, monkeypatch):
    model, ids, want = streamed
    with monkeypatch.context() as m:
        faulty_preadv(m, lambda real, fd, bufs, off: 0, after=7)   # end of file, as a truncated file reads
        with pytest.raises(OSError, match=r"weights\.bin ended at byte \d+, inside a tensor: the model file is truncated"):
            model.logits(ids)
    np.testing.assert_array_equal(model.logits(ids), want)


def test_a_read_error_names_the_file_then_exact(streamed, monkeypatch):
    model, ids, want = streamed

    def eio(real, fd, bufs, off):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    with monkeypatch.context() as m:
        faulty_preadv(m, eio, after=3)
        with pytest.raises(OSError, match=r"weights\.bin: reading \d+ bytes at byte \d+ failed \(Input/output error\)") \
                as err:
            model.logits(ids)
    assert err.value.errno == errno.EIO
    np.testing.assert_array_equal(model.logits(ids), want)
    assert model.expert_cache.misses > 0


def test_weights_replaced_underneath_a_running_model(converted, tmp_path):
    """Replacing weights.bin (a rename, as `edgeoss convert --force` and package managers do)
    does not disturb a running model: it keeps reading the file it opened, exactly; a model loaded
    afterwards gets the new weights."""
    model_dir = shutil.copytree(converted("tiny-s0", "q8"), tmp_path / "model")
    other = converted("tiny-s2", "q8")   # same shapes, other weights
    resident = load(model_dir)
    ids = [int(t) for t in np.random.default_rng(6).integers(0, resident.config.vocab_size, 24)]
    want = resident.logits(ids)
    del resident
    model = load(model_dir, memory=streaming_budget(model_dir, 5))
    np.testing.assert_array_equal(model.logits(ids[:12]), want[:12])
    staged = model_dir / "weights.bin.new"
    shutil.copyfile(other / "weights.bin", staged)
    shutil.copyfile(other / "edgeoss.json", model_dir / "edgeoss.json.new")
    os.replace(staged, model_dir / "weights.bin")
    os.replace(model_dir / "edgeoss.json.new", model_dir / "edgeoss.json")
    model.expert_cache.reset_counters()
    np.testing.assert_array_equal(model.logits(ids), want)
    assert model.expert_cache.misses > 0, "nothing was streamed after the replacement"
    fresh = load(model_dir).logits(ids)
    np.testing.assert_array_equal(fresh, load(other).logits(ids))
    assert not np.array_equal(fresh, want)
