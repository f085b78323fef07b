"""Prometheus metrics of a server (GET /metrics): requests and their latency by route, refusals, uploads refused,
clients rate-limited, and the catalog's size. One registry per app, so that apps side by side in one process (the
tests) count apart."""
from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.responses import Response

# Seconds: a cached text query answers in milliseconds, an upload's image check in about a second.
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNMATCHED = "unmatched"  # the route label of a request that matched no route (a 404): never the raw path


class ServerMetrics:
    def __init__(self, catalog_size=None):
        """`catalog_size`: a callable giving (searchable photos, photos kept out), read at each scrape."""
        self.registry = registry = CollectorRegistry()
        self.requests = Counter("wsense_requests", "HTTP requests answered, by route template, method and status",
                                ["route", "method", "status"], registry=registry)
        self.latency = Histogram("wsense_request_seconds", "Time to answer a request, by route template",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=registry)
        self.refusals = Counter("wsense_refusals", "Searches refused by the legal filter: a child query, or an "
                                "uploaded photo the image check keeps out", ["kind"], registry=registry)
        self.uploads_refused = Counter("wsense_uploads_refused", "Uploads refused before they are looked at, by "
                                       "HTTP status (413 too large, 415 not a photo type, 503 busy, 400 unreadable)",
                                       ["status"], registry=registry)
        self.rate_limited = Counter("wsense_rate_limited", "Requests refused by the per-client rate limit",
                                    registry=registry)
        if catalog_size is not None:
            photos = Gauge("wsense_catalog_photos", "Photos in the catalog, by state", ["state"], registry=registry)
            photos.labels("searchable").set_function(lambda: catalog_size()[0])
            photos.labels("kept_out").set_function(lambda: catalog_size()[1])

    def refused(self, kind: str) -> None:
        self.refusals.labels(kind).inc()

    def upload_refused(self, status: int) -> None:
        self.uploads_refused.labels(str(status)).inc()

    def exposition(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class RequestMetrics:
    """ASGI middleware: counts each HTTP request and times it to its last byte, labelled by the route's template
    (/images/{path:path}, not the photo's name)."""

    def __init__(self, app, metrics: ServerMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or UNMATCHED
            self.metrics.requests.labels(label, scope["method"], str(status[0])).inc()
            self.metrics.latency.labels(label).observe(time.perf_counter() - start)
