"""`WebRoute`: page routes answer with HTML even when something goes wrong.

The application's error handlers answer JSON (right for the API). A page must instead send the visitor to the
login form, or show a readable error page; this route class catches those cases around each page handler
(dependencies included), so every page gets the behaviour without repeating it.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import Response
from fastapi.routing import APIRoute

from aiot.errors import PlatformError
from aiot.web.apiclient import ApiError
from aiot.web.render import error_page, redirect
from aiot.web.session import LoginRequired

log = logging.getLogger(__name__)

TITLES = {401: "Please log in", 403: "Not allowed", 404: "Not found", 409: "Conflict", 503: "Unavailable"}


def _login_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    url = f"/login?next={quote(target)}"
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": url})
    return redirect(url)


class WebRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginRequired:
                return _login_redirect(request)
            except ApiError as exc:
                if exc.status == 401:
                    return _login_redirect(request)
                return error_page(request, exc.status, TITLES.get(exc.status, "Error"), exc.message)
            except PlatformError as exc:
                if exc.status_code == 401:
                    return _login_redirect(request)
                return error_page(request, exc.status_code, TITLES.get(exc.status_code, "Error"), exc.message)
            except Exception:
                # A bug of ours: the visitor gets a page that says so and a reference to quote, never the
                # exception text or a traceback (it may name paths, queries or other tenants' data).
                reference = secrets.token_hex(4)
                log.exception("page %s failed (reference %s)", request.url.path, reference)
                return error_page(
                    request,
                    500,
                    "Something went wrong",
                    f"This page could not be shown. The error was logged with reference {reference}; "
                    "try again in a moment, or give the reference to your administrator.",
                )

        return page_handler
