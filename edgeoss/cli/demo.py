"""`edgeoss demo`: the whole pipeline on a tiny random-weight gpt-oss, with nothing downloaded.

Makes a synthetic checkpoint in the exact Hugging Face layout of gpt-oss, converts it with
the real converter and runs it with the real engine. Its weights are random, so its text is
noise: the point is to show that everything works on this machine before a 13 GB download.
"""

from __future__ import annotations

import time
from pathlib import Path

import psutil

from .args import add_memory_arg


def run_demo(directory: Path | None = None, threads: int | None = None, memory=None) -> int:
    from ..chat.harmony import Chat
    from ..convert import convert
    from ..convert.synthetic import make_checkpoint
    from ..engine.model import load
    from .info import describe

    root = Path(directory or Path.home() / ".cache" / "edgeoss" / "demo").expanduser()
    model_dir = root / "tiny-gpt-oss-edgeoss"
    if not (model_dir / "edgeoss.json").exists():
        hf_dir = root / "tiny-gpt-oss-hf"
        if not (hf_dir / "config.json").exists():
            # no tokenizer files: the conversion bundles the vocabulary shipped with edgeoss
            make_checkpoint(hf_dir, preset="tiny", seed=0, tokenizer_dir=None)
        convert(str(hf_dir), model_dir, preset="q8", force=True)
    print(describe(model_dir))
    model = load(model_dir, threads=threads, memory=memory)
    print("\nThe weights are random: the text below is noise. For the real model:\n"
          "  edgeoss convert openai/gpt-oss-20b ~/models/gpt-oss-20b && edgeoss chat ~/models/gpt-oss-20b\n")
    enc = model.tokenizer
    prompt = enc.encode("The capital of France is") if enc else [1, 2, 3, 4, 5]
    t0 = time.perf_counter()
    out, first = [], None
    for tok in model.generate(prompt, max_tokens=24, temperature=0.0, stop=[]):
        out.append(tok)
        if first is None:  # wall time since the command started: what a first run waits
            first = time.time() - psutil.Process().create_time()
    dt = time.perf_counter() - t0
    print("generate:", repr(enc.decode(out)) if enc else out)
    print(f"  ({len(out)} tokens in {dt:.2f} s; the first {first:.1f} s after the command started)")
    if enc is not None:
        chat = Chat(model, reasoning="low")
        print("chat: harmony prompt of", len(chat.prompt_tokens()), "tokens; the reply by channel:")
        for d in chat.send("Hello! Who are you?", max_tokens=24, temperature=1.0, seed=0):
            print(f"  [{d.channel or 'no channel'}] {d.text!r}")
        print(f"  raw reply: {enc.decode(chat.last_tokens)!r}")
        print(f"  parsed messages: {[m.channel for m in chat.messages[1:]]} (random weights rarely "
              "follow the format)")
    print(f"\nmodel kept in {model_dir}")
    return 0


def add_parser(sub) -> None:
    d = sub.add_parser("demo", help="make a tiny random-weight model and run it (no download; its text is noise)")
    d.add_argument("--dir", type=Path, default=None, help="where to keep the demo model")
    d.add_argument("--threads", type=int, default=None)
    add_memory_arg(d)
    d.set_defaults(func=run)


def run(a) -> int:
    return run_demo(a.dir, threads=a.threads, memory=a.memory)
