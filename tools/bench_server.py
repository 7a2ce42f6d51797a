"""An OpenAI-compatible server under load, the same requests for edgeoss and llama-server.

    python tools/bench_server.py URL --vocab DIR [--streams 4] [--gen 64] [--prompt 32]
                                 [--turns 4 --user 100 --reply 600] [--json]

1. Streams: one stream alone, then --streams concurrent streaming clients, each asking
   /v1/completions for --gen tokens after its own --prompt-token prompt (token ids, so both servers
   run exactly the same tokens). Reported: aggregate generated tokens/s over the wall time of the
   concurrent run, each stream's tokens/s after its first token, and time to first token.
2. Chat turns (--turns > 0): the prompts of a harmony chat (bench_chat_turns.py's user messages
   and scripted replies; earlier reasoning dropped as harmony renders it), sent turn by turn as
   token ids, then the time to first token of the last turn. Both servers keep a prefix cache;
   this measures what each runs of a turn and how fast.

URL is the server's base (http://127.0.0.1:8000). Start edgeoss with `edgeoss serve MODEL
--parallel 4 --context C` and llama-server with `-np 4 -t 2 -c 4C` (its context is split over
its slots) on the same GGUF. The model id sent is whatever /v1/models lists first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def model_id(url: str) -> str:
    return httpx.get(url + "/v1/models", timeout=30).json()["data"][0]["id"]


# llama-server's own fields: never stop at an end token, keep the prompt cached (edgeoss refuses
# fields OpenAI does not define; random weights almost never write an end token in 64)
EXTRA = {"llama-server": {"ignore_eos": True, "cache_prompt": True}, "edgeoss": {}}
KIND = {"server": "edgeoss"}


def stream_completion(url: str, model: str, prompt: list[int], max_tokens: int) -> dict:
    """One streamed /v1/completions request: times of its first and last chunk, tokens generated."""
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}, **EXTRA[KIND["server"]]}
    t0 = time.perf_counter()
    first = last = None
    tokens = chunks = 0
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=3600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            data = json.loads(line[6:])
            now = time.perf_counter()
            if data.get("choices") and data["choices"][0].get("text"):
                first = first or now
                last = now
                chunks += 1
            if data.get("usage"):
                tokens = data["usage"].get("completion_tokens", tokens)
            if data.get("timings", {}).get("predicted_n"):
                tokens = data["timings"]["predicted_n"]
    tokens = tokens or chunks
    return {"start": t0, "first": first, "last": last, "tokens": tokens, "ttft_s": (first - t0) if first else None,
            "decode_tokens_per_s": (tokens - 1) / (last - first) if first and last and last > first else None}


def streams(url: str, model: str, n: int, prompt: int, gen: int, vocab: int = 1000) -> dict:
    prompts = [[(101 + 37 * s + 11 * i) % vocab + 200 for i in range(prompt)] for s in range(n + 1)]
    solo = stream_completion(url, model, prompts[n], gen)
    results = [None] * n

    def run(i):
        results[i] = stream_completion(url, model, prompts[i], gen)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = max(r["last"] for r in results) - t0
    total = sum(r["tokens"] for r in results)
    return {"streams": n, "prompt_tokens": prompt, "gen_tokens": gen,
            "solo_decode_tokens_per_s": solo["decode_tokens_per_s"], "solo_ttft_s": solo["ttft_s"],
            "aggregate_tokens_per_s": total / wall, "wall_s": wall, "tokens": total,
            "per_stream_decode_tokens_per_s": [r["decode_tokens_per_s"] for r in results],
            "ttft_s": [r["ttft_s"] for r in results],
            "aggregate_over_solo": (total / wall) / solo["decode_tokens_per_s"]}


class _Prompts:
    """Enough of a model for Chat to render turns: a tokenizer, and sequences it never uses."""

    def __init__(self, encoding):
        self.tokenizer = encoding

    def new_sequence(self):
        return None


def chat_turns(url: str, model: str, vocab_dir: str, turns: int, user: int, reply: int) -> dict:
    from bench_chat_turns import run_turns, user_message

    from edgeoss.format.vocab import load_encoding
    enc = load_encoding(vocab_dir)
    messages = [user_message(i + 1, user, enc) for i in range(turns)]
    _, n_prompt, _, rendered = run_turns(_Prompts(enc), messages, reply, prepare=False, compute=False)
    last = None
    for prompt, _ in rendered:
        # one token a turn: what the server generates is never the scripted reply the next prompt
        # shows, so what a prefix cache can keep is each prompt, however long the reply ran
        last = stream_completion(url, model, prompt, 1)
    history = len(rendered[-2][0]) + rendered[-2][1]
    return {"turns": turns, "history_tokens": history, "last_prompt_tokens": n_prompt, "ttft_last_turn_s": last["ttft_s"]}


def chat_turns_api(url: str, model: str, vocab_dir: str, turns: int, user: int, reply: int) -> dict:
    """A chat through /v1/chat/completions as an app runs it: each turn sends the history with the
    replies the server returned, waits until the server has prepared the next turn (as a user
    reading the reply would give it time to), and the last turn's first token is timed."""
    from bench_chat_turns import user_message

    from edgeoss.format.vocab import load_encoding
    enc = load_encoding(vocab_dir)
    messages = []

    def preparing() -> float:
        for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
            if line.startswith("edgeoss_requests_preparing "):
                return float(line.split()[1])
        return 0.0
    for i in range(turns - 1):
        messages.append({"role": "user", "content": user_message(i + 1, user, enc)})
        r = httpx.post(url + "/v1/chat/completions", timeout=3600, json={
            "model": model, "messages": messages, "max_tokens": reply, "temperature": 0}).json()
        messages.append({"role": "assistant", "content": r["choices"][0]["message"]["content"]})
        while preparing():
            time.sleep(0.2)
    messages.append({"role": "user", "content": user_message(turns, user, enc)})
    body = {"model": model, "messages": messages, "max_tokens": 1, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    first, usage = None, None
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=3600) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                data = json.loads(line[6:])
                if data.get("choices") and first is None and data["choices"][0]["delta"].get("content") is not None \
                        and data["choices"][0]["delta"].get("role") is None:
                    first = time.perf_counter()
                usage = data.get("usage") or usage
    end = time.perf_counter()
    return {"turns": turns, "last_prompt_tokens": usage["prompt_tokens"],
            "cached_tokens": usage["prompt_tokens_details"]["cached_tokens"],
            "ttft_last_turn_s": (first or end) - t0}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("url")
    p.add_argument("--vocab", required=True, help="folder with o200k_base.tiktoken (for the chat turns)")
    p.add_argument("--streams", type=int, default=4)
    p.add_argument("--prompt", type=int, default=32)
    p.add_argument("--gen", type=int, default=64)
    p.add_argument("--turns", type=int, default=4)
    p.add_argument("--user", type=int, default=100)
    p.add_argument("--reply", type=int, default=600)
    p.add_argument("--chat-api", action="store_true",
                   help="edgeoss only: the chat phase through /v1/chat/completions, replies as returned")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    url = a.url.rstrip("/")
    model = model_id(url)
    health = httpx.get(url + "/health", timeout=30)
    KIND["server"] = "edgeoss" if "running" in health.text else "llama-server"
    r = {"server": KIND["server"], "url": url, "model": model}
    stream_completion(url, model, [300, 301, 302, 303], 4)  # warm: first-call costs out of the timings
    if a.streams:
        r["concurrent"] = streams(url, model, a.streams, a.prompt, a.gen)
    if a.turns and a.chat_api:
        r["chat_api"] = chat_turns_api(url, model, a.vocab, a.turns, a.user, a.reply)
    elif a.turns:
        r["chat"] = chat_turns(url, model, a.vocab, a.turns, a.user, a.reply)
    if a.json:
        print(json.dumps(r))
    else:
        c = r.get("concurrent")
        if c:
            print(f"{KIND['server']}: {c['streams']} streams, aggregate {c['aggregate_tokens_per_s']:.2f} tok/s "
                  f"({c['aggregate_over_solo']:.2f}x one stream alone at {c['solo_decode_tokens_per_s']:.2f}); "
                  f"per stream {statistics.mean(c['per_stream_decode_tokens_per_s']):.2f} tok/s, "
                  f"ttft {statistics.mean(c['ttft_s']):.2f} s")
        if "chat" in r:
            ch = r["chat"]
            print(f"{KIND['server']}: turn {ch['turns']} ({ch['last_prompt_tokens']}-token prompt after "
                  f"{ch['history_tokens']} tokens of history): first token after {ch['ttft_last_turn_s']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
