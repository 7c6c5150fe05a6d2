"""Prometheus metrics of the HTTP API (request counts and latencies by route template, not raw path).

`/metrics` is open unless `AIOT_METRICS_TOKEN` is set; then a scraper must send `Authorization: Bearer <it>`
(Prometheus: `authorization: {credentials: ...}` in the scrape config), and anyone else gets 401.
"""

from __future__ import annotations

import hmac
import time

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from sqlalchemy import select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aiot.api.state import service_context
from aiot.errors import Unauthorized

REQUESTS = Counter("aiot_http_requests_total", "HTTP requests handled", ["method", "route", "status"])
LATENCY = Histogram("aiot_http_request_seconds", "HTTP request latency", ["method", "route"])
NODES = Gauge(
    "aiot_nodes", "Nodes by status and whether their workloads run sandboxed (bubblewrap)", ["status", "sandboxed"]
)


def _count_nodes(request: Request) -> None:
    """Refresh NODES from the database at scrape time: an unsandboxed node is something to alert on."""
    from aiot.store.runtime import Node

    counts: dict[tuple[str, str], int] = {}
    with service_context(request).db.session() as session:
        for node in session.scalars(select(Node)):
            sandboxed = (node.load or {}).get("sandboxed")
            key = (node.status.value, "unknown" if sandboxed is None else str(bool(sandboxed)).lower())
            counts[key] = counts.get(key, 0) + 1
    NODES.clear()
    for (status, sandboxed), count in counts.items():
        NODES.labels(status, sandboxed).set(count)


class MeasureRequests:
    """Counts and times each HTTP request by route template. Plain ASGI, not `@app.middleware("http")`: that
    wrapper runs every request through an extra task and stream copy, which cost the model gateway's hot path more
    than the gateway itself (bench/gateway.py)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_measured(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_measured)
        finally:
            template = getattr(scope.get("route"), "path", "unmatched")
            LATENCY.labels(scope["method"], template).observe(time.perf_counter() - started)
            REQUESTS.labels(scope["method"], template, str(status)).inc()


def install_metrics(app: FastAPI) -> None:
    app.add_middleware(MeasureRequests)

    @app.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        token = service_context(request).settings.metrics_token
        if token is not None:
            scheme, _, sent = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                sent.strip().encode(), token.get_secret_value().encode()
            ):
                raise Unauthorized("/metrics needs 'Authorization: Bearer <AIOT_METRICS_TOKEN>'")
        _count_nodes(request)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
