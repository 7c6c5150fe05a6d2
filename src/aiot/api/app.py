"""The control plane's REST API as a FastAPI application: /api/v1, the model gateway, docs, health and metrics.

The web UI is mounted on the same application one floor up (`aiot.launch.http_app`), so the API never imports
the pages that call it.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from aiot import __version__
from aiot.api import gateway, legacy_predict, model_gateway
from aiot.api.bodylimit import BodyLimit
from aiot.api.errors import install_error_handlers
from aiot.api.headers import SecurityHeaders
from aiot.api.metrics import install_metrics
from aiot.api.routes import (
    agent,
    auth,
    devices,
    instances,
    legacy,
    logs,
    nodes,
    outbox,
    packages,
    rollouts,
    schedules,
    system,
    users,
    workloads,
)
from aiot.services.contract import ServiceContext

API_PREFIX = "/api/v1"
# Every router mounted under /api/v1. Tests walk this list (and cross-check the OpenAPI document) to prove each
# route declares its audience; a capability adds its router here, one line.
API_ROUTERS = (
    agent.router,  # first: every node polls and reports every 2 s, and routes are matched in order
    auth.router,
    users.router,
    system.router,
    packages.router,
    devices.router,
    nodes.router,
    workloads.router,
    rollouts.router,
    instances.router,
    schedules.router,
    outbox.router,
    logs.router,
    legacy.router,
)


def create_api(ctx: ServiceContext) -> FastAPI:
    """Build the app around a service context (database, bus, settings). Routers of later capabilities are
    added to `api_router` here, one line each."""
    app = FastAPI(title="AIoT platform", version=__version__, docs_url="/docs", openapi_url="/openapi.json")
    app.state.ctx = ctx
    install_error_handlers(app)
    install_metrics(app)
    # First: routes are matched in order, one regex each, and the model gateway is the hot path (over a hundred
    # routes in front of it cost ~0.4 ms a request; its paths overlap no other route).
    app.include_router(model_gateway.router)  # stable model URLs: /models/<owner>/<name>/v1/..., OIP /v2/...
    api_router = APIRouter(prefix=API_PREFIX)
    for router in API_ROUTERS:
        api_router.include_router(router)
    app.include_router(api_router)
    app.include_router(system.health_router)
    app.include_router(gateway.router)
    app.include_router(legacy_predict.router)  # the original platform's POST /predict/<model>
    app.add_middleware(BodyLimit)  # JSON/form bodies are read whole: cap them (uploads stream, own cap)
    app.add_middleware(SecurityHeaders)  # CSP, X-Frame-Options, nosniff, Referrer-Policy on every answer
    return app
