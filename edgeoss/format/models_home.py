"""Where named models live: the models home ($EDGEOSS_HOME, else a per-user data folder), one
model directory a name, as `edgeoss pull` makes them and `edgeoss list` / `rm` show and remove them.

A name is a folder's name in the home; a Hub repo id ("openai/gpt-oss-20b") names the part after
the slash. Only a folder whose manifest and weights file are complete counts as a model: the
converter writes into a hidden `.NAME.partial-PID` folder and renames it into place when it is
done, so an interrupted conversion never leaves anything that looks complete.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from .. import _user_dir
from ..errors import EdgeossError
from .model_dir import FORMAT_NAME, FORMAT_VERSION, MANIFEST, WEIGHTS

ENV = "EDGEOSS_HOME"
NAME = re.compile(r"^[A-Za-z0-9][\w.+-]*$")        # one path component, never hidden, never ".."
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/([A-Za-z0-9][\w.-]*)$")
PARTIAL = re.compile(r"^\.(?P<name>.+)\.partial-(?P<pid>\d+)$")  # the converter's temporary folder


class ModelNotFound(EdgeossError):
    """A model name that is neither a path nor a model in the models home."""


def models_home() -> Path:
    """$EDGEOSS_HOME if set, else <per-user data folder>/edgeoss/models. Not created here."""
    env = os.environ.get(ENV)
    return Path(env).expanduser().absolute() if env else Path(_user_dir("data"), "models")


def model_name(src: str) -> str:
    """The name a source gets in the home: a repo id's part after the slash, a folder's own name."""
    m = REPO_ID.match(src)
    if m and not Path(src).expanduser().exists():
        return m.group(1)
    return Path(src).expanduser().resolve().name


def check_name(name: str) -> str:
    if not NAME.match(name) or name.endswith("."):
        raise EdgeossError(f"{name!r} cannot name a model: use letters, digits, '.', '_', '-', '+' "
                           "(one folder name, not starting with '.')")
    return name


def _candidates(name: str) -> list[str]:
    """The folder names `name` may refer to: itself, or a repo id's part after the slash."""
    m = REPO_ID.match(name)
    names = [m.group(1)] if m else [name]
    return [n for n in names if NAME.match(n) and not n.endswith(".")]


def is_complete(path: Path) -> bool:
    """A finished model directory: a valid manifest and a weights file of the size it names.
    Cheap (no mapping): for listing; edgeoss.format.model_dir.ModelFiles validates fully."""
    try:
        m = json.loads((path / MANIFEST).read_text())
        if not isinstance(m, dict) or m.get("format") != FORMAT_NAME or m.get("format_version") != FORMAT_VERSION:
            return False
        return (path / m.get("weights_file", WEIGHTS)).stat().st_size == m["weights_bytes"]
    except (OSError, ValueError, KeyError, TypeError):
        return False


def resolve_model(name_or_path: str | os.PathLike) -> Path:
    """The model directory a command was given: an existing path wins; else a name (or repo id)
    found in the models home; else ModelNotFound saying where it looked and what to do."""
    s = os.fspath(name_or_path)
    p = Path(s).expanduser()
    if p.exists():
        return p
    home = models_home()
    for n in _candidates(s):
        if (home / n).is_dir():
            if is_complete(home / n):
                return home / n
            raise ModelNotFound(f"{home / n} is not a complete model (an interrupted or damaged conversion?): "
                                f"convert it again with `edgeoss pull SOURCE --name {n} --force`")
    pull = f"`edgeoss pull {s}`" if REPO_ID.match(s) else "`edgeoss pull openai/gpt-oss-20b`"
    raise ModelNotFound(f"no model {s!r}: no such path, and no model of that name in the models home {home} "
                        f"(set {ENV} to use another folder). `edgeoss list` shows the models there; "
                        f"{pull} downloads and converts one")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    path: Path
    size: int          # bytes on disk, every file in the folder
    preset: str        # q8 | q4 | bf16 (experts are always MXFP4)
    modified: float    # the manifest's mtime: when the model was completed
    source: str | None


def _folder_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def list_models(home: Path | None = None) -> list[ModelEntry]:
    """The complete models in the home, by name; folders that are not (yet) models are left out."""
    home = home or models_home()
    if not home.is_dir():
        return []
    out = []
    for d in sorted(home.iterdir()):
        if d.name.startswith(".") or not d.is_dir() or not is_complete(d):
            continue
        m = json.loads((d / MANIFEST).read_text())
        out.append(ModelEntry(d.name, d, _folder_bytes(d), str(m.get("preset")), (d / MANIFEST).stat().st_mtime,
                              (m.get("source") or {}).get("path")))
    return out


def other_folders(home: Path | None = None) -> list[Path]:
    """Folders in the home that are not complete models (leftovers, half-written, foreign)."""
    home = home or models_home()
    if not home.is_dir():
        return []
    return [d for d in sorted(home.iterdir()) if d.is_dir() and not PARTIAL.match(d.name)
            and not d.name.startswith(".") and not is_complete(d)]


def _pid_alive(pid: int) -> bool:
    if sys.platform == "win32":
        return True  # no cheap, reliable check: never take another process's folder
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def stale_partials(home: Path | None = None, name: str | None = None) -> list[Path]:
    """Temporary folders of conversions whose process is gone (killed before it could clean up)."""
    home = home or models_home()
    if not home.is_dir():
        return []
    found = []
    for d in sorted(home.iterdir()):
        m = PARTIAL.match(d.name)
        if m and (name is None or m.group("name") == name) and not _pid_alive(int(m.group("pid"))):
            found.append(d)
    return found


def model_in_home(name_or_path: str | os.PathLike, home: Path | None = None) -> Path:
    """The home's model folder a name (or repo id, or a path to a folder directly inside the home)
    refers to: what `edgeoss rm` may remove. Anything else is refused."""
    home = (home or models_home()).absolute()
    s = os.fspath(name_or_path)
    names = _candidates(s)
    if names:
        path = home / names[0]
    else:
        path = Path(s).expanduser().absolute()
        if path.resolve().parent != home.resolve() or path.name.startswith("."):
            raise EdgeossError(f"{s} is not a model in the models home {home}: `edgeoss rm` removes only "
                               "those (`edgeoss list` shows them); delete other folders yourself")
    if not path.is_dir() and not path.is_symlink():
        raise ModelNotFound(f"no model {s!r} in the models home {home} (`edgeoss list` shows what is there)")
    if not (path / MANIFEST).is_file():
        raise EdgeossError(f"{path} has no {MANIFEST}: it is not an edgeoss model, so `edgeoss rm` leaves it; "
                           "delete it yourself if you mean to")
    return path


def remove_model(name_or_path: str | os.PathLike, home: Path | None = None) -> Path:
    """Remove a model from the home (see model_in_home); returns the path it had. The folder is
    first renamed to a hidden name, so an interrupted removal never leaves a half-deleted model."""
    path = model_in_home(name_or_path, home)
    if path.is_symlink():
        path.unlink()  # a link the user put there: the model it points to is not ours to delete
        return path
    doomed = path.parent / f".{path.name}.removing-{os.getpid()}"
    path.rename(doomed)
    shutil.rmtree(doomed, ignore_errors=True)
    return path


def _existing(path: Path) -> Path:
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def free_bytes(path: Path) -> tuple[Path, int]:
    """(the nearest existing folder at or above `path`, the free bytes of its filesystem)."""
    p = _existing(path)
    return p, shutil.disk_usage(p).free


def same_filesystem(a: Path, b: Path) -> bool:
    return os.stat(_existing(a)).st_dev == os.stat(_existing(b)).st_dev
