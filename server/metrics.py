"""Prometheus metrics (``GET /metrics``): latency histograms, token counters, engine gauges.

One :class:`Metrics` per app (its own ``CollectorRegistry``, so two apps in one process, as in
tests, never share or collide). Wiring, all of it small calls:

- ``create_app`` sets ``app.state.metrics = Metrics()`` and registers :data:`metrics_route`;
- a generation handler takes ``timer = metrics.request_timer("chat")``, calls
  ``timer.tokens(n)`` each time it sends a chunk carrying ``n`` new tokens, and
  ``timer.finish(status, prompt_tokens, completion_tokens)`` once at the end, whatever happened
  (``finish`` is idempotent, so a ``finally`` may call it again);
- ``/metrics`` refreshes the engine gauges (queue depth, running sequences, KV cache use) from
  the engine at scrape time, so the engine needs no calls of its own.

Times are seconds (Prometheus convention). Names: ``hearth_time_to_first_token_seconds``,
``hearth_inter_token_latency_seconds``, ``hearth_e2e_request_latency_seconds``,
``hearth_prompt_tokens_total``, ``hearth_generation_tokens_total``,
``hearth_requests_total{endpoint,status}``, ``hearth_queue_depth``, ``hearth_running_sequences``,
``hearth_kv_cache_usage_ratio``, ``hearth_kv_cells_used``, ``hearth_draft_tokens``,
``hearth_draft_accepted_tokens``, ``hearth_prefix_hit_tokens``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from litestar import Request, Response, get
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
)  # fmt: skip
_ITL_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2,
    0.3, 0.5, 1.0, 2.5,
)  # fmt: skip


class Metrics:
    """All of Hearth's metrics in one registry. Thread-safe (prometheus-client locks)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.ttft = Histogram(
            "hearth_time_to_first_token_seconds",
            "Time from request to first token.",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "hearth_inter_token_latency_seconds",
            "Time between streamed chunks, per token.",
            ["endpoint"],
            buckets=_ITL_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "hearth_e2e_request_latency_seconds",
            "Time from request to last byte.",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            "hearth_prompt_tokens", "Prompt tokens processed.", ["endpoint"], registry=r
        )
        self.generation_tokens = Counter(
            "hearth_generation_tokens", "Tokens generated.", ["endpoint"], registry=r
        )
        self.requests = Counter(
            "hearth_requests",
            "Finished requests by HTTP status.",
            ["endpoint", "status"],
            registry=r,
        )
        self.queue_depth = Gauge("hearth_queue_depth", "Requests waiting.", registry=r)
        self.running = Gauge("hearth_running_sequences", "Sequences being decoded.", registry=r)
        self.kv_usage = Gauge(
            "hearth_kv_cache_usage_ratio", "Fraction of KV cells in use.", registry=r
        )
        self.kv_used = Gauge("hearth_kv_cells_used", "KV cells in use.", registry=r)
        self.drafted = Gauge(
            "hearth_draft_tokens", "Tokens drafted by prompt lookup since start.", registry=r
        )
        self.draft_accepted = Gauge(
            "hearth_draft_accepted_tokens",
            "Drafted tokens the model confirmed since start (acceptance = this / drafted).",
            registry=r,
        )
        self.prefix_hits = Gauge(
            "hearth_prefix_hit_tokens",
            "Prompt tokens whose KV was reused from an earlier request since start (hit rate ="
            " this / hearth_prompt_tokens_total).",
            registry=r,
        )

    def request_timer(self, endpoint: str) -> RequestTimer:
        """Start timing one request now."""
        return RequestTimer(self, endpoint)

    def count_request(self, endpoint: str, status: int) -> None:
        """Count a request that generated nothing (e.g. rejected with a 4xx before the engine)."""
        self.requests.labels(endpoint, str(status)).inc()

    def observe_stats(self, stats: Any) -> None:
        """Set the engine gauges from a ``BackendStats`` (running, waiting, kv_cells_*)."""
        self.queue_depth.set(stats.waiting)
        self.running.set(stats.running)
        self.kv_used.set(stats.kv_cells_used)
        total = stats.kv_cells_total or 0
        self.kv_usage.set(stats.kv_cells_used / total if total else 0.0)
        self.drafted.set(getattr(stats, "draft_tokens", 0))
        self.draft_accepted.set(getattr(stats, "draft_accepted", 0))
        self.prefix_hits.set(getattr(stats, "prefix_hit_tokens", 0))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestTimer:
    """The timings of one request; created when the request arrives."""

    def __init__(self, metrics: Metrics, endpoint: str) -> None:
        self._m = metrics
        self.endpoint = endpoint
        self.start = time.perf_counter()
        self._last: float | None = None
        self._done = False

    def tokens(self, n: int = 1) -> None:
        """A chunk with ``n`` new tokens was sent (``n == 0``: text only, nothing recorded)."""
        if n <= 0:
            return
        now = time.perf_counter()
        if self._last is None:
            self._m.ttft.labels(self.endpoint).observe(now - self.start)
        else:
            gap = (now - self._last) / n
            hist = self._m.itl.labels(self.endpoint)
            for _ in range(n):
                hist.observe(gap)
        self._last = now

    def finish(self, status: int, prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        """Record the end of the request once; later calls do nothing."""
        if self._done:
            return
        self._done = True
        m, ep = self._m, self.endpoint
        m.e2e.labels(ep).observe(time.perf_counter() - self.start)
        m.requests.labels(ep, str(status)).inc()
        if prompt_tokens:
            m.prompt_tokens.labels(ep).inc(prompt_tokens)
        if completion_tokens:
            m.generation_tokens.labels(ep).inc(completion_tokens)


def engine_stats(engine: Any) -> Any | None:
    """The engine's ``BackendStats`` (``Engine.stats()``), or None while there is no engine or
    backend; never raises."""
    if engine is None:
        return None
    try:
        return engine.stats()
    except Exception:  # a scrape must not fail because the engine is starting or stopping
        log.debug("engine stats unavailable", exc_info=True)
        return None


@get("/metrics", include_in_schema=False, sync_to_thread=False)
def metrics_route(request: Request) -> Response[bytes]:
    """Prometheus text format of ``app.state.metrics``, engine gauges refreshed first."""
    state = request.app.state.server
    metrics: Metrics = state.metrics
    stats = engine_stats(state.hearth.engine if state.hearth is not None else None)
    if stats is not None:
        metrics.observe_stats(stats)
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
