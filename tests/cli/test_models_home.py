"""Named models, as Ollama users know them: `pull` into the models home (EDGEOSS_HOME), `list`,
`rm`, and every command taking a name from that list or a path."""

import json
import os
import shutil
from collections import namedtuple
from pathlib import Path

import pytest

from edgeoss.cli.main import main
from edgeoss.format import models_home as mh


@pytest.fixture
def home(tmp_path, monkeypatch):
    h = tmp_path / "models-home"
    monkeypatch.setenv("EDGEOSS_HOME", str(h))
    return h


@pytest.fixture
def checkpoint(hf_checkpoints, tmp_path):
    """A tiny HF checkpoint (no tokenizer) in a folder whose name becomes the model's name."""
    src = tmp_path / "gpt-oss-tiny"
    shutil.copytree(hf_checkpoints["tiny-s0"], src)
    return src


def pull(src, *extra):
    return main(["pull", str(src), "--no-tokenizer", *extra])


def test_models_home_follows_edgeoss_home_else_the_platform_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEOSS_HOME", str(tmp_path / "h"))
    assert mh.models_home() == tmp_path / "h"
    monkeypatch.delenv("EDGEOSS_HOME")
    monkeypatch.setattr(mh.sys, "platform", "linux")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert mh.models_home() == tmp_path / "xdg" / "edgeoss" / "models"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert mh.models_home() == Path.home() / ".local" / "share" / "edgeoss" / "models"
    monkeypatch.setattr(mh.sys, "platform", "darwin")
    assert mh.models_home() == Path.home() / "Library" / "Application Support" / "edgeoss" / "models"


def test_names_of_sources():
    assert mh.model_name("openai/gpt-oss-20b") == "gpt-oss-20b"
    assert mh.model_name("/some/where/my-model/") == "my-model"
    with pytest.raises(mh.EdgeossError):
        mh.check_name("..")
    with pytest.raises(mh.EdgeossError):
        mh.check_name(".hidden")


def test_pull_list_info_rm(home, checkpoint, capsys):
    assert pull(checkpoint) == 0
    assert mh.is_complete(home / "gpt-oss-tiny")
    assert [e.name for e in mh.list_models()] == ["gpt-oss-tiny"]
    assert not [p for p in home.iterdir() if p.name.startswith(".")], "no temporary folder left behind"
    capsys.readouterr()

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    header, row = out.splitlines()[:2]
    assert header.split() == ["NAME", "SIZE", "PRESET", "MODIFIED", "PATH"]
    assert row.split()[0] == "gpt-oss-tiny" and " q8 " in row and str(home / "gpt-oss-tiny") in row

    # already there: says so, converts nothing
    mtime = (home / "gpt-oss-tiny" / "edgeoss.json").stat().st_mtime_ns
    assert pull(checkpoint) == 0
    assert "already" in capsys.readouterr().out
    assert (home / "gpt-oss-tiny" / "edgeoss.json").stat().st_mtime_ns == mtime

    # every command takes the name (and the repo-id spelling of it), and still takes a path
    for model in ("gpt-oss-tiny", "openai/gpt-oss-tiny", str(home / "gpt-oss-tiny")):
        assert main(["info", model]) == 0
        assert f"model: {home / 'gpt-oss-tiny'}" in capsys.readouterr().out
    assert main(["generate", "gpt-oss-tiny", "1 2 3", "--ids", "--max-tokens", "3", "--ignore-eos"]) == 0
    assert len(capsys.readouterr().out.split()) == 3

    assert main(["rm", "gpt-oss-tiny", "--yes"]) == 0
    assert not (home / "gpt-oss-tiny").exists() and list(home.iterdir()) == []
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "no models in" in out and str(home) in out and "edgeoss pull" in out


def test_pull_with_another_name_and_preset(home, checkpoint, capsys):
    assert pull(checkpoint, "--name", "tiny-q4", "--preset", "q4") == 0
    (entry,) = mh.list_models()
    assert (entry.name, entry.preset) == ("tiny-q4", "q4")
    assert entry.size >= (home / "tiny-q4" / "weights.bin").stat().st_size > 0


def test_an_unknown_name_says_where_it_looked(home, capsys):
    with pytest.raises(SystemExit) as e:
        main(["info", "gpt-oss-nothing"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "gpt-oss-nothing" in err and str(home) in err and "edgeoss list" in err and "edgeoss pull" in err
    assert "Traceback" not in err


def _fake_model(folder: Path, weights: int = 4096, manifest: bool = True, truncate: bool = False):
    folder.mkdir(parents=True)
    (folder / "weights.bin").write_bytes(b"\0" * (weights // 2 if truncate else weights))
    if manifest:
        (folder / "edgeoss.json").write_text(json.dumps(
            {"format": "edgeoss", "format_version": 1, "preset": "q8", "weights_file": "weights.bin",
             "weights_bytes": weights, "config": {}, "tensors": {}, "source": {"path": "x"}}))


def test_half_written_folders_are_not_models(home, capsys):
    _fake_model(home / "whole")
    _fake_model(home / "no-manifest", manifest=False)
    _fake_model(home / "short-weights", truncate=True)
    (home / "broken-json").mkdir()
    (home / "broken-json" / "edgeoss.json").write_text('{"format": "edgeoss", "form')
    _fake_model(home / ".whole2.partial-999999999")  # a conversion's temporary folder, even if its files are done
    assert [e.name for e in mh.list_models()] == ["whole"]
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].split()[0] == "whole" and len(out.splitlines()) == 4  # header, row, blank, note
    assert "no-manifest" in out.splitlines()[-1] and "short-weights" in out.splitlines()[-1]
    # a name whose folder is incomplete is an error that says so, not an attempt to load it
    with pytest.raises(mh.ModelNotFound, match="not a complete model"):
        mh.resolve_model("short-weights")
    with pytest.raises(mh.ModelNotFound, match="no model"):
        mh.resolve_model("whole2")
    # `rm` leaves a folder that is not an edgeoss model
    assert main(["rm", "no-manifest", "--yes"]) == 2
    assert (home / "no-manifest").exists()


def test_a_killed_conversions_leftover_is_cleaned_by_the_next_pull(home, checkpoint, monkeypatch):
    _fake_model(home / ".gpt-oss-tiny.partial-999999999")
    monkeypatch.setattr(mh, "_pid_alive", lambda pid: pid != 999999999)
    assert pull(checkpoint) == 0
    assert sorted(p.name for p in home.iterdir()) == ["gpt-oss-tiny"]


def test_rm_refuses_paths_outside_the_home_and_asks_first(home, tmp_path, capsys, monkeypatch):
    _fake_model(home / "inside")
    outside = tmp_path / "elsewhere" / "model"
    _fake_model(outside)
    assert main(["rm", str(outside), "--yes"]) == 2
    assert "models home" in capsys.readouterr().err and (outside / "edgeoss.json").exists()
    assert main(["rm", str(home / "inside" / ".."), "--yes"]) == 2
    assert main(["rm", "nothing-here", "--yes"]) == 2
    # not a terminal and no --yes: refuses
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert main(["rm", "inside"]) == 2
    assert "--yes" in capsys.readouterr().err and (home / "inside").exists()
    # a terminal: asks, and "n" keeps it
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert main(["rm", "inside"]) == 1 and (home / "inside").exists()
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    assert main(["rm", str(home / "inside")]) == 0 and not (home / "inside").exists()


def test_pull_refuses_before_writing_when_the_disk_is_full(home, checkpoint, capsys, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(mh.shutil, "disk_usage", lambda p: usage(10**12, 10**12 - 1000, 1000))
    assert pull(checkpoint) == 2
    err = capsys.readouterr().err
    assert "not enough free disk" in err
    assert "free" in err and "needs" in err and "converted q8" in err and str(home.parent) in err
    assert not home.exists() or list(home.iterdir()) == []


def test_pull_counts_the_download_from_the_hubs_file_sizes(home, capsys, monkeypatch, tmp_path):
    """A repo id: the download's bytes (less what the HF cache holds) and the converted size from
    its config.json are both checked, against each filesystem, before anything downloads."""
    from edgeoss.cli import pull as pull_cmd
    from edgeoss.convert.synthetic import make_config
    asked = []

    def hub_needs(repo, revision, token):
        asked.append(repo)
        return 13_760_000_000, make_config("20b")
    monkeypatch.setattr(pull_cmd, "_hub_needs", hub_needs)
    monkeypatch.setattr(pull_cmd, "hf_cache_dir", lambda: tmp_path / "hf-cache")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(mh.shutil, "disk_usage", lambda p: usage(10**12, 10**12 - 20 * 10**9, 20 * 10**9))
    monkeypatch.setattr("edgeoss.convert.convert", lambda *a, **k: pytest.fail("must not start"))
    assert main(["pull", "openai/gpt-oss-20b"]) == 2
    err = capsys.readouterr().err
    assert asked == ["openai/gpt-oss-20b"]
    # both on one filesystem here: 13.8 GB + 12.1 GB > 20 GB
    assert "25.9 GB" in err and "13.8 GB download" in err and "12.1 GB converted q8" in err and "20.0 GB free" in err


def test_known_repos_have_figures_when_the_hub_cannot_be_asked(monkeypatch, tmp_path):
    from edgeoss.cli import pull as pull_cmd
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    download, config = pull_cmd._hub_needs("openai/gpt-oss-20b", None, None)
    assert download == 13_800_000_000
    assert 12.0e9 < pull_cmd._converted_bytes(config, "q8") < 12.2e9
    assert pull_cmd._hub_needs("nobody-here/no-such-model", None, None) == (None, None)


def test_stale_partials_only_for_dead_processes(home):
    _fake_model(home / f".m.partial-{os.getpid()}")
    _fake_model(home / ".m.partial-999999999")
    assert [p.name for p in mh.stale_partials(home, "m")] == (
        [".m.partial-999999999"] if os.name != "nt" else [])


def test_hub_download_size_is_the_needed_files_less_what_is_cached(monkeypatch, tmp_path):
    import huggingface_hub
    from types import SimpleNamespace as NS

    from edgeoss.cli import pull as pull_cmd
    from edgeoss.convert.synthetic import make_config
    files = {"config.json": 1_000, "model-00000-of-00002.safetensors": 4_000_000_000,
             "model-00001-of-00002.safetensors": 5_000_000_000, "original/model.safetensors": 13_000_000_000,
             "metal/model.bin": 13_000_000_000, "tokenizer.json": 27_000_000}
    info = NS(sha="abc123", siblings=[NS(rfilename=f, size=n) for f, n in files.items()])
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda self, repo, **kw: info)
    cached = {"config.json", "model-00000-of-00002.safetensors"}
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache",
                        lambda repo, f, revision=None: f"/cache/{f}" if f in cached and revision == "abc123" else None)
    (tmp_path / "config.json").write_text(json.dumps(make_config("20b")))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: str(tmp_path / "config.json"))
    download, config = pull_cmd._hub_needs("openai/gpt-oss-20b", None, None)
    assert download == 5_000_000_000 + 27_000_000  # not original/ or metal/, not what is cached
    assert config["num_hidden_layers"] == 24
