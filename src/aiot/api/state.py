"""The one place that reads the service context off the application (set by `create_api`/`create_apps_app`).

Routes take it as a dependency (`aiot.api.deps.Ctx`); helpers that are handed the request (authentication,
metrics, uploads, the pages' session) call `service_context`, so no module reaches into `app.state` itself.
"""

from __future__ import annotations

from typing import cast

from fastapi import FastAPI, Request

from aiot.services.contract import ServiceContext


def app_context(app: FastAPI) -> ServiceContext:
    """The context the application was built around."""
    return cast(ServiceContext, app.state.ctx)


def service_context(request: Request) -> ServiceContext:
    """The context of the process serving this request."""
    return app_context(request.app)
