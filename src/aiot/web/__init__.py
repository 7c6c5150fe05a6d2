"""The platform's web UI: server-rendered pages for the four roles (FastAPI + Jinja2, htmx for live parts).

Mount it with `install(app)` (or `app.include_router(router)` and `mount_static(app)`). Pages call the REST API
in process (see `apiclient`), so they follow exactly its rules and errors.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from aiot.web.pages import admin, auth, catalog, deployments, devices, health, legacy, logs, models, outbox, store
from aiot.web.render import error_page
from aiot.web.routing import WebRoute

STATIC_DIR = Path(__file__).parent / "static"

router = APIRouter(route_class=WebRoute, include_in_schema=False)
for _module in (auth, health, outbox, admin, models, catalog, store, deployments, devices, logs, legacy):
    router.include_router(_module.router)


def mount_static(app: FastAPI) -> None:
    """Serve the vendored htmx, the stylesheet and icons at /static (nothing is fetched from the internet)."""
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


API_PATHS = ("/api/", "/v2/", "/models/", "/predict/", "/apps/", "/healthz", "/metrics", "/docs", "/openapi.json")
"""Paths whose callers are programs: their errors stay JSON."""


def install(app: FastAPI) -> None:
    """Add the pages and their static files to the control plane's app, and HTML error pages for browsers."""
    app.include_router(router)
    mount_static(app)
    json_error = app.exception_handlers.get(StarletteHTTPException)

    async def page_or_json(request: Request, exc: Exception) -> Response:
        """A browser asking for a page that does not exist gets a page saying so (with the way home), not the
        API's JSON; programs (API paths, or no `text/html` in Accept) keep the JSON error."""
        assert isinstance(exc, StarletteHTTPException)
        wants_page = "text/html" in request.headers.get("accept", "") and not request.url.path.startswith(API_PATHS)
        if wants_page and exc.status_code in (404, 405):
            title = "Page not found" if exc.status_code == 404 else "Not allowed here"
            message = (
                f"There is no page at {request.url.path}."
                if exc.status_code == 404
                else f"{request.method} is not possible on {request.url.path}."
            )
            return error_page(request, exc.status_code, title, message)
        if json_error is None:
            raise exc
        result = json_error(request, exc)
        return await result if inspect.isawaitable(result) else result

    app.add_exception_handler(StarletteHTTPException, page_or_json)


__all__ = ["STATIC_DIR", "install", "mount_static", "router"]
