"""`edgeoss chat MODEL`: an interactive harmony chat; the final channel streams, reasoning on request."""

from __future__ import annotations

import sys

from .args import MODEL_HELP, add_runtime_args, add_sampling_args, model_arg, sampling


def add_parser(sub) -> None:
    ch = sub.add_parser("chat", help="interactive harmony chat")
    ch.add_argument("model", type=model_arg, help=MODEL_HELP)
    ch.add_argument("--reasoning", choices=("low", "medium", "high"), default="medium")
    ch.add_argument("--show-reasoning", action="store_true", help="print the analysis channel too")
    ch.add_argument("--instructions", default=None, help="developer instructions (a system prompt)")
    add_sampling_args(ch, temperature=1.0)
    ch.set_defaults(max_tokens=2048)
    add_runtime_args(ch)
    ch.set_defaults(func=run)


def run(a) -> int:
    from ..chat.harmony import Chat
    from ..engine.model import load
    model = load(a.model, context=a.context, threads=a.threads, memory=a.memory, kv_cache=a.kv_cache)
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
        for d in chat.send(line, **sampling(a)):
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
