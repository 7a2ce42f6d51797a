"""`edgeoss demo`: the whole pipeline on a tiny random-weight gpt-oss, with nothing downloaded.

Makes a synthetic checkpoint in the exact Hugging Face layout of gpt-oss, converts it with
the real converter and runs it with the real engine. Its weights are random, so its text is
noise: the point is to show that everything works on this machine before a 13 GB download.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from .args import add_memory_arg

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def find_tokenizer_dir() -> Path | None:
    """gpt-oss's tokenizer files: $EDGEOSS_TOKENIZER_DIR, a `shared/tokenizer` folder beside
    the working directory or the source checkout, or the Hugging Face cache / Hub."""
    candidates = []
    if os.environ.get("EDGEOSS_TOKENIZER_DIR"):
        candidates.append(Path(os.environ["EDGEOSS_TOKENIZER_DIR"]))
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        candidates += [base / "shared" / "tokenizer", base.parent / "shared" / "tokenizer"]
    for c in candidates:
        if (c / "tokenizer.json").exists():
            return c
    try:  # the real repo's tokenizer (13 MB), if the Hub is reachable or it is cached
        from huggingface_hub import hf_hub_download
        return Path(hf_hub_download("openai/gpt-oss-20b", "tokenizer.json")).parent
    except Exception:
        return None


def run_demo(directory: Path | None = None, threads: int | None = None, memory=None) -> int:
    from ..chat.harmony import Chat
    from ..convert import convert
    from ..convert.synthetic import make_checkpoint
    from ..engine.model import load
    from .info import describe

    root = Path(directory or Path.home() / ".cache" / "edgeoss" / "demo").expanduser()
    model_dir = root / "tiny-gpt-oss-edgeoss"
    if not (model_dir / "edgeoss.json").exists():
        tok = find_tokenizer_dir()
        if tok is None:
            print("no gpt-oss tokenizer found (offline, no ../shared/tokenizer): the demo runs on token ids",
                  file=sys.stderr)
        hf_dir = root / "tiny-gpt-oss-hf"
        if not (hf_dir / "config.json").exists():
            make_checkpoint(hf_dir, preset="tiny", seed=0, tokenizer_dir=tok if tok else False)
        convert(str(hf_dir), model_dir, preset="q8", force=True, no_tokenizer=tok is None)
    print(describe(model_dir))
    model = load(model_dir, threads=threads, memory=memory)
    print("\nThe weights are random: the text below is noise. For the real model:\n"
          "  edgeoss convert openai/gpt-oss-20b ~/models/gpt-oss-20b && edgeoss chat ~/models/gpt-oss-20b\n")
    enc = model.tokenizer
    prompt = enc.encode("The capital of France is") if enc else [1, 2, 3, 4, 5]
    t0 = time.perf_counter()
    out = list(model.generate(prompt, max_tokens=24, temperature=0.0, stop=[]))
    dt = time.perf_counter() - t0
    print("generate:", repr(enc.decode(out)) if enc else out)
    print(f"  ({len(out)} tokens in {dt:.2f} s)")
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
