"""The control plane's HTTP application: the REST API with the web UI mounted on it.

Composed here, above both, because the pages call the API in process and the API must not import the pages.
"""

from __future__ import annotations

from fastapi import FastAPI

from aiot.api.app import create_api
from aiot.services.contract import ServiceContext
from aiot.web import install as install_web


def create_app(ctx: ServiceContext) -> FastAPI:
    """The API (routes, middleware, error handlers) plus the server-rendered pages for the four roles and
    /static; page routes come after the API's, so an API path is never shadowed by a page."""
    app = create_api(ctx)
    install_web(app)
    return app
