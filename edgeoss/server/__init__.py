"""The OpenAI-compatible HTTP server: Starlette routes on an engine thread (continuous batching).
May import chat, engine, memory, format, config and errors; never cli.

    import edgeoss
    edgeoss.serve("~/models/gpt-oss-20b", port=8000)           # blocks; Ctrl-C stops it
    app = edgeoss.server.create_app(edgeoss.load(path))         # or run the ASGI app yourself
"""

from __future__ import annotations

import sys

from .app import create_app

__all__ = ["create_app", "serve"]


def serve(model, host: str = "127.0.0.1", port: int = 8000, *, parallel: int = 1, queue: int | None = None,
          api_key: str | None = None,
          cors_origins=(), context: int = 4096, memory=None, threads: int | None = None, cache_ram=None,
          kv_cache: str = "f16", model_name: str | None = None, log_level: str = "warning", ready=None) -> None:
    """Serve `model` (a loaded model, or a converted model's directory) until interrupted.
    `parallel` requests generate at once and `queue` more wait (default 4 x parallel); `ready(url)`
    is called once the server accepts connections (port 0: any free port, which url names)."""
    import uvicorn

    from ..memory.planner import parse_size
    if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        from ..engine.model import load
        model = load(model, context=context, threads=threads, memory=memory, kv_cache=kv_cache,
                     sequences=parallel, cache_ram=cache_ram, prefix_cache=True)
    cache = model.plan.prefix_cache or parse_size(cache_ram or "1G")
    app = create_app(model, model_name=model_name, parallel=parallel, queue_limit=queue, api_key=api_key,
                     cors_origins=list(cors_origins), cache_ram=cache)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5,
                            lifespan="on")
    server = uvicorn.Server(config)
    if ready is not None:
        import threading

        def announce():
            while not server.started and not server.should_exit:
                threading.Event().wait(0.05)
            if server.started:
                bound = server.servers[0].sockets[0].getsockname()[1] if server.servers else port  # port 0: the OS chose
                ready(f"http://{'[' + host + ']' if ':' in host else host}:{bound}")
        threading.Thread(target=announce, daemon=True).start()
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C once it has shut down cleanly: the normal way out
        pass
    if not server.started:
        sys.exit(f"edgeoss: error: could not listen on {host}:{port} (is another server using the port?)")
