"""The HTTP API as a platform service: uvicorn serving the FastAPI app inside the process's event loop, and beside
it the apps origin (web apps' pages on another host and port, see `aiot.api.appsorigin`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import uvicorn

from aiot.api.appsorigin import create_apps_app, default_apps_url
from aiot.errors import ServiceUnavailable
from aiot.launch.http_app import create_app
from aiot.services.contract import HealthState, PlatformService, ServiceContext, ServiceHealth

log = logging.getLogger(__name__)


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the supervisor owns SIGINT/SIGTERM for the whole process."""

    def install_signal_handlers(self) -> None:  # pragma: no cover - trivial
        return None


Listening = tuple[_EmbeddedServer, "asyncio.Task[None]", int]


async def _listen(app: object, host: str, port: int, what: str, hint: str) -> Listening:
    """Start uvicorn for `app` and wait until it listens; the bound port (for port 0)."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",  # type: ignore[arg-type]
        lifespan="off",
        access_log=False,
        proxy_headers=True,
    )
    server = _EmbeddedServer(config)
    task = asyncio.create_task(_serve(server), name=f"{what}-server")
    while not server.started:
        if task.done():
            raise ServiceUnavailable(f"the {what} could not listen on {host}:{port} (port in use?); {hint}")
        await asyncio.sleep(0.02)
    sockets = [s for srv in server.servers for s in srv.sockets]
    return server, task, sockets[0].getsockname()[1] if sockets else port


async def _serve(server: _EmbeddedServer) -> None:
    with contextlib.suppress(SystemExit):  # uvicorn exits when it cannot bind; _listen() reports it
        await server.serve()


class ApiService(PlatformService):
    name = "api"

    def __init__(self) -> None:
        self._servers: list[tuple[_EmbeddedServer, asyncio.Task[None]]] = []
        self.url = ""
        self.apps_url = ""

    async def start(self, ctx: ServiceContext) -> None:
        settings = ctx.settings
        api = create_app(ctx)
        server, task, port = await _listen(
            api, settings.host, settings.port, "API", "choose another with --port or AIOT_PORT"
        )
        self._servers.append((server, task))
        self.url = f"http://{settings.host}:{port}"
        apps = create_apps_app(ctx)
        try:
            server, task, apps_port = await _listen(
                apps, settings.host, settings.apps_port, "apps origin", "choose another with AIOT_APPS_PORT"
            )
        except ServiceUnavailable:
            await self.stop()
            raise
        self._servers.append((server, task))
        platform_url = (settings.public_url or self.url).rstrip("/")
        self.apps_url = (settings.apps_url or default_apps_url(platform_url, apps_port)).rstrip("/")
        api.state.apps_url = apps.state.apps_url = self.apps_url
        apps.state.platform_url = platform_url
        log.info("API listening on %s, web apps on %s", self.url, self.apps_url)

    async def stop(self) -> None:
        for server, _task in self._servers:
            server.should_exit = True
        for _server, task in self._servers:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=10)
        self._servers = []

    def health(self) -> ServiceHealth:
        if not self._servers:
            return ServiceHealth(HealthState.stopped)
        if any(task.done() for _server, task in self._servers):
            return ServiceHealth(HealthState.degraded, "HTTP server stopped")
        return ServiceHealth(HealthState.ok, self.url)
