"""`edgeoss verify MODEL`: check every tensor against the checksum recorded when it was converted.

Exit 0 when everything matches, 1 when something differs (each one named), 2 when the model
cannot be checked (an invalid manifest, or no checksums: converted by an older edgeoss)."""

from __future__ import annotations

import sys

from .args import MODEL_HELP, model_arg


def add_parser(sub) -> None:
    v = sub.add_parser("verify", help="check a converted model's bytes against the checksums recorded at conversion")
    v.add_argument("model", type=model_arg, help=MODEL_HELP)
    v.set_defaults(func=run)


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def run(a) -> int:
    from tqdm import tqdm

    from ..format.integrity import Verifier

    checker = Verifier(a.model)   # FormatError / NoChecksums: printed by main, exit 2
    tty = sys.stderr.isatty()
    bar = tqdm(total=checker.total_bytes, unit="B", unit_scale=True, unit_divisor=1024, desc="verify",
               dynamic_ncols=True, file=sys.stderr, disable=not tty)
    try:
        rep = checker.run(progress=bar.update)
    finally:
        bar.close()
    speed = f"{_size(rep.bytes_read)} in {rep.seconds:.1f} s"
    if not tty:   # in a log: one line for the stage instead of a bar
        print(f"verify: {speed}", file=sys.stderr, flush=True)
    for label in rep.mismatched:
        print(f"MISMATCH {label}")
    for label in rep.unrecorded:
        print(f"NO CHECKSUM {label}")
    if rep.ok:
        print(f"{checker.path}: OK, all {rep.checked} checksums match ({speed})")
        return 0
    bad = len(rep.mismatched) + len(rep.unrecorded)
    print(f"{checker.path}: DAMAGED, {bad} problem{'s' * (bad > 1)} listed above ({rep.checked} checksums "
          "checked): reconvert the model, or restore it from a good copy")
    return 1
