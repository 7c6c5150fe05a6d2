"""A cap on request bodies that are read whole (JSON and form requests), as plain ASGI middleware.

Why: FastAPI reads a JSON body into memory before any validation, so without a cap one anonymous request to
`/api/v1/auth/login` could make the control plane buffer gigabytes. Package uploads (`POST /api/v1/models`,
`POST /api/v1/apps`) stream to disk with their own `AIOT_MAX_UPLOAD_MB` cap, multipart forms are spooled to disk
by Starlette, so those are left alone here (web apps' requests stream on the apps origin, another listener).

A declared `Content-Length` over the cap is refused at once, unread; a chunked body (no length) is read up to
the cap and replayed to the app, or refused when it goes past it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY_BYTES = 2 * 1024 * 1024
STREAMED = {("POST", "/api/v1/models"), ("POST", "/api/v1/apps")}


def _exempt(scope: Scope) -> bool:
    if (scope["method"], scope["path"].rstrip("/")) in STREAMED:
        return True
    headers = dict(scope.get("headers") or [])
    return headers.get(b"content-type", b"").lower().startswith(b"multipart/form-data")


async def _refuse(send: Send, limit: int) -> None:
    body = json.dumps(
        {
            "error": {
                "code": "payload_too_large",
                "message": f"request body is larger than the {limit // (1024 * 1024)} MiB limit "
                "for API requests (packages go to the upload routes)",
                "details": {"field": "body", "limit_bytes": limit},
            }
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS") or _exempt(scope):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.limit
            except ValueError:
                too_big = False  # the server rejects a malformed length itself
            if too_big:
                await _refuse(send, self.limit)
                return
            await self.app(scope, receive, send)  # the server never delivers more than the declared length
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message]), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await _refuse(send, self.limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(
            scope, _replay([{"type": "http.request", "body": b"".join(chunks), "more_body": False}], receive), send
        )


def _replay(messages: list[Message], then: Receive | None = None) -> Receive:
    """A receive callable that hands out `messages` first, then defers to `then` (e.g. for disconnects)."""
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive
