"""Who may call a workload's port: only callers holding the token the platform issued for it.

Why: a model replica's `/v1/predict` and an app's web port listen on the node's address, where any process
that can reach the node could call them and skip the control plane's owner checks. The platform derives one
token per model (given to its replicas as `serve.token` and to every app bound to the model as
`models.<alias>.token`) and one per web-app instance (given to the app as `serve.token` and added by the app
gateway to every request it forwards). Tokens are compared in constant time; `/healthz` stays open for the
node agent's probe and never runs the model.

The names here are a copy of `aiot.deployer.endpoint_tokens`' (the SDK may not import `aiot`); a test checks
that they agree.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

MODEL_TOKEN_HEADER = "authorization"
"""Model calls carry `Authorization: Bearer <model token>`."""
GATEWAY_TOKEN_HEADER = "x-aiot-gateway-token"
"""Requests the app gateway forwards carry `X-AIOT-Gateway-Token: <instance token>`."""
OPEN_PATHS = frozenset({"/healthz"})
"""Paths answered without a token: the agent's readiness probe (it never runs the model)."""

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def bearer(token: str) -> str:
    """The `Authorization` value a model call sends."""
    return f"Bearer {token}"


def token_matches(given: bytes | str | None, expected: bytes) -> bool:
    """Constant-time comparison (a timing difference must not reveal how much of a guess was right)."""
    if given is None:
        return False
    if isinstance(given, str):
        given = given.encode("latin-1", "replace")
    return hmac.compare_digest(given, expected)


class TokenGuard:
    """ASGI middleware: every HTTP request except `open_paths` must carry `header` = `expected` (else 401).

    Raw ASGI, not a Starlette middleware class: the check is one scan of the header list and one
    `compare_digest`, measured in bench/serving.py (the serving hot path must stay fast)."""

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        *,
        header: str,
        expected: str,
        open_paths: Iterable[str] = OPEN_PATHS,
    ) -> None:
        self.app = app
        self.header = header.lower().encode("latin-1")
        self.expected = expected.encode("latin-1")
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        given = None
        for name, value in scope["headers"]:
            if name == self.header:
                given = value
                break
        if token_matches(given, self.expected):
            await self.app(scope, receive, send)
            return
        body = b'{"error":"this endpoint needs the token the platform issued for it","field":"' + self.header + b'"}'
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b"Bearer"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
