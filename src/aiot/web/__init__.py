"""The platform's web UI: server-rendered pages for the four roles (FastAPI + Jinja2, htmx for live parts).

Mount it with `install(app)` (or `app.include_router(router)` and `mount_static(app)`). Pages call the REST API
in process (see `apiclient`), so they follow exactly its rules and errors.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles

from aiot.web.pages import admin, auth, catalog, deployments, health, legacy, logs, models, store
from aiot.web.routing import WebRoute

STATIC_DIR = Path(__file__).parent / "static"

router = APIRouter(route_class=WebRoute, include_in_schema=False)
for _module in (auth, health, admin, models, catalog, store, deployments, logs, legacy):
    router.include_router(_module.router)


def mount_static(app: FastAPI) -> None:
    """Serve the vendored htmx, the stylesheet and icons at /static (nothing is fetched from the internet)."""
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


def install(app: FastAPI) -> None:
    """Add the pages and their static files to the control plane's app."""
    app.include_router(router)
    mount_static(app)


__all__ = ["STATIC_DIR", "install", "mount_static", "router"]
