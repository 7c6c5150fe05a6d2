"""Security headers on every platform response (pages, API, errors, static files).

The web UI loads only its own files: `/static/htmx.min.js` and `/static/app.js` (no inline script, no eval: htmx
is configured by a meta tag and `hx-headers` JSON), `/static/app.css`, plus `style="..."` attributes in a few
templates (meters, spacing), hence `style-src-attr 'unsafe-inline'` but no inline <style> element or script.
The API docs (`/docs`, `/redoc`) are FastAPI's Swagger/ReDoc pages, which load from cdn.jsdelivr.net with one
inline script: they get a looser policy of their own (they show no user data; the API still needs a token).
Framing is refused (`frame-ancestors 'none'` and `X-Frame-Options: DENY`), so no app page can overlay one.
"""

from __future__ import annotations

from aiot.api.bodylimit import ASGIApp, Message, Receive, Scope, Send

PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; style-src-elem 'self'; "
    "style-src-attr 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; font-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; img-src 'self' data: https:; "
    "worker-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
DOCS_PATHS = ("/docs", "/redoc")
COMMON = (
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
)


class SecurityHeaders:
    """Pure ASGI middleware (streams pass through untouched): adds CSP and friends unless already set."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        csp = DOCS_CSP if path.startswith(DOCS_PATHS) else PAGE_CSP
        extra = ((b"content-security-policy", csp.encode()), *COMMON)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                present = {name.lower() for name, _ in headers}
                headers.extend((name, value) for name, value in extra if name not in present)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
