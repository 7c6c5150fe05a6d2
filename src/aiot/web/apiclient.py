"""The web pages talk to the platform through its own REST API, in process.

Why not call the service functions directly: the API already holds every rule (roles, validation, who owns
what) and one error shape (`{"error": {"code", "message", "details"}}`). Going through it means a page can never
allow what the API forbids, a form shows exactly the errors the CLI would, and a route that is not there yet
(a capability still being built) is a clean 404 the page can degrade on. The call stays inside the process
(httpx's ASGI transport on the same event loop), authenticated with the browser's session token as a bearer
token; the page itself has already checked the CSRF token of the form.
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI

API_PREFIX = "/api/v1"


@dataclass
class ApiError(Exception):
    """An API answer that was not 2xx, with the API's error body taken apart."""

    status: int
    code: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message

    @property
    def missing_route(self) -> bool:
        """True when the route itself does not exist (a capability not installed), not a missing thing."""
        return (
            self.status in (404, 405)
            and self.code in ("not_found", "method_not_allowed")
            and not self.details
            and self.message in ("Not Found", "Method Not Allowed", "not found", "method not allowed")
        )


def _client(app: FastAPI) -> httpx.AsyncClient:
    client = getattr(app.state, "web_api_client", None)
    if client is None:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        client = httpx.AsyncClient(transport=transport, base_url="http://aiot.internal", timeout=60)
        app.state.web_api_client = client
    return client


def error_from(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
        err = body.get("error") or {}
        return ApiError(
            response.status_code,
            err.get("code", "error"),
            err.get("message", response.reason_phrase),
            err.get("details") or {},
        )
    except (ValueError, AttributeError):
        return ApiError(response.status_code, "error", response.text[:300] or response.reason_phrase)


class Api:
    """One page request's view of the REST API, as the logged-in user."""

    def __init__(self, app: FastAPI, token: str | None, client: Any = None) -> None:
        """`client`: the visitor's (host, port), for calls whose rules depend on it (login throttling); the
        shared in-process client otherwise."""
        self.app = app
        self.token = token
        self.client = client

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        content: bytes | AsyncIterable[bytes] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        params = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        if self.client is not None:
            transport = httpx.ASGITransport(
                app=self.app, raise_app_exceptions=False, client=(self.client[0], self.client[1])
            )
            async with httpx.AsyncClient(transport=transport, base_url="http://aiot.internal", timeout=60) as one:
                response = await one.request(
                    method, API_PREFIX + path, json=json, params=params, content=content, headers=self._headers(headers)
                )
        else:
            response = await _client(self.app).request(
                method, API_PREFIX + path, json=json, params=params, content=content, headers=self._headers(headers)
            )
        if response.status_code >= 400:
            raise error_from(response)
        return response

    async def send(self, method: str, path: str, *, content: bytes, headers: dict[str, str]) -> httpx.Response:
        """A request whose error answers the caller reads itself (e.g. a model's 422 naming the field)."""
        return await _client(self.app).request(
            method, API_PREFIX + path, content=content, headers=self._headers(headers)
        )

    async def get(self, path: str, **params: Any) -> Any:
        return (await self.request("GET", path, params=params)).json()

    async def post(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        response = await self.request("POST", path, json=json, **kwargs)
        return response.json() if response.content else None

    async def patch(self, path: str, json: Any) -> Any:
        return (await self.request("PATCH", path, json=json)).json()

    async def delete(self, path: str) -> None:
        await self.request("DELETE", path)

    async def get_or(self, default: Any, path: str, **params: Any) -> Any:
        """GET, or `default` when the route is missing or refuses this user (a page part that may be absent)."""
        try:
            return await self.get(path, **params)
        except ApiError as exc:
            if exc.status in (403, 404, 405, 503):
                return default
            raise
