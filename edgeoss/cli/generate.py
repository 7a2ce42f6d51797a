"""`edgeoss generate MODEL PROMPT`: raw completion, streamed as text (or token ids)."""

from __future__ import annotations

import sys
import time

from .args import MODEL_HELP, add_runtime_args, add_sampling_args, model_arg, sampling


def add_parser(sub) -> None:
    g = sub.add_parser("generate", help="raw completion of a prompt, streamed")
    g.add_argument("model", type=model_arg, help=MODEL_HELP)
    g.add_argument("prompt")
    g.add_argument("--ids", action="store_true", help="the prompt is token ids, output token ids")
    g.add_argument("--ignore-eos", action="store_true", help="do not stop at end-of-sequence tokens")
    add_sampling_args(g, temperature=0.0)
    add_runtime_args(g)
    g.set_defaults(func=run)


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


def run(a) -> int:
    from ..engine.model import load
    model = load(a.model, context=a.context, threads=a.threads, memory=a.memory, kv_cache=a.kv_cache)
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
    for tok in model.generate(ids, stop=stop, **sampling(a)):
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
