"""`edgeoss pull SRC`: download (a Hub repo id) and convert into the models home, under a name
that every command then accepts. Checks free disk before it downloads or writes anything."""

from __future__ import annotations

import json
import shutil
import sys
from fnmatch import fnmatch
from pathlib import Path

from ..errors import EdgeossError
from ..format import model_dir as fmt
from ..format import models_home as home_

# Bytes of the files `convert` fetches, for when the Hub cannot be asked (offline, an error).
KNOWN_DOWNLOAD = {"openai/gpt-oss-20b": 13_800_000_000, "openai/gpt-oss-120b": 65_300_000_000}
KNOWN_SHAPE = {"openai/gpt-oss-20b": "20b", "openai/gpt-oss-120b": "120b"}  # convert.synthetic presets
VOCAB_BYTES = 8 << 20  # the bundled vocabulary, with room to spare


class DiskFullError(EdgeossError):
    """Not enough free disk for a pull; the message says how much is needed and free, where."""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "pull", help="download and convert a model into the models home (EDGEOSS_HOME)",
        description="Download a gpt-oss checkpoint from the Hugging Face Hub (resumable: run it again after "
                    "an interruption) and convert it into the models home, where `edgeoss list` shows it and "
                    "every command takes its name. Free disk is checked first. The conversion writes into a "
                    "hidden folder and renames it into place only when the model is complete and verified, "
                    "so an interrupted pull never leaves anything that looks like a model.")
    p.add_argument("src", help="a Hub repo id such as openai/gpt-oss-20b, or a local Hugging Face checkpoint folder")
    p.add_argument("--preset", choices=fmt.PRESETS, default="q8",
                   help="attention/embedding/lm_head precision (experts always stay MXFP4); default q8")
    p.add_argument("--name", default=None,
                   help="the name in the models home (default: the repo id's part after the slash, or the "
                        "folder's name)")
    p.add_argument("--revision", default=None, help="branch, tag or commit of a Hub repo")
    p.add_argument("--token", default=None, help="Hugging Face token (default: HF_TOKEN / cached login)")
    p.add_argument("--force", action="store_true",
                   help="convert again if the name is taken (the old model goes only once the new one is complete)")
    p.add_argument("--no-tokenizer", action="store_true", help="convert a checkpoint that has no tokenizer.json")
    p.set_defaults(func=run)


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def _converted_bytes(hf_config: dict, preset: str) -> int:
    from ..config import GptOssConfig
    return fmt.plan_layout(GptOssConfig.from_hf(hf_config), preset).size + VOCAB_BYTES


def _hub_needs(repo: str, revision: str | None, token: str | None) -> tuple[int | None, dict | None]:
    """(bytes still to download, config.json) of a Hub repo: from the Hub's file sizes less what the
    Hugging Face cache already holds; else from the cache alone; else known figures; else None."""
    from ..convert.hub import ALLOW_PATTERNS
    try:
        from huggingface_hub import HfApi, hf_hub_download, try_to_load_from_cache
        info = HfApi().model_info(repo, revision=revision, token=token, files_metadata=True)
        missing = 0
        for s in info.siblings or []:
            if any(fnmatch(s.rfilename, pat) for pat in ALLOW_PATTERNS):
                if not isinstance(try_to_load_from_cache(repo, s.rfilename, revision=info.sha), str):
                    missing += s.size or 0
        config = json.loads(Path(hf_hub_download(repo, "config.json", revision=info.sha, token=token)).read_text())
        return missing, config
    except Exception:  # offline, unknown repo, no access: convert's download says why, if it fails
        pass
    try:  # everything already cached (e.g. HF_HUB_OFFLINE): nothing to download
        from huggingface_hub import snapshot_download
        snap = Path(snapshot_download(repo, revision=revision, token=token, allow_patterns=ALLOW_PATTERNS,
                                      local_files_only=True))
        return 0, json.loads((snap / "config.json").read_text())
    except Exception:
        pass
    config = None
    if repo in KNOWN_SHAPE:
        from ..convert.synthetic import make_config
        config = make_config(KNOWN_SHAPE[repo])
    return KNOWN_DOWNLOAD.get(repo), config


def hf_cache_dir() -> Path:
    from huggingface_hub import constants
    return Path(constants.HF_HUB_CACHE)


def check_disk(needs: list[tuple[Path, int, str]]) -> None:
    """needs: (folder, bytes, what for). Needs on one filesystem add up; any shortfall is an error
    that says what is needed, what is free, and where."""
    groups: list[list[tuple[Path, int, str]]] = []
    for need in needs:
        for g in groups:
            if home_.same_filesystem(g[0][0], need[0]):
                g.append(need)
                break
        else:
            groups.append([need])
    for g in groups:
        total = sum(n for _, n, _ in g)
        where, free = home_.free_bytes(g[0][0])
        if total > free:
            what = " + ".join(f"{_gb(n)} {w} ({p})" for p, n, w in g)
            raise DiskFullError(f"not enough free disk: this pull needs {_gb(total)} ({what}) but the filesystem "
                                f"of {where} has {_gb(free)} free. Free some space, or set EDGEOSS_HOME (models) "
                                "/ HF_HOME (downloads) to a disk with room")


def run(a) -> int:
    home = home_.models_home()
    src = str(a.src)
    local = Path(src).expanduser()
    is_local = local.exists()
    name = home_.check_name(a.name or home_.model_name(src))
    out = home / name
    if out.exists() and not a.force:
        if home_.is_complete(out):
            print(f"{name} is already in the models home ({out}); pass --force to convert it again")
            return 0
        raise EdgeossError(f"{out} exists but is not a complete model: pass --force to replace it")
    for leftover in home_.stale_partials(home, name):  # a killed conversion's folder: its space counts as free
        shutil.rmtree(leftover, ignore_errors=True)
        print(f"removed {leftover}, left by an interrupted conversion", file=sys.stderr)

    if is_local:
        try:
            config = json.loads((local / "config.json").read_text())
        except (OSError, ValueError):
            config = None  # convert says what is wrong with the folder
        download = 0
    else:
        download, config = _hub_needs(src, a.revision, a.token)
    needs = []
    if download:
        needs.append((hf_cache_dir(), download, "download"))
    if config is not None:
        try:
            needs.append((home, _converted_bytes(config, a.preset), f"converted {a.preset}"))
        except EdgeossError:
            pass  # not a gpt-oss config: convert says so
    check_disk(needs)

    from ..convert import convert
    home.mkdir(parents=True, exist_ok=True)
    convert(src, out, preset=a.preset, force=a.force, no_tokenizer=a.no_tokenizer,
            revision=a.revision, token=a.token)
    print(f"pulled {name}: run it with `edgeoss chat {name}`")
    return 0
