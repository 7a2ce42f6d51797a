"""`edgeoss list`: the models in the models home (EDGEOSS_HOME), as `edgeoss pull` made them."""

from __future__ import annotations

import time

from ..format import models_home as home_


def add_parser(sub) -> None:
    p = sub.add_parser("list", help="list the models in the models home (EDGEOSS_HOME)")
    p.set_defaults(func=run)


def _size(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def _ago(t: float) -> str:
    s = max(0.0, time.time() - t)
    for unit, n in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if s >= 2 * n:
            return f"{int(s // n)} {unit} ago"
    return "just now"


def run(a) -> int:
    home = home_.models_home()
    models = home_.list_models(home)
    if not models:
        print(f"no models in {home} (set EDGEOSS_HOME to use another folder); get one with "
              "`edgeoss pull openai/gpt-oss-20b`")
    else:
        rows = [("NAME", "SIZE", "PRESET", "MODIFIED", "PATH")]
        rows += [(m.name, _size(m.size), m.preset, _ago(m.modified), str(m.path)) for m in models]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
        for r in rows:
            print("   ".join(c.ljust(w) for c, w in zip(r, widths)) + "   " + r[-1])
    others = home_.other_folders(home) + home_.stale_partials(home)
    if others:
        print("\nnot models (incomplete, or not made by edgeoss), left as they are: "
              + ", ".join(d.name for d in others))
    return 0
