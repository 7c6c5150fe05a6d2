"""The apps origin: web apps' pages, served by their own listener on a host other than the platform's.

Why another host: an app's HTML and JavaScript are written by an app developer and shown to end users and
admins. On the platform's origin that script could read the platform's script-readable cookies and act as the
viewer through the API. Here it cannot: browsers scope cookies by host (ports are ignored, hence another HOST,
e.g. `localhost` when the platform is at 127.0.0.1), the platform's pages refuse framing, and the CSRF token
of the platform is derived from the session, never in a cookie.

How a viewer gets in: the platform's `/apps/<instance>/` (see `gateway`) checks the session and redirects here to
`/_aiot/enter?ticket=...`; the ticket is signed, lives 60 s, is good for one instance and is used once (this
process remembers used ones). It is exchanged for this origin's own HttpOnly cookie `aiot_app`, scoped to
`/<instance>/`, which names the platform token it came from: logging out of the platform (or the token expiring,
the account being disabled, the instance changing owner) ends it too. The platform session never reaches here.

The proxy streams `/<instance>/<path>` to the instance's workload with `X-Forwarded-Prefix: /<instance>` (apps
build links from it, or use relative ones). Cookies, `Authorization` and hop-by-hop headers are not forwarded,
and the app's `Set-Cookie`, auth challenges and hop-by-hop headers never reach the browser.

Apps share this one origin in the default set-up (no DNS needed), so one app's script can reach another app's
pages the same viewer has opened; each app is still kept away from the platform. For one host per instance, put
`{instance}` in `AIOT_APPS_URL` (e.g. `https://{instance}.apps.example.com`, with a wildcard DNS name and
certificate): this listener then serves an instance only on its own host.
"""

from __future__ import annotations

import html
import logging
import threading
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from aiot.api.errors import install_error_handlers
from aiot.api.gateway import ENTER_PATH, INSTANCE_PLACEHOLDER, TICKET_PURPOSE, app_view, instance_host, status_page
from aiot.api.signing import app_secret, sign, unsign
from aiot.api.state import service_context
from aiot.deployer.endpoint_tokens import gateway_headers
from aiot.errors import ServiceUnavailable
from aiot.services.contract import ServiceContext
from aiot.store.models import ApiToken
from aiot.timeutil import utcnow

log = logging.getLogger(__name__)

VIEWER_COOKIE = "aiot_app"
VIEWER_PURPOSE = "app-viewer"
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}
REQUEST_DROP = HOP_BY_HOP | {
    "authorization",
    "cookie",
    "x-csrf-token",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-prefix",
    "x-real-ip",
}
RESPONSE_DROP = HOP_BY_HOP | {
    "set-cookie",
    "set-cookie2",
    "www-authenticate",
    "authentication-info",
    "proxy-authentication-info",
}
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


class UsedTickets:
    """Nonces of tickets already exchanged, kept until they expire (so each ticket works once per process)."""

    def __init__(self) -> None:
        self._used: dict[str, float] = {}
        self._lock = threading.Lock()

    def first_use(self, nonce: str, expires: float) -> bool:
        now = time.time()
        with self._lock:
            if len(self._used) > 1000:
                self._used = {n: e for n, e in self._used.items() if e >= now}
            if nonce in self._used:
                return False
            self._used[nonce] = expires
            return True


def default_apps_url(platform_url: str, port: int) -> str:
    """Another host than the platform's for the same machine: cookies of one are never sent to the other."""
    parts = urlsplit(platform_url)
    host = parts.hostname or "127.0.0.1"
    if host == "localhost":
        other = "127.0.0.1"
    elif host in ("127.0.0.1", "::1", "0.0.0.0", "::"):
        other = "localhost"
    else:
        log.warning(
            "the apps origin shares the platform's host %s (only the port differs): set AIOT_APPS_URL "
            "to a host name of its own so that apps never see the platform's cookies",
            host,
        )
        other = host if ":" not in host else f"[{host}]"
    return f"{parts.scheme or 'http'}://{other}:{port}"


def _connection_listed(headers: Mapping[str, str]) -> set[str]:
    """Headers the sender named in `Connection:` are hop-by-hop too (RFC 9110 7.6.1)."""
    return {token.strip().lower() for token in headers.get("connection", "").split(",") if token.strip()}


def _refuse_page(request: Request, instance_id: str, status: int, message: str) -> HTMLResponse:
    platform = getattr(request.app.state, "platform_url", "")
    link = f"{platform}/apps/{instance_id}/"
    body = (
        f"<!doctype html><title>App</title><h1>{html.escape(message)}</h1>"
        f'<p>Open the app from the platform: <a href="{html.escape(link)}">{html.escape(link)}</a></p>'
    )
    return HTMLResponse(body, status_code=status, headers={"cache-control": "no-store"})


def _on_its_host(request: Request, instance_id: str) -> bool:
    """With one host per instance, an instance is served (and its cookie set) only on its own host."""
    template = getattr(request.app.state, "apps_url", "") or service_context(request).settings.apps_url or ""
    if INSTANCE_PLACEHOLDER not in template:
        return True
    host = request.headers.get("host", "").split(":")[0].lower()
    return host.startswith(instance_host(instance_id) + ".")


def _viewer_user(request: Request, instance_id: str):  # type: ignore[no-untyped-def]
    """The platform user behind this origin's cookie, if it is still valid for this instance; else None."""
    payload = unsign(app_secret(request.app), VIEWER_PURPOSE, request.cookies.get(VIEWER_COOKIE, ""))
    if payload is None or payload.get("i") != instance_id:
        return None
    with service_context(request).db.session() as session:
        record = session.get(ApiToken, str(payload.get("t", "")))
        if record is None or record.revoked_at is not None or record.expires_at <= utcnow() or record.user.disabled:
            return None
        user = record.user
        session.expunge_all()
        return user


def create_apps_app(ctx: ServiceContext) -> FastAPI:
    """The apps origin's application (mounted on its own listener by the API service)."""
    app = FastAPI(title="AIoT apps", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ctx = ctx
    app.state.used_tickets = UsedTickets()
    app.state.http = None
    install_error_handlers(app)

    def http() -> httpx.AsyncClient:
        if app.state.http is None:
            app.state.http = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0), follow_redirects=False)
        return app.state.http

    @app.get(ENTER_PATH)
    def enter(request: Request, ticket: str = "") -> Response:
        """Exchange a ticket from the platform for this origin's cookie of one instance."""
        payload = unsign(app_secret(app), TICKET_PURPOSE, ticket)
        if payload is None or not app.state.used_tickets.first_use(str(payload.get("n")), float(payload["exp"])):
            return _refuse_page(
                request, str((payload or {}).get("i", "")), 403, "This link has expired or was already used"
            )
        instance_id, target = str(payload["i"]), str(payload.get("p", ""))
        if not _on_its_host(request, instance_id):
            return _refuse_page(request, instance_id, 403, "This link is for another app's address")
        if not target.startswith(f"/{instance_id}/"):
            target = f"/{instance_id}/"
        with ctx.db.session() as session:
            record = session.get(ApiToken, str(payload["t"]))
            expires = record.expires_at if record is not None else utcnow()
        lifetime = min((expires - utcnow()).total_seconds(), ctx.settings.session_ttl_hours * 3600)
        if lifetime <= 0:
            return _refuse_page(request, instance_id, 403, "Your platform session has ended")
        cookie = sign(app_secret(app), VIEWER_PURPOSE, {"i": instance_id, "t": payload["t"]}, lifetime)
        out = RedirectResponse(target, status_code=303, headers={"cache-control": "no-store"})
        secure = (getattr(app.state, "apps_url", "") or "").lower().startswith("https://")
        out.set_cookie(
            VIEWER_COOKIE,
            cookie,
            max_age=int(lifetime),
            httponly=True,
            samesite="lax",
            secure=secure or bool(ctx.settings.cookie_secure),
            path=f"/{instance_id}/",
        )
        return out

    @app.get("/{instance_id}")
    def add_slash(instance_id: str) -> RedirectResponse:
        return RedirectResponse(f"/{instance_id}/", status_code=307)

    @app.api_route("/{instance_id}/{path:path}", methods=METHODS)
    async def proxy(request: Request, instance_id: str, path: str) -> Response:
        user = _viewer_user(request, instance_id) if _on_its_host(request, instance_id) else None
        if user is None:
            return _refuse_page(request, instance_id, 401, "Please open this app from the platform")
        with ctx.db.session() as session:
            view = app_view(session, instance_id, user)
        if view.kind != "web":
            return status_page(view)
        if view.endpoint is None:
            raise ServiceUnavailable(
                f"app instance {instance_id} is not running right now ({view.state})", field="instance"
            )
        listed = _connection_listed(request.headers)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in REQUEST_DROP | listed}
        headers["x-forwarded-prefix"] = f"/{instance_id}"
        headers["x-forwarded-host"] = request.headers.get("host", "")
        headers["x-forwarded-proto"] = request.url.scheme
        headers.update(gateway_headers(app_secret(request.app), instance_id))  # the app's port admits only this
        body = request.stream() if request.method in ("POST", "PUT", "PATCH", "DELETE") else None
        upstream_request = http().build_request(
            request.method,
            f"{view.endpoint.rstrip('/')}/{path}",
            params=request.query_params,
            headers=headers,
            content=body,
        )
        try:
            upstream = await http().send(upstream_request, stream=True)
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(
                f"app instance {instance_id} did not answer ({type(exc).__name__})", field="instance"
            ) from exc
        dropped = RESPONSE_DROP | _connection_listed(upstream.headers)
        response_headers = [(k, v) for k, v in upstream.headers.multi_items() if k.lower() not in dropped]
        response = StreamingResponse(
            upstream.aiter_raw(), status_code=upstream.status_code, background=BackgroundTask(upstream.aclose)
        )
        for key, value in response_headers:
            response.headers.append(key, value)
        response.headers["x-content-type-options"] = "nosniff"
        response.headers.setdefault("referrer-policy", "same-origin")
        return response

    return app
