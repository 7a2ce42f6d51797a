"""GET /metrics: Prometheus text, read off the engine when scraped (prometheus_client).

Requests by route and status; prompt, cached and generated tokens; generated tokens/s over the
last 10 s; requests running and waiting; the prefix cache's and the expert cache's hit rates;
the process's RSS.
"""

from __future__ import annotations

import psutil
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

KNOWN_ROUTES = ("/health", "/metrics", "/v1/models", "/v1/chat/completions", "/v1/completions", "/v1/responses")


class _EngineCollector:
    def __init__(self, state):
        self.state = state
        self.process = psutil.Process()

    def collect(self):
        w = self.state.worker
        yield CounterMetricFamily("edgeoss_prompt_tokens", "Prompt tokens of admitted requests", value=w.prompt_tokens)
        yield CounterMetricFamily("edgeoss_cached_prompt_tokens", "Prompt tokens reused from the prefix cache, not run",
                                  value=w.cached_tokens)
        yield CounterMetricFamily("edgeoss_generated_tokens", "Tokens generated", value=w.generated_tokens)
        yield GaugeMetricFamily("edgeoss_generated_tokens_per_second", "Tokens generated per second over the last 10 s",
                                value=w.tokens_per_second())
        yield GaugeMetricFamily("edgeoss_requests_running", "Requests holding a sequence", value=w.running)
        yield GaugeMetricFamily("edgeoss_requests_waiting", "Requests queued for a sequence", value=w.queue_depth)
        yield GaugeMetricFamily("edgeoss_requests_preparing",
                                "Next turns being brought into the prefix cache in the background", value=w.preparing)
        pc = w.prefix_cache
        yield GaugeMetricFamily("edgeoss_prefix_cache_hit_rate", "Share of requests that started from a cached prefix",
                                value=(pc.hits / pc.lookups) if pc is not None and pc.lookups else 0.0)
        yield GaugeMetricFamily("edgeoss_prefix_cache_bytes", "Bytes of idle sequences the prefix cache keeps",
                                value=pc.nbytes if pc is not None else 0)
        ec = self.state.model.expert_cache
        looked = (ec.hits + ec.misses) if ec is not None else 0
        yield GaugeMetricFamily("edgeoss_expert_cache_hit_rate",
                                "Share of expert uses found in memory (1 when every expert is resident)",
                                value=(ec.hits / looked) if looked else 1.0)
        yield GaugeMetricFamily("edgeoss_resident_memory_bytes", "Resident set size of the server process",
                                value=self.process.memory_info().rss)


class Metrics:
    def __init__(self, state):
        self.registry = CollectorRegistry()
        self.requests = Counter("edgeoss_requests", "HTTP requests answered, by route and status",
                                ["route", "status"], registry=self.registry)
        self.registry.register(_EngineCollector(state))

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def middleware(self, app):
        """ASGI middleware counting each answer's status by route."""
        async def counted(scope, receive, send):
            if scope["type"] != "http":
                return await app(scope, receive, send)
            path = scope["path"]
            route = next((r for r in KNOWN_ROUTES if path == r or path.startswith(r + "/")), "other")
            status = {}

            async def send_status(message):
                if message["type"] == "http.response.start":
                    status["code"] = message["status"]
                    self.requests.labels(route, str(message["status"])).inc()
                await send(message)
            await app(scope, receive, send_status)
        return counted
