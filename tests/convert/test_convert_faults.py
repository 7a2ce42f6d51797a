"""`edgeoss convert` under faults, in a subprocess: SIGINT and SIGTERM midway, a full disk, a file
size limit, a source shard removed midway. Each ends with a clear message and no traceback,
nothing at OUT, no temporary directory left beside it, and a rerun that succeeds."""

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeoss.convert import convert
from edgeoss.format import model_dir as fmt

# dense BF16 experts are quantized to MXFP4 in NumPy: ~2 s of converting, 31 MB written
SHAPE = dict(dense_experts=True, layers=8, experts=32, hidden=256, intermediate=256, vocab=1024, shards=3)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from edgeoss.convert.synthetic import make_checkpoint
    return make_checkpoint(tmp_path_factory.mktemp("faults") / "ck", preset="tiny", tokenizer_dir=None,
                           progress=False, **SHAPE)


@pytest.fixture
def own_checkpoint(checkpoint, tmp_path):
    """A copy (hard links) of the checkpoint that a test may damage."""
    d = tmp_path / "ck"
    d.mkdir()
    for f in checkpoint.iterdir():
        os.link(f, d / f.name)
    return d


def _default_sigint() -> None:
    # a command started in the background by a non-interactive shell inherits SIGINT ignored
    # (and Python then leaves it so): the convert under test gets Ctrl-C's usual disposition
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(ck: Path, out: Path, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgeoss.cli.main", "convert", str(ck), str(out), "--no-tokenizer"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=kw.pop("preexec_fn", _default_sigint), **kw)


def wait_midway(p: subprocess.Popen, out: Path, at_least: int = 2 << 20, timeout: float = 120) -> None:
    """Until the conversion has written `at_least` bytes of weights.bin into its temporary directory."""
    weights = out.parent / f".{out.name}.partial-{p.pid}" / fmt.WEIGHTS
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert p.poll() is None, f"convert ended before it was interrupted: {p.communicate()}"
        try:
            if weights.stat().st_blocks * 512 >= at_least:
                return
        except FileNotFoundError:
            pass
        time.sleep(0.005)
    p.kill()
    pytest.fail("convert never got midway")


def finish(p: subprocess.Popen) -> tuple[int, str]:
    _, err = p.communicate(timeout=120)
    return p.returncode, err


def assert_nothing_left(out: Path, err: str) -> None:
    assert "Traceback" not in err, err
    assert not out.exists(), f"{out} exists after a failed conversion"
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")] == [], "temporary files left"


def assert_rerun_succeeds(ck: Path, out: Path) -> None:
    convert(ck, out, no_tokenizer=True, progress=False)
    fmt.ModelFiles(out)   # validates the manifest against weights.bin


@pytest.mark.parametrize("sig,code,said", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_a_signal_midway_leaves_nothing_and_a_rerun_succeeds(checkpoint, tmp_path, sig, code, said):
    out = tmp_path / "model"
    p = start(checkpoint, out)
    wait_midway(p, out)
    p.send_signal(sig)
    rc, err = finish(p)
    assert rc == code and said in err, (rc, err)
    assert_nothing_left(out, err)
    assert_rerun_succeeds(checkpoint, out)


@pytest.fixture
def small_disk(tmp_path):
    """A 12 MB tmpfs (the model needs 31 MB); skips where mounting is not allowed."""
    d = tmp_path / "disk"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(d)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip() or r.returncode}); "
                    "the file size limit test covers a failing write")
    yield d
    subprocess.run(["umount", "-l", str(d)], check=False)


def test_a_full_disk_midway_is_a_clear_error_and_a_rerun_succeeds(checkpoint, small_disk):
    out = small_disk / "model"
    rc, err = finish(start(checkpoint, out))
    assert rc == 2 and "edgeoss: error: cannot write" in err and "No space left on device" in err, (rc, err)
    assert_nothing_left(out, err)
    assert shutil.disk_usage(small_disk).used < 1 << 20, "the partial weights file still fills the disk"
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)   # space freed: rerun
    assert_rerun_succeeds(checkpoint, out)


def test_a_file_size_limit_is_a_clear_error(checkpoint, tmp_path):
    out = tmp_path / "model"
    limit = 8 << 20   # RLIMIT_FSIZE: a write past it fails with EFBIG (Python ignores SIGXFSZ)

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    rc, err = finish(start(checkpoint, out, preexec_fn=limited))
    assert rc == 2 and "edgeoss: error: cannot write" in err and "File too large" in err, (rc, err)
    assert_nothing_left(out, err)
    assert_rerun_succeeds(checkpoint, out)


def test_a_source_shard_removed_midway_is_named(checkpoint, own_checkpoint, tmp_path):
    weight_map = json.loads((own_checkpoint / "model.safetensors.index.json").read_text())["weight_map"]
    last = weight_map["model.layers.7.mlp.experts.down_proj"]   # read near the end
    out = tmp_path / "model"
    p = start(own_checkpoint, out)
    wait_midway(p, out, at_least=1 << 20)
    (own_checkpoint / last).unlink()
    rc, err = finish(p)
    assert rc == 2 and f"{last}: cannot read" in err and "removed or changed while being read" in err, (rc, err)
    assert_nothing_left(out, err)
    os.link(checkpoint / last, own_checkpoint / last)
    assert_rerun_succeeds(own_checkpoint, out)
