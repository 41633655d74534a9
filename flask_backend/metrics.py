"""Prometheus metrics: HTTP requests, ingest, match latency, index sizes, engine readiness.

Under gunicorn every worker is a separate process, so counters live in
``prometheus_client``'s multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR`` must be set before
``prometheus_client`` is imported in any process (gunicorn.conf.py sets it up and marks
dead workers), and ``/metrics`` merges every worker's files, whichever worker answers.
Without the variable (dev server, tests, CLI) the normal in-process registry is used.

Index sizes and engine readiness are read at scrape time (the store is shared by all
processes, so any worker gives the same answer). Labels never carry event ids, photo
ids or URLs: their number must stay bounded.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from flask import Flask, Response

    from .services import Services
    from .sources.claims import PhotoOutcome

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


HTTP_REQUESTS = Counter(
    "facematch_http_requests_total", "HTTP requests by endpoint (route rule), method and status",
    ["endpoint", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "facematch_http_request_duration_seconds", "HTTP request latency by endpoint (route rule) and method",
    ["endpoint", "method"], buckets=LATENCY_BUCKETS,
)
MATCH_LATENCY = Histogram(
    "facematch_match_duration_seconds", "Latency of match requests by space (all outcomes)",
    ["space"], buckets=LATENCY_BUCKETS,
)
INGEST_PHOTOS = Counter(
    "facematch_ingest_photos_total",
    "Photos handled by ingest, by source (api, cli, worker) and outcome (done, no_face, failed, retry, skipped, ...)",
    ["source", "outcome"],
)
INGEST_FACES = Counter("facematch_ingest_faces_total", "Faces indexed, by source", ["source"])
INGEST_FAILURES = Counter(
    "facematch_ingest_failures_total", "Failed ingest attempts by source and error code", ["source", "code"],
)
INGEST_STAGE = Histogram(
    "facematch_ingest_stage_seconds", "Time one photo spends in each stage (fetch, decode, detect_embed, store)",
    ["stage"], buckets=LATENCY_BUCKETS,
)
STORAGE_ERRORS = Counter(
    "facematch_store_errors_total", "Storage faults answered (507 storage_full / 503 storage_unavailable)",
    ["code", "reason"],
)
WORKER_IN_FLIGHT = Gauge(
    "facematch_worker_photos_in_flight", "Photos claimed and being processed by the photo worker",
    multiprocess_mode="livesum",
)
WORKER_LAST_POLL = Gauge(
    "facematch_worker_last_poll_timestamp_seconds", "When the photo worker last finished listing photos",
    multiprocess_mode="max",
)

_INGEST_ENDPOINTS = {"v1.ingest": "v1", "v2.ingest": "v2"}


def count_storage_error(code: str, reason: str) -> None:
    STORAGE_ERRORS.labels(code, reason).inc()


def observe_photo(outcome: PhotoOutcome, source: str) -> None:
    """Count one photo handled by the CLI or the worker."""
    INGEST_PHOTOS.labels(source, outcome.status).inc()
    if outcome.faces and outcome.reason != "reused":
        INGEST_FACES.labels(source).inc(outcome.faces)
    if outcome.status in ("failed", "retry") and outcome.code:
        INGEST_FAILURES.labels(source, outcome.code).inc()
    for stage, seconds in outcome.timings.items():
        INGEST_STAGE.labels(stage).observe(seconds)


class ServiceCollector(Collector):
    """Scrape-time gauges: engine readiness and index sizes from the shared store."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def collect(self) -> Iterator[GaugeMetricFamily]:
        ready = GaugeMetricFamily("facematch_engine_ready", "1 when the space's engine is loaded and usable",
                                  labels=["space", "model"])
        engines = self.services.engines
        for space in ("v1", "v2"):
            status = engines.status(space)
            ready.add_metric([space, status.model or ""], 1.0 if status.ready else 0.0)
        yield ready
        free = self.services.storage_status()["free_bytes"]
        if free is not None:
            fam = GaugeMetricFamily("facematch_store_free_bytes", "Free bytes of the data directory's file system")
            fam.add_metric([], float(free))
            yield fam
        try:
            totals = index_totals(self.services)
        except Exception:  # a store problem must not break the scrape
            log.warning("index sizes unavailable", exc_info=True)
            return
        for name, help_text in (("events", "Events with an index"), ("photos", "Indexed photos"),
                                ("faces", "Indexed faces")):
            fam = GaugeMetricFamily(f"facematch_index_{name}", f"{help_text}, by space", labels=["space"])
            for space, values in sorted(totals.items()):
                fam.add_metric([space], float(values[name]))
            yield fam


def index_totals(services: Services) -> dict[str, dict[str, int]]:
    return services.store.totals()


def render(services: Services | None = None) -> bytes:
    """The exposition text: every process's metrics (multiprocess) or this one's, plus
    the scrape-time service gauges."""
    path = multiprocess_dir()
    if path:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=path)
        if services is not None:
            registry.register(ServiceCollector(services))
        return generate_latest(registry)
    out = generate_latest(REGISTRY)
    if services is not None:
        extra = CollectorRegistry()
        extra.register(ServiceCollector(services))
        out += generate_latest(extra)
    return out


def init_app(app: Flask) -> None:
    """Time and count every request, and serve ``GET /metrics``."""
    from flask import Response, g, request

    @app.before_request
    def _start_timer() -> None:
        g.metrics_start = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        try:
            _observe_request(request, response, g.get("metrics_start"))
        except Exception:  # metrics must never break a response
            log.warning("request metrics failed", exc_info=True)
        return response

    def metrics_view() -> Response:
        return Response(render(app.extensions["facematch"]), mimetype=CONTENT_TYPE_LATEST)

    app.add_url_rule("/metrics", "metrics", metrics_view, methods=["GET"])


def _observe_request(request: Any, response: Any, started: float | None) -> None:
    rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
    HTTP_REQUESTS.labels(rule, request.method, str(response.status_code)).inc()
    if started is None:
        return
    elapsed = time.perf_counter() - started
    HTTP_LATENCY.labels(rule, request.method).observe(elapsed)
    endpoint = request.endpoint or ""
    if endpoint in ("v1.match", "v2.match"):
        MATCH_LATENCY.labels(endpoint[:2]).observe(elapsed)
    elif endpoint in _INGEST_ENDPOINTS:
        _observe_api_ingest(response)


def _observe_api_ingest(response: Any) -> None:
    body = response.get_json(silent=True) if response.is_json else None
    body = body if isinstance(body, dict) else {}
    if response.status_code == 200:
        faces = int(body.get("faces_indexed") or 0)
        INGEST_PHOTOS.labels("api", "done" if faces else "no_face").inc()
        if faces:
            INGEST_FACES.labels("api").inc(faces)
    else:
        code = (body.get("error") or {}).get("code") or str(response.status_code)
        INGEST_PHOTOS.labels("api", "failed").inc()
        INGEST_FAILURES.labels("api", str(code)).inc()


def serve_worker_metrics(port: int, addr: str = "127.0.0.1") -> None:
    """Expose this (non-gunicorn) process's metrics on ``http://addr:port/metrics``."""
    from prometheus_client import start_http_server

    registry = CollectorRegistry()
    path = multiprocess_dir()
    if path:
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry, path=path)
    else:
        registry = REGISTRY
    start_http_server(port, addr=addr, registry=registry)
    log.info("metrics on http://%s:%d/metrics", addr, port)
