"""The agent's own small HTTP port: `GET /healthz` (JSON) and `GET /metrics` (Prometheus text).

A raw asyncio server rather than uvicorn: uvicorn's `Server.serve()` installs its own SIGINT/SIGTERM handlers,
which would fight the agent's; two read-only endpoints need no framework.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class AgentHttpServer:
    def __init__(
        self,
        health: Callable[[], dict[str, Any]],
        metrics: Callable[[], bytes],
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.health, self.metrics = health, metrics
        self.host, self.port = host, port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass  # headers are not needed
            parts = request.decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) >= 2 else ""
            if len(parts) < 2 or parts[0] not in ("GET", "HEAD"):
                status, ctype, body = "405 Method Not Allowed", "text/plain", b"only GET\n"
            elif path == "/healthz":
                status, ctype, body = "200 OK", "application/json", json.dumps(self.health()).encode()
            elif path == "/metrics":
                status, ctype, body = "200 OK", "text/plain; version=0.0.4; charset=utf-8", self.metrics()
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"not found: try /healthz or /metrics\n"
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            ).encode()
            writer.write(head + (body if parts[:1] != ["HEAD"] else b""))
            await writer.drain()
        except (TimeoutError, ConnectionError, OSError):
            pass
        except Exception:  # noqa: BLE001 - one bad request must not take the port down
            log.exception("agent http request failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
