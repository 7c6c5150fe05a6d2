"""The HTTP API as a platform service: uvicorn serving the FastAPI app inside the process's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import uvicorn

from aiot.api.app import create_app
from aiot.errors import ServiceUnavailable
from aiot.services.base import HealthState, PlatformService, ServiceHealth
from aiot.services.context import ServiceContext

log = logging.getLogger(__name__)


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the supervisor owns SIGINT/SIGTERM for the whole process."""

    def install_signal_handlers(self) -> None:  # pragma: no cover - trivial
        return None


class ApiService(PlatformService):
    name = "api"

    def __init__(self) -> None:
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None
        self.url = ""

    async def start(self, ctx: ServiceContext) -> None:
        settings = ctx.settings
        config = uvicorn.Config(create_app(ctx), host=settings.host, port=settings.port, log_level="warning",
                                lifespan="off", access_log=False, proxy_headers=True)
        self._server = _EmbeddedServer(config)
        self._task = asyncio.create_task(self._serve(), name="api-server")
        while not self._server.started:
            if self._task.done():
                raise ServiceUnavailable(
                    f"the API could not listen on {settings.host}:{settings.port} (port in use?); "
                    "choose another with --port or AIOT_PORT"
                )
            await asyncio.sleep(0.02)
        sockets = [s for server in self._server.servers for s in server.sockets]
        port = sockets[0].getsockname()[1] if sockets else settings.port
        self.url = f"http://{settings.host}:{port}"
        log.info("API listening on %s", self.url)

    async def _serve(self) -> None:
        assert self._server is not None
        with contextlib.suppress(SystemExit):  # uvicorn exits when it cannot bind; start() reports it
            await self._server.serve()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, timeout=10)
            self._task = None

    def health(self) -> ServiceHealth:
        if self._server is None or self._task is None:
            return ServiceHealth(HealthState.stopped)
        if self._task.done():
            return ServiceHealth(HealthState.degraded, "HTTP server stopped")
        return ServiceHealth(HealthState.ok, self.url)
