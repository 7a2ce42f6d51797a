"""Command-line behaviour a user relies on, in fresh processes where it matters."""

import os
import subprocess
import sys

import pytest

from edgeoss.cli.main import main


def run_edgeoss(args, env_extra=None, prelude=""):
    env = {k: v for k, v in os.environ.items() if k not in ("EDGEOSS_REQUIRE_C", "EDGEOSS_KERNELS")}
    env.update(env_extra or {})
    code = f"import sys\n{prelude}\nfrom edgeoss.cli.main import main\nsys.exit(main({args!r}))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)


def test_without_the_c_extension_info_says_so_and_numba_runs(converted):
    """A machine where the C kernels did not build: `info` says so plainly and generation still
    runs, through the Numba fallback, to the same tokens."""
    model = str(converted("tiny-s0", "q8"))
    block_c = "sys.modules['edgeoss._ckernels'] = None  # as if the build had failed"
    info = run_edgeoss(["info", model], prelude=block_c)
    assert info.returncode == 0, info.stderr
    assert "kernels: numba" in info.stdout and "C extension is not in use" in info.stdout
    args = ["generate", model, "1 2 3", "--ids", "--max-tokens", "6", "--ignore-eos"]
    slow = run_edgeoss(args, prelude=block_c)
    fast = run_edgeoss(args)
    assert slow.returncode == 0 and fast.returncode == 0, slow.stderr + fast.stderr
    assert slow.stdout.split() == fast.stdout.split() and len(fast.stdout.split()) == 6


def test_repo_id_offline_gives_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    code = main(["convert", "nobody-here/no-such-model", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "HF_HUB_OFFLINE" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_missing_source_path(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "nothing"), str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_generate_without_tokenizer_needs_ids(converted, capsys):
    assert main(["generate", str(converted("tiny-s0", "q8")), "hello"]) == 2
    assert "token ids" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [["--temperature", "-1"], ["--top-p", "0"]])
def test_bad_sampling_arguments(converted, capsys, bad):
    assert main(["generate", str(converted("tiny-s0", "q8")), "1 2", "--ids"] + bad) == 2
    assert "edgeoss: error:" in capsys.readouterr().err


def test_bench_concurrent_and_depth_report_what_the_conversations_issue_tracks(converted, capsys):
    import json
    assert main(["bench", str(converted("odd-s1", "q8")), "--prompt", "12", "--gen", "6", "--repeats", "1",
                 "--concurrent", "3", "--depth", "20", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["concurrent"] == 3 and r["depth"] == 20 and r["depth_prefill_s"] > 0 and r["kv_cache"] == "f16"
    assert r["aggregate_decode_tokens_per_s"] > 0 and r["aggregate_speedup"] > 0
    assert len(r["per_stream_decode_tokens_per_s"]) == 3 and len(r["ttft_s"]) == 3


def test_bench_json_reports_what_the_speed_issue_tracks(converted, capsys):
    import json
    assert main(["bench", str(converted("tiny-s0", "q8")), "--prompt", "20", "--gen", "5", "--repeats", "2",
                 "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    for key in ("prefill_tokens_per_s", "decode_tokens_per_s", "peak_rss_bytes", "bytes_per_token",
                "roofline_fraction", "ttft_cold_s", "ttft_warm_s", "bandwidth_bytes_per_s"):
        assert r[key] > 0, key
    assert len(r["prefill_runs"]) == 2 and len(r["decode_runs"]) == 2
    # bytes per decoded token: everything but the embedding, whose one row is read, and 4 of 8 experts
    from edgeoss.format.model_dir import ModelFiles
    files = ModelFiles(converted("tiny-s0", "q8"))
    experts = [t for t in files.tensors.values() if t["type"] == "mxfp4_experts"]
    assert r["bytes_per_token"] < files.manifest["weights_bytes"] - sum(t["nbytes"] for t in experts) / 2


def test_bench_under_a_budget_with_a_routing_trace(converted, capsys, tmp_path, monkeypatch):
    import json

    import numpy as np

    from edgeoss.memory import planner
    from edgeoss.format.model_dir import ModelFiles
    path = converted("tiny-s0", "q8")
    files = ModelFiles(path)
    cfg = files.config
    rng = np.random.default_rng(3)
    trace = tmp_path / "trace.npz"
    ex = np.stack([rng.permutation(cfg.num_local_experts)[:cfg.num_experts_per_tok]
                   for _ in range(50 * cfg.num_hidden_layers)]).reshape(50, cfg.num_hidden_layers, -1)
    np.savez(trace, seq000_experts=ex.astype(np.uint8), seq000_weights=np.full(ex.shape, 0.25, np.float16))
    # a fixed runtime figure: the tiny model's slots are smaller than the process's RSS jitter
    monkeypatch.setattr(planner, "process_rss", lambda: 200 << 20)
    big = planner.make_plan(files, "1T")
    budget = big.fixed + 5 * cfg.num_hidden_layers * big.expert_bytes
    assert main(["bench", str(path), "--prompt", "8", "--gen", "6", "--repeats", "1", "--memory", str(budget),
                 "--routing-trace", str(trace), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert (r["memory_plan"], r["expert_slots_per_layer"]) == ("fits with streaming", 5)
    assert 0 < r["expert_hit_rate"] < 1 and r["disk_bytes_per_token"] > 0
    assert r["predicted_decode_tokens_per_s"] > 0 and r["disk_bandwidth_bytes_per_s"] > 0
    # predicted with the trace's own hit rate (the simulator's, as the cache runs it), not uniform routing's
    from edgeoss.memory import cache_policy
    assert r["predicted_hit_rate"] == cache_policy.simulate([ex], 5, "lfru", num_experts=cfg.num_local_experts)
    assert r["disk_sequential_bytes_per_s"] > 0 and r["disk_read_bytes_per_s_while_decoding"] > 0
    # reads were in flight part of the decode, faster then than on average over it
    assert 0 < r["disk_busy_fraction_of_decode"] < 1 and 0 < r["disk_wait_s_per_token"]
    assert r["disk_read_bytes_per_s_while_reading"] > r["disk_read_bytes_per_s_while_decoding"]
    # against sequential reads of the disk just before and after each block of decoded tokens
    (block,) = r["disk_blocks"]  # 6 tokens: one block
    assert block["read_bytes"] == 6 * r["disk_bytes_per_token"] and block["sequential_bytes_per_s"] > 0
    assert r["disk_read_fraction_of_sequential"] == pytest.approx(
        block["read_bytes"] / block["reading_s"] / block["sequential_bytes_per_s"])
    assert r["disk_decode_fraction_of_sequential"] == pytest.approx(
        block["read_bytes"] / block["decode_s"] / block["sequential_bytes_per_s"])
    assert r["predicted_decode_tokens_per_s_at_observed_disk"] > 0


def test_second_run_compiles_nothing(converted, tmp_path):
    """Numba's compiled loops are cached on disk: a second process starts without compiling
    (the start-up cost a user pays once per install, not once per run)."""
    model = str(converted("tiny-s0", "q8"))
    count = ("from numba.core import event\n"
             "rec = event.install_recorder('numba:compile')\n"
             "recording = rec.__enter__()\n"
             "import atexit\n"
             "atexit.register(lambda: sys.stderr.write(f\"compiled {sum(e.is_start for _, e in recording.buffer)}\\n\"))")
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}
    args = ["generate", model, "1 2 3 4 5 6 7 8 9 10", "--ids", "--max-tokens", "3", "--ignore-eos"]
    first = run_edgeoss(args, env_extra=env, prelude=count)
    second = run_edgeoss(args, env_extra=env, prelude=count)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert int(first.stderr.split("compiled ")[-1]) > 10  # the recorder sees compilation
    assert "compiled 0\n" in second.stderr
    assert second.stdout == first.stdout
