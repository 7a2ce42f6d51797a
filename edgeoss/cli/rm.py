"""`edgeoss rm NAME`: remove a model from the models home (EDGEOSS_HOME); never anything else."""

from __future__ import annotations

import sys

from ..errors import EdgeossError
from ..format import models_home as home_


def add_parser(sub) -> None:
    p = sub.add_parser("rm", help="remove a model from the models home (EDGEOSS_HOME)",
                       description="Remove a model that `edgeoss list` shows. Only a model folder inside the "
                                   "models home is removed, never another path.")
    p.add_argument("name", help="a name from `edgeoss list` (or its repo id, e.g. openai/gpt-oss-20b)")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=run)


def run(a) -> int:
    path = home_.model_in_home(a.name)
    if not a.yes:
        if not sys.stdin.isatty():
            raise EdgeossError(f"not removing {path} without confirmation: pass --yes")
        size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
        answer = input(f"remove {path.name} ({size / 1e9:.1f} GB) at {path}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing removed")
            return 1
    home_.remove_model(a.name)
    print(f"removed {path}")
    return 0
