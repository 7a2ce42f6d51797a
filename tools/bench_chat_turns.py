"""Time to first token of a chat's last turn, after a long history: edgeoss.Chat (the history
prepared in the cache while the user reads), the same without that preparation (stepping back to
where the previous prompt ended), a full reprocess of the same prompt, and optionally
llama-server's /completion with cache_prompt on the same tokens.

    python tools/bench_chat_turns.py MODEL [--turns 4] [--user 100] [--reply 600]
                                     [--llama-server http://127.0.0.1:8080] [--json]

Each user message is --user tokens of filler text; each reply a scripted, well-formed harmony
reply (reasoning, then a final answer) of about --reply tokens, the shape of a chat turn. Each turn's prompt is what Chat renders (harmony drops
earlier reasoning and closes a final answer with <|end|>). llama-server is sent the same prompts
as token ids, turn by turn, each asking for as many tokens as the reply had, so its cache holds
what it would in a chat.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FILLER = ("The committee reviewed the quarterly figures for each region, compared them with the "
          "previous year, and asked the analysts to explain every change larger than five percent. ")


def user_message(turn: int, tokens: int, enc) -> str:
    words = []
    while len(enc.encode(" ".join(words))) < tokens:
        words.append(f"({turn}.{len(words)}) " + FILLER)
    return " ".join(words)


def scripted_reply(turn: int, tokens: int, enc) -> list[int]:
    """A well-formed harmony reply of about `tokens` tokens: reasoning, then a final answer
    (random weights would write noise that parses as nothing, and a history without replies)."""
    half = " ".join(f"point {turn}.{i} checks out." for i in range(tokens // 10))
    text = (f"<|channel|>analysis<|message|>Let me think about part {turn}: {half}<|end|>"
            f"<|start|>assistant<|channel|>final<|message|>Summary of part {turn}: {half}<|return|>")
    return enc.encode(text, allowed_special="all")


def run_turns(model, messages, reply: int, prepare: bool, compute: bool = True):
    """The turns of a Chat, each reply scripted: the reply's tokens run on the chat's sequence
    (the cache state generating them leaves), then, when preparing, the history re-rendered as
    the next prompt shows it goes into the cache (Chat does that in the background while the
    user reads). The last turn's prompt is timed as Chat.stream runs it before its first token.
    compute=False only renders the turns. Returns (ttft s, prompt tokens, cached tokens, [(prompt, reply length)] per turn)."""
    import openai_harmony as oh
    from edgeoss.chat.harmony import Chat
    chat = Chat(model, reasoning="medium", prepare_next_turn=False)
    enc = chat.encoding
    turns = []
    for i, text in enumerate(messages[:-1]):
        chat.add_user(text)
        prompt = chat.prompt_tokens()
        out = scripted_reply(i + 1, reply, enc)
        if compute:  # as if generated: the stop token never runs
            model.prefill(prompt + out[:-1], chat.sequence)
        chat.messages.extend(enc.parse_messages_from_completion_tokens(out, oh.Role.ASSISTANT))
        turns.append((prompt, len(out)))
        if prepare and compute:
            model.prefill(enc.render_conversation(chat._conversation()), chat.sequence)
    chat.add_user(messages[-1])
    prompt = chat.prompt_tokens()
    if not compute:
        return None, len(prompt), None, turns + [(prompt, 1)]
    t0 = time.perf_counter()
    _, kept = model.prefill(prompt, chat.sequence)
    ttft = time.perf_counter() - t0
    turns.append((prompt, 1))
    return ttft, len(prompt), kept, turns


def llama_server_turns(url: str, turns) -> dict:
    """Replays the turns' prompts (token ids) on llama-server slot 0 with cache_prompt; returns
    the last turn's wall time, prompt_ms and the tokens it processed."""
    def post(body):
        req = urllib.request.Request(url.rstrip("/") + "/completion", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        t0 = time.perf_counter()
        with urllib.request.urlopen(req, timeout=3600) as r:
            out = json.loads(r.read())
        return time.perf_counter() - t0, out
    result = None
    for prompt, n in turns:
        wall, out = post({"prompt": prompt, "n_predict": n, "cache_prompt": True, "temperature": 0,
                          "id_slot": 0, "ignore_eos": True})
        t = out.get("timings", {})
        result = {"wall_s": wall, "prompt_ms": t.get("prompt_ms"), "prompt_n": t.get("prompt_n"),
                  "cache_n": t.get("cache_n")}
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("--turns", type=int, default=4)
    p.add_argument("--user", type=int, default=100, help="tokens of each user message (about)")
    p.add_argument("--reply", type=int, default=600, help="tokens of each scripted reply (about)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--llama-server", default=None, metavar="URL")
    p.add_argument("--only-llama-server", action="store_true",
                   help="time llama-server alone (both models mapped at once would not fit many machines)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()

    import edgeoss
    model = edgeoss.load(a.model, context=max(4096, 2 * a.turns * (a.user + a.reply)), threads=a.threads)
    enc = model.tokenizer
    if enc is None:
        print("this model has no tokenizer: convert it with one", file=sys.stderr)
        return 2
    messages = [user_message(i + 1, a.user, enc) for i in range(a.turns)]

    if a.only_llama_server:
        _, n_prompt, _, turns = run_turns(model, messages, a.reply, prepare=False, compute=False)
        ls = llama_server_turns(a.llama_server, turns)
        print(json.dumps({"last_prompt_tokens": n_prompt, "llama_server": ls}) if a.json else
              f"llama-server /completion, turn {a.turns} ({n_prompt}-token prompt): {ls['wall_s']:.2f} s "
              f"({ls['prompt_n']} tokens run, prompt {ls['prompt_ms'] / 1000:.2f} s)")
        return 0
    model.prefill(enc.encode("warm up"), model.new_sequence())  # first-call costs out of the timings
    prepared_ttft, n_prompt, prepared_cached, turns = run_turns(model, messages, a.reply, prepare=True)
    plain_ttft, _, plain_cached, turns2 = run_turns(model, messages, a.reply, prepare=False)
    assert [t[0] for t in turns] == [t[0] for t in turns2]
    fresh = model.new_sequence()
    t0 = time.perf_counter()
    model.prefill(turns[-1][0], fresh)
    full_ttft = time.perf_counter() - t0
    history = len(turns[-2][0]) + turns[-2][1]
    r = {"model": a.model, "turns": a.turns, "history_tokens": history, "last_prompt_tokens": n_prompt,
         "ttft_prepared_s": prepared_ttft, "cached_prepared": prepared_cached,
         "ttft_without_preparing_s": plain_ttft, "cached_without_preparing": plain_cached,
         "ttft_full_reprocess_s": full_ttft, "threads": model.threads}
    if a.llama_server:
        r["llama_server"] = llama_server_turns(a.llama_server, turns)
        r["ratio_prepared_to_llama_server"] = prepared_ttft / r["llama_server"]["wall_s"]
    if a.json:
        print(json.dumps(r))
    else:
        print(f"turn {a.turns}: {n_prompt}-token prompt after {history} tokens of history")
        print(f"  edgeoss Chat, history prepared:  {prepared_ttft:6.2f} s to first token ({prepared_cached} cached)")
        print(f"  edgeoss, no preparation:         {plain_ttft:6.2f} s ({plain_cached} cached)")
        print(f"  edgeoss, full reprocess:         {full_ttft:6.2f} s")
        if a.llama_server:
            ls = r["llama_server"]
            print(f"  llama-server /completion:        {ls['wall_s']:6.2f} s ({ls['prompt_n']} tokens run, "
                  f"prompt {ls['prompt_ms'] / 1000:.2f} s) -> edgeoss at {r['ratio_prepared_to_llama_server']:.2f}x "
                  "its time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
