"""The ASGI application: routes, errors in OpenAI's shape, the API key, CORS, the body limit.

create_app(model, ...) returns a Starlette app that any ASGI server can run; its lifespan starts
and stops the engine thread. Every error a client can cause is a 4xx in OpenAI's shape
({"error": {"message", "type", "param", "code"}}); an unexpected one is a 500 in the same
shape, and the server goes on serving.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request as HTTPRequest
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from .chat_completions import chat_completions
from .completions import completions
from .metrics import Metrics
from .responses import ResponseStore, responses_create, responses_get
from .schemas import APIError, bad_request
from .worker import EngineWorker

log = logging.getLogger("edgeoss.server")

DEFAULT_BODY_LIMIT = 16 << 20   # 16 MiB: a long agent history is a few MB at most


@dataclass
class ServerState:
    model: object
    model_name: str
    worker: EngineWorker
    api_key: str | None = None
    body_limit: int = DEFAULT_BODY_LIMIT
    created: int = field(default_factory=lambda: int(time.time()))
    fingerprint: str = field(default_factory=lambda: "fp_edgeoss_" + secrets.token_hex(4))
    responses: ResponseStore = field(default_factory=ResponseStore)

    def __post_init__(self):
        self.encoding = self.model.tokenizer
        vocab = self.model.files.vocab_path
        self.vocab_file = str(vocab) if vocab is not None else None
        self.context = self.model.context
        self.metrics = Metrics(self)

    def check_model(self, name: str) -> None:
        if name != self.model_name:
            raise APIError(404, f"The model `{name}` does not exist: this server serves `{self.model_name}` "
                                "(GET /v1/models lists it).", param="model", code="model_not_found")

    async def read_json(self, http: HTTPRequest):
        """The request body as JSON, within the body limit."""
        declared = http.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.body_limit:
            raise self._too_large()
        data, size = [], 0
        async for chunk in http.stream():
            size += len(chunk)
            if size > self.body_limit:
                raise self._too_large()
            data.append(chunk)
        try:
            return json.loads(b"".join(data))
        except (ValueError, UnicodeDecodeError, RecursionError) as e:  # RecursionError: nested too deep
            raise bad_request(f"the request body is not valid JSON: {e}", code="invalid_json") from None

    def _too_large(self) -> APIError:
        return APIError(413, f"the request body is larger than this server's limit of {self.body_limit} bytes",
                        code="request_too_large")


class APIKeyMiddleware:
    """Every route but /health needs `Authorization: Bearer KEY` when the server has a key."""

    def __init__(self, app, api_key: str | None):
        self.app, self.api_key = app, api_key

    async def __call__(self, scope, receive, send):
        if self.api_key is None or scope["type"] != "http" or scope["path"] == "/health" or scope["method"] == "OPTIONS":
            return await self.app(scope, receive, send)
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.api_key.encode()):
            return await self.app(scope, receive, send)
        err = APIError(401, "Incorrect or missing API key: send `Authorization: Bearer KEY` with the key the "
                            "server was started with (--api-key).", code="invalid_api_key")
        await _error_response(err)(scope, receive, send)


def _error_response(err: APIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


async def _api_error(request, exc: APIError):
    return _error_response(exc)


async def _http_error(request, exc: HTTPException):
    kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    message = f"{request.method} {request.url.path}: {exc.detail}"
    return _error_response(APIError(exc.status_code, message, code=kind))


async def _server_error(request, exc: Exception):
    log.exception("unexpected error in %s %s", request.method, request.url.path)
    return _error_response(APIError(500, f"internal error: {type(exc).__name__}: {exc}", code="internal_error"))


async def health(http: HTTPRequest):
    state = http.app.state.edgeoss
    return JSONResponse({"status": "ok", "model": state.model_name, "running": state.worker.running,
                         "waiting": state.worker.queue_depth})


def _model_card(state) -> dict:
    return {"id": state.model_name, "object": "model", "created": state.created, "owned_by": "edgeoss",
            "context_length": state.context}


async def list_models(http: HTTPRequest):
    return JSONResponse({"object": "list", "data": [_model_card(http.app.state.edgeoss)]})


async def get_model(http: HTTPRequest):
    state = http.app.state.edgeoss
    state.check_model(http.path_params["model"])
    return JSONResponse(_model_card(state))


async def metrics(http: HTTPRequest):
    body, content_type = http.app.state.edgeoss.metrics.render()
    return PlainTextResponse(body, media_type=content_type)


def create_app(model, *, model_name: str | None = None, parallel: int = 1, queue_limit: int | None = None,
               api_key: str | None = None, cors_origins: list[str] | tuple = (), cache_ram: int = 0,
               body_limit: int = DEFAULT_BODY_LIMIT, shutdown_grace: float = 5.0) -> Starlette:
    """An OpenAI-compatible ASGI app serving a loaded `model` (edgeoss.load)."""
    if model.tokenizer is None:
        raise ValueError("this model was converted without a tokenizer (--no-tokenizer); the server needs one: "
                         "re-convert it from a checkpoint that has tokenizer.json")
    name = model_name or Path(model.files.path).name
    worker = EngineWorker(model, parallel=parallel, queue_limit=4 * parallel if queue_limit is None else queue_limit,
                          cache_ram=cache_ram)
    state = ServerState(model=model, model_name=name, worker=worker, api_key=api_key, body_limit=body_limit)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        worker.start()
        try:
            yield
        finally:
            worker.stop(grace=shutdown_grace)

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", get_model, methods=["GET"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/responses", responses_create, methods=["POST"]),
        Route("/v1/responses/{response_id}", responses_get, methods=["GET"]),
    ]
    middleware = []
    if cors_origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                                     allow_headers=["authorization", "content-type"]))
    middleware.append(Middleware(APIKeyMiddleware, api_key=api_key))
    middleware.append(Middleware(state.metrics.middleware))
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan,
                    exception_handlers={APIError: _api_error, HTTPException: _http_error, Exception: _server_error})
    app.state.edgeoss = state
    return app
