"""A small live platform for the log tests: migrated SQLite, a real embedded nats-server, the log collector,
the API (ASGI client; plus a real uvicorn server for server-sent events, which ASGITransport buffers)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from aiot.accounts import users as accounts
from aiot.api.app import API_PREFIX
from aiot.api.routes import logs as logs_routes
from aiot.bus.client import Bus
from aiot.bus.embedded import EmbeddedNats
from aiot.launch.http_app import create_app
from aiot.logs.collector import LogCollectorService
from aiot.services.contract import ServiceContext
from aiot.settings import Settings
from aiot.store import migrate
from aiot.store.apps import AppInstance
from aiot.store.catalog import AppPackage
from aiot.store.devices import Location
from aiot.store.engine import Database
from aiot.store.models import Role
from aiot.store.runtime import Workload, WorkloadKind
from tests.conftest import free_port

PASSWORD = "correct-horse-battery"


@dataclass
class LogsPlatform:
    ctx: ServiceContext
    nats: EmbeddedNats
    bus: Bus
    app: FastAPI
    client: httpx.AsyncClient
    collector: LogCollectorService
    tokens: dict[str, str] = field(default_factory=dict)
    users: dict[str, str] = field(default_factory=dict)  # username -> user id

    def headers(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    async def publish(self, subject: str, body: dict[str, Any] | bytes | str) -> None:
        data = body if isinstance(body, bytes) else (body if isinstance(body, str) else json.dumps(body)).encode()
        await self.bus.js.publish(subject, data)  # acknowledged by the stream: stored when this returns

    async def search(self, who: str, **params: Any) -> httpx.Response:
        return await self.client.get(f"{API_PREFIX}/logs", params=params, headers=self.headers(who))


def mount(app: FastAPI) -> FastAPI:
    """Mount the logs router unless the lead already did."""
    if not any(getattr(r, "path", "") == f"{API_PREFIX}/logs" for r in app.routes):
        app.include_router(logs_routes.router, prefix=API_PREFIX)
    return app


def _seed(db: Database) -> dict[str, str]:
    """Users (admin1, alice, bob end users; carol AI developer) and their workloads / app instance."""
    ids: dict[str, str] = {}
    with db.session() as session:
        for name, role in (
            ("admin1", Role.admin),
            ("alice", Role.end_user),
            ("bob", Role.end_user),
            ("carol", Role.ai_developer),
        ):
            user = accounts.create_user(session, username=name, password=PASSWORD, role=role)
            ids[name] = user.id
            ids[f"token:{name}"] = accounts.issue_token(session, user, ttl=timedelta(hours=1)).token
        app = AppPackage(name="smart-home", version="1.0.0", sha256="0" * 64, size=1, manifest={}, kind="web")
        loc = Location(name="home-1")
        session.add_all([app, loc])
        session.flush()
        instance = AppInstance(app_id=app.id, location_id=loc.id, owner_id=ids["alice"], name="my home")
        session.add(instance)
        session.flush()
        ids["ins_alice"] = instance.id
        for key, owner, kind, group in (
            ("wl_carol", ids["carol"], WorkloadKind.model, "dep_x"),
            ("wl_bob", ids["bob"], WorkloadKind.model, "dep_y"),
            ("wl_app", None, WorkloadKind.app, instance.id),
        ):
            workload = Workload(
                kind=kind,
                package_id="pkg",
                package_sha256="0" * 64,
                owner_id=owner,
                group_id=group,
                nats_password_bcrypt="x",
            )
            session.add(workload)
            session.flush()
            ids[key] = workload.id
        instance.workload_id = ids["wl_app"]
    return ids


@pytest.fixture
async def logs_platform(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[LogsPlatform]:
    """The archives in the NATS object store, or in Azurite with `indirect` parameter "azure"."""
    store: dict[str, Any] = {}
    if getattr(request, "param", "nats") == "azure":
        azurite = request.getfixturevalue("azurite")
        store = dict(
            artifact_store="azure",
            azure_storage_connection_string=azurite.connection_string,
            azure_container_prefix=f"t{uuid.uuid4().hex[:10]}",
        )
    url = f"sqlite:///{tmp_path / 'aiot.db'}"
    migrate.upgrade(url)
    db = Database(url)
    ids = _seed(db)
    nats = EmbeddedNats(tmp_path / "data")
    await nats.start()
    bus = await Bus.connect(
        nats.url, user=nats.platform_user, password=nats.platform_password, name="logs-test", attempts=3
    )
    settings = Settings(data_dir=tmp_path / "data", database_url=url, **store)
    ctx = ServiceContext(settings=settings, db=db, bus=bus, embedded=nats)
    collector = LogCollectorService()
    await collector.start(ctx)
    ctx.services[collector.name] = collector
    app = mount(create_app(ctx))
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://aiot.test", timeout=30
        ) as client:
            live = LogsPlatform(ctx=ctx, nats=nats, bus=bus, app=app, client=client, collector=collector)
            for name in ("admin1", "alice", "bob", "carol"):
                live.tokens[name] = ids.pop(f"token:{name}")
            live.users = ids
            yield live
    finally:
        await collector.stop()
        await bus.close()
        await nats.stop()
        db.dispose()


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    """Run `app` under a real uvicorn server on a free port, on this event loop; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    try:
        await wait_until(lambda: server.started, 10, "uvicorn to start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        server.force_exit = True
        await asyncio.wait_for(task, 10)


async def wait_until(predicate: Callable[[], bool], limit_s: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > limit_s:
            pytest.fail(f"timed out after {limit_s}s waiting for {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - start
