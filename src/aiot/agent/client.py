"""The agent's HTTP client for the control plane's agent API (`aiot.api.routes.agent`).

Every failure is mapped to one of three exceptions the reconcile loop understands: `NodeUnauthorized` (the node
token is unknown: join again), `NodeNameTaken` (409 on registration: another node has this name; an admin must
act) and `ControlPlaneUnavailable` (anything else: keep running, retry later).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import httpx

API = "/api/v1/agent"


class ControlPlaneUnavailable(ConnectionError):
    """The control plane did not answer usefully (down, slow, 5xx, unexpected body)."""


class NodeUnauthorized(PermissionError):
    """401: the token was refused (node removed or revoked, or a join token used up or expired)."""


class NodeNameTaken(PermissionError):
    """409 on registration: a node with this name is registered (names are never taken over)."""


class ControlPlaneClient:
    """Thin async wrapper over the four agent endpoints; one instance per agent."""

    def __init__(
        self, server: str, *, timeout: float = 10.0, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.server = server.rstrip("/")
        self.token: str | None = None
        self._http = httpx.AsyncClient(
            base_url=self.server,
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
        )

    async def close(self) -> None:
        await self._http.aclose()

    def _headers(self, token: str | None = None) -> dict[str, str]:
        token = token or self.token
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def _call(self, method: str, path: str, *, token: str | None = None, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, API + path, headers=self._headers(token), **kwargs)
        except httpx.HTTPError as exc:
            raise ControlPlaneUnavailable(f"{method} {self.server}{API}{path}: {type(exc).__name__} {exc}") from exc
        return self._check(method, path, response).json()

    def _check(self, method: str, path: str, response: httpx.Response) -> httpx.Response:
        if response.status_code == 401:
            raise NodeUnauthorized(f"{method} {API}{path}: 401 {response.text[:300]}")
        if response.status_code == 409 and path == "/register":
            raise NodeNameTaken(f"{method} {API}{path}: 409 {response.text[:300]}")
        if response.status_code >= 400:
            raise ControlPlaneUnavailable(f"{method} {API}{path}: HTTP {response.status_code} {response.text[:300]}")
        return response

    async def register(self, join_token: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._call("POST", "/register", token=join_token, json=body)  # type: ignore[no-any-return]

    async def assignments(self) -> list[dict[str, Any]]:
        data = await self._call("GET", "/assignments")
        if not isinstance(data, dict) or not isinstance(data.get("assignments"), list):
            raise ControlPlaneUnavailable("GET /assignments: body has no 'assignments' list")
        return data["assignments"]  # type: ignore[no-any-return]

    async def report(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._call("POST", "/report", json=body)  # type: ignore[no-any-return]

    async def download_package(self, sha256: str, dest: Path) -> Path:
        """Stream the archive to `dest` (atomically), verifying its sha256; a cached file is reused."""
        if dest.exists():
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{sha256[:16]}-", suffix=".part", dir=dest.parent)
        tmp = Path(tmp_name)
        digest = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out:
                try:
                    async with self._http.stream("GET", f"{API}/packages/{sha256}", headers=self._headers()) as resp:
                        if resp.status_code >= 400:
                            await resp.aread()
                        self._check("GET", f"/packages/{sha256[:12]}…", resp)
                        async for chunk in resp.aiter_bytes():
                            digest.update(chunk)
                            out.write(chunk)
                except httpx.HTTPError as exc:
                    raise ControlPlaneUnavailable(f"download of package {sha256[:12]}…: {exc}") from exc
            if digest.hexdigest() != sha256:
                raise ControlPlaneUnavailable(
                    f"package {sha256[:12]}… downloaded with sha256 "
                    f"{digest.hexdigest()[:12]}…: corrupted in transit; will retry"
                )
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest
