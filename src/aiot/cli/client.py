"""HTTP client of the CLI: turns every failure into one friendly line instead of a traceback."""

from __future__ import annotations

from typing import Any

import httpx

from aiot.cli import credentials


class CliError(Exception):
    """A failure to show the person as one line (the CLI exits with status 1)."""


class ApiClient:
    def __init__(self, server: str | None = None, token: str | None = None, timeout: float = 30.0) -> None:
        creds = credentials.load()
        self.server = (server or creds.server).rstrip("/")
        self.token = token if token is not None else (creds.token if server in (None, creds.server) else None)
        if not self.server.startswith(("http://", "https://")):
            raise CliError(f"bad server URL {self.server!r}: expected http://host:port or https://host")
        self.timeout = timeout

    def request(self, method: str, path: str, *, auth: bool = True, raw: bool = False, **kwargs: Any) -> Any:
        headers = dict(kwargs.pop("headers", {}) or {})
        if auth:
            if not self.token:
                raise CliError(f"not logged in to {self.server}: run `aiot login` first")
            headers["Authorization"] = f"Bearer {self.token}"
        url = f"{self.server}/api/v1{path}" if path.startswith("/") else path
        try:
            response = httpx.request(method, url, headers=headers, timeout=self.timeout, **kwargs)
        except httpx.ConnectError as exc:
            raise CliError(f"cannot reach the control plane at {self.server} ({exc}); is `aiot up` running?") from exc
        except httpx.TimeoutException as exc:
            raise CliError(f"the control plane at {self.server} did not answer in {self.timeout:.0f} s") from exc
        except httpx.HTTPError as exc:
            raise CliError(f"request to {self.server} failed: {exc}") from exc
        if response.status_code >= 400:
            raise CliError(_describe_error(response))
        if raw:
            return response.content
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise CliError(f"{self.server} did not answer with JSON; is it an AIoT control plane?") from exc

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> Any:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", path, **kwargs)


def _describe_error(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:200]}"
    message = f"{error.get('message', 'error')} (HTTP {response.status_code})"
    details = error.get("details") or {}
    for problem in details.get("problems", [])[:20]:
        where = " ".join(str(problem.get(k)) for k in ("file", "field") if problem.get(k))
        message += f"\n  - {where + ': ' if where else ''}{problem.get('message', '')}"
    if response.status_code == 401:
        message += "\n  run `aiot login` to log in again"
    return message
