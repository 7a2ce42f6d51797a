"""Arguments several commands share: the model, the runtime (threads, context, memory) and sampling."""

from __future__ import annotations

import argparse

MODEL_HELP = "a model directory, or a name from `edgeoss list` (the models home, EDGEOSS_HOME)"


def model_arg(value: str):
    """argparse type of every MODEL argument: a path, or a name in the models home (resolved here)."""
    from ..format.models_home import ModelNotFound, resolve_model
    try:
        return str(resolve_model(value))
    except ModelNotFound as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None, help="worker threads (default: physical cores)")
    p.add_argument("--context", type=int, default=4096,
                   help="KV-cache size in tokens (grows on demand when everything fits in memory)")
    add_memory_arg(p)
    add_kv_cache_arg(p)


def add_kv_cache_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kv-cache", choices=("f16", "f32", "q8"), default="f16",
                   help="how the KV cache keeps keys and values: float16 (default, half of float32's memory), "
                        "float32, or q8 (8-bit blocks, 0.56x float16)")


def add_memory_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--memory", default=None, metavar="SIZE",
                   help="memory budget for the whole process, e.g. 8G (default: what this machine can "
                        "spare); experts that do not fit stream from disk")


def add_sampling_args(p: argparse.ArgumentParser, temperature: float) -> None:
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=temperature, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0, help="0 = no limit")
    p.add_argument("--seed", type=int, default=None)


def sampling(a) -> dict:
    return dict(max_tokens=a.max_tokens, temperature=a.temperature, top_p=a.top_p, top_k=a.top_k, seed=a.seed)
