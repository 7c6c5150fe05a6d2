"""Prometheus metrics of the HTTP API (request counts and latencies by route template, not raw path)."""

from __future__ import annotations

import time

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

REQUESTS = Counter("aiot_http_requests_total", "HTTP requests handled", ["method", "route", "status"])
LATENCY = Histogram("aiot_http_request_seconds", "HTTP request latency", ["method", "route"])


def install_metrics(app: FastAPI) -> None:
    @app.middleware("http")
    async def _measure(request: Request, call_next):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        LATENCY.labels(request.method, template).observe(time.perf_counter() - started)
        REQUESTS.labels(request.method, template, str(response.status_code)).inc()
        return response

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
