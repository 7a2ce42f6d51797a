"""`edgeoss` command line: argument parsing only; every command calls the library."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _add_runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None, help="worker threads (default: physical cores)")
    p.add_argument("--context", type=int, default=4096,
                   help="KV-cache size in tokens (grows on demand when everything fits in memory)")
    _add_memory_arg(p)


def _add_memory_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--memory", default=None, metavar="SIZE",
                   help="memory budget for the whole process, e.g. 8G (default: what this machine can "
                        "spare); experts that do not fit stream from disk")


def _add_sampling_args(p: argparse.ArgumentParser, temperature: float) -> None:
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=temperature, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0, help="0 = no limit")
    p.add_argument("--seed", type=int, default=None)


def _sampling(a) -> dict:
    return dict(max_tokens=a.max_tokens, temperature=a.temperature, top_p=a.top_p, top_k=a.top_k, seed=a.seed)


def cmd_convert(a) -> int:
    from .convert import convert
    convert(a.src, a.out, preset=a.preset, force=a.force, no_tokenizer=a.no_tokenizer,
            revision=a.revision, token=a.token)
    return 0


def cmd_info(a) -> int:
    from .info import describe
    print(describe(a.model))
    return 0


class TextStream:
    """Turns a stream of token ids into printable text, holding back incomplete UTF-8."""

    def __init__(self, encoding):
        self.encoding, self.tokens, self.printed = encoding, [], 0

    def push(self, tok: int) -> str:
        self.tokens.append(tok)
        text = self.encoding.decode(self.tokens, errors="replace")
        if text.endswith("\ufffd"):  # a character split across tokens: wait for the rest
            return ""
        new, self.printed = text[self.printed:], len(text)
        return new


def cmd_generate(a) -> int:
    from .model import load
    model = load(a.model, context=a.context, threads=a.threads, memory=a.memory)
    enc = model.tokenizer
    if a.ids or enc is None:
        try:
            ids = [int(t) for t in a.prompt.replace(",", " ").split()]
        except ValueError:
            print("edgeoss: error: this model has no tokenizer (converted with --no-tokenizer): "
                  "give the prompt as token ids, e.g. \"1 2 3\"", file=sys.stderr)
            return 2
    else:
        ids = enc.encode(a.prompt, allowed_special="all")
    out = TextStream(enc) if enc is not None and not a.ids else None
    t0 = time.perf_counter()
    first = None
    n = 0
    stop = [] if a.ignore_eos else None
    for tok in model.generate(ids, stop=stop, **_sampling(a)):
        if first is None:
            first = time.perf_counter()
        n += 1
        sys.stdout.write(out.push(tok) if out else f"{tok} ")
        sys.stdout.flush()
    end = time.perf_counter()
    print()
    if first is not None:
        decode = (n - 1) / (end - first) if n > 1 and end > first else float("nan")
        print(f"[{len(ids)} prompt tokens at {len(ids) / (first - t0):.1f} tok/s, "
              f"{n} generated at {decode:.2f} tok/s]", file=sys.stderr)
    return 0


def cmd_chat(a) -> int:
    from .chat import Chat
    from .model import load
    model = load(a.model, context=a.context, threads=a.threads, memory=a.memory)
    chat = Chat(model, reasoning=a.reasoning, instructions=a.instructions)
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"edgeoss chat — {a.model} (reasoning {a.reasoning}); empty line or Ctrl-D to quit", file=sys.stderr)
    while True:
        try:
            line = input("> " if interactive else "")
        except EOFError:
            break
        if not line.strip():
            break
        channel = None
        for d in chat.send(line, **_sampling(a)):
            if d.channel == "analysis" and not a.show_reasoning:
                continue
            if d.channel != channel and a.show_reasoning:
                sys.stdout.write(f"\n[{d.channel or 'output'}] ")
                channel = d.channel
            sys.stdout.write(d.text)
            sys.stdout.flush()
        print()
        call = chat.last_tool_call()
        if call is not None:
            print(f"[tool call to {call.recipient}: no tools are connected in the CLI]", file=sys.stderr)
    return 0


def cmd_plan(a) -> int:
    from .plan_cli import main_plan
    return main_plan(a)


def cmd_bench(a) -> int:
    from .bench import main_bench
    return main_bench(a)


def cmd_demo(a) -> int:
    from .demo import run_demo
    return run_demo(a.dir, threads=a.threads, memory=a.memory)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgeoss", description="Run OpenAI's gpt-oss models offline on a CPU.")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("convert", help="convert a Hugging Face gpt-oss checkpoint (directory or repo id)")
    c.add_argument("src", help="checkpoint directory, or a repo id such as openai/gpt-oss-20b")
    c.add_argument("out", help="output model directory")
    c.add_argument("--preset", choices=("q8", "q4", "bf16"), default="q8",
                   help="attention/embedding/lm_head precision (experts always stay MXFP4); default q8")
    c.add_argument("--force", action="store_true", help="replace OUT if it exists (only once the new model is complete)")
    c.add_argument("--no-tokenizer", action="store_true", help="convert a checkpoint that has no tokenizer.json")
    c.add_argument("--revision", default=None, help="branch, tag or commit of a Hub repo")
    c.add_argument("--token", default=None, help="Hugging Face token (default: HF_TOKEN / cached login)")
    c.set_defaults(func=cmd_convert)

    i = sub.add_parser("info", help="describe a converted model and the kernels in use")
    i.add_argument("model")
    i.set_defaults(func=cmd_info)

    g = sub.add_parser("generate", help="raw completion of a prompt, streamed")
    g.add_argument("model")
    g.add_argument("prompt")
    g.add_argument("--ids", action="store_true", help="the prompt is token ids, output token ids")
    g.add_argument("--ignore-eos", action="store_true", help="do not stop at end-of-sequence tokens")
    _add_sampling_args(g, temperature=0.0)
    _add_runtime_args(g)
    g.set_defaults(func=cmd_generate)

    ch = sub.add_parser("chat", help="interactive harmony chat")
    ch.add_argument("model")
    ch.add_argument("--reasoning", choices=("low", "medium", "high"), default="medium")
    ch.add_argument("--show-reasoning", action="store_true", help="print the analysis channel too")
    ch.add_argument("--instructions", default=None, help="developer instructions (a system prompt)")
    _add_sampling_args(ch, temperature=1.0)
    ch.set_defaults(max_tokens=2048)
    _add_runtime_args(ch)
    ch.set_defaults(func=cmd_chat)

    b = sub.add_parser("bench", help="prefill/decode speed, memory and the bandwidth roofline")
    b.add_argument("model")
    b.add_argument("--prompt", type=int, default=512, help="prompt tokens (default 512)")
    b.add_argument("--gen", type=int, default=128, help="decoded tokens (default 128)")
    b.add_argument("--repeats", type=int, default=3)
    b.add_argument("--threads", type=int, default=None)
    b.add_argument("--context", type=int, default=4096,
                   help="KV-cache size in tokens, as a default run has (default 4096)")
    b.add_argument("--routing-trace", default=None, metavar="FILE.npz",
                   help="force each token's experts from a recorded trace (real compute and reads)")
    _add_memory_arg(b)
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(func=cmd_bench)

    pl = sub.add_parser("plan", help="say, before loading, whether and how a model fits a memory budget")
    pl.add_argument("model")
    _add_memory_arg(pl)
    pl.add_argument("--context", type=int, default=4096, help="KV-cache size in tokens (default 4096)")
    pl.add_argument("--simulate", default=None, metavar="TRACE.npz",
                    help="replay a routing trace through each eviction policy and Belady's optimum")
    pl.add_argument("--no-measure", action="store_true",
                    help="skip measuring memory and disk bandwidth (no speed prediction)")
    pl.add_argument("--json", action="store_true", help="print one JSON object")
    pl.set_defaults(func=cmd_plan)

    d = sub.add_parser("demo", help="make a tiny random-weight model and run it (no download; its text is noise)")
    d.add_argument("--dir", type=Path, default=None, help="where to keep the demo model")
    d.add_argument("--threads", type=int, default=None)
    _add_memory_arg(d)
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .errors import USER_ERRORS
    try:
        return args.func(args)
    except USER_ERRORS as e:
        print(f"edgeoss: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
