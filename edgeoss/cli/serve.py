"""`edgeoss serve MODEL`: the OpenAI-compatible server on 127.0.0.1 (edgeoss.server)."""

from __future__ import annotations

import ipaddress
import sys

from .args import MODEL_HELP, add_runtime_args, model_arg


def add_parser(sub) -> None:
    s = sub.add_parser("serve", help="OpenAI-compatible HTTP server (chat completions, responses, completions)")
    s.add_argument("model", type=model_arg, help=MODEL_HELP)
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--parallel", type=int, default=1, metavar="N",
                   help="requests that generate at once, batched together (default 1); more wait in a queue")
    s.add_argument("--queue", type=int, default=None, metavar="N",
                   help="requests that may wait for a free sequence (default 4 x --parallel); beyond, a 429")
    s.add_argument("--api-key", default=None, metavar="KEY",
                   help="require `Authorization: Bearer KEY` on every route but /health")
    s.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="allow browser pages from ORIGIN (repeatable; none by default)")
    s.add_argument("--cache-ram", default=None, metavar="SIZE",
                   help="memory for the prefix cache of finished conversations (default: from the memory plan)")
    s.add_argument("--model-name", default=None, help="the model id clients use (default: the folder's name)")
    add_runtime_args(s)
    s.set_defaults(func=run)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(a) -> int:
    from ..engine.model import load
    from ..memory.planner import format_plan
    from ..server import serve
    if a.parallel < 1:
        print("edgeoss: error: --parallel must be at least 1", file=sys.stderr)
        return 2
    if not _loopback(a.host) and not a.api_key:
        print(f"edgeoss: warning: listening on {a.host} without --api-key: anyone who can reach this machine "
              "can use the model", file=sys.stderr)
    model = load(a.model, context=a.context, threads=a.threads, memory=a.memory, kv_cache=a.kv_cache,
                 sequences=a.parallel, cache_ram=a.cache_ram, prefix_cache=True)
    print(format_plan(model.plan), file=sys.stderr)

    def ready(url: str) -> None:
        print(f"edgeoss: serving {a.model_name or model.files.path.name} at {url}/v1 "
              f"({a.parallel} at once; Ctrl-C to stop)", file=sys.stderr, flush=True)
    serve(model, host=a.host, port=a.port, parallel=a.parallel, queue=a.queue, api_key=a.api_key, cors_origins=a.cors_origin,
          cache_ram=a.cache_ram, model_name=a.model_name, ready=ready)
    return 0
