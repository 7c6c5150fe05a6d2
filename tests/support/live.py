"""An in-process control plane for API tests: migrated database, real embedded nats-server, ASGI client.

The HTTP client talks to the app through ASGITransport on the test's own event loop, because the NATS client
(nats-py) is bound to the loop it was created on; TestClient would run the app on another loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx

from aiot.accounts import users as accounts
from aiot.bus.client import Bus
from aiot.bus.embedded import EmbeddedNats
from aiot.launch.catalog import build_services
from aiot.launch.http_app import create_app
from aiot.services.contract import ServiceContext
from aiot.settings import Settings
from aiot.store import migrate
from aiot.store.engine import Database
from aiot.store.models import Role

PASSWORD = "correct-horse-battery"


@dataclass
class LivePlatform:
    ctx: ServiceContext
    nats: EmbeddedNats
    client: httpx.AsyncClient
    tokens: dict[str, str] = field(default_factory=dict)

    def headers(self, who: str | Role) -> dict[str, str]:
        key = who.value if isinstance(who, Role) else who
        return {"Authorization": f"Bearer {self.tokens[key]}"}

    def add_user(self, username: str, role: Role) -> dict[str, str]:
        with self.ctx.db.session() as session:
            user = accounts.create_user(session, username=username, password=PASSWORD, role=role)
            self.tokens[username] = accounts.issue_token(session, user, ttl=timedelta(hours=1)).token
        return self.headers(username)


@asynccontextmanager
async def live_platform(
    tmp_path: Path, db_url: str | None = None, services: tuple[str, ...] = (), **settings_extra: object
) -> AsyncIterator[LivePlatform]:
    """`services` (names from the service catalogue, e.g. "nats-auth", "ingest") run beside the API;
    `settings_extra` are further `Settings` fields (e.g. artifact_store="azure")."""
    url = db_url or f"sqlite:///{tmp_path / 'aiot.db'}"
    migrate.upgrade(url)
    db = Database(url)
    nats = EmbeddedNats(tmp_path / "data")
    await nats.start()
    bus = await Bus.connect(nats.url, user=nats.platform_user, password=nats.platform_password, name="test", attempts=3)
    settings = Settings(data_dir=tmp_path / "data", database_url=url, **settings_extra)  # type: ignore[arg-type]
    ctx = ServiceContext(settings=settings, db=db, bus=bus, embedded=nats)
    started = []
    for service in build_services(list(services)):
        ctx.services[service.name] = service
        await service.start(ctx)
        started.append(service)
    transport = httpx.ASGITransport(app=create_app(ctx))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://aiot.test", timeout=60) as client:
            live = LivePlatform(ctx=ctx, nats=nats, client=client)
            for role in Role:
                live.add_user(role.value.replace("_", "") + "1", role)
                live.tokens[role.value] = live.tokens[role.value.replace("_", "") + "1"]
            yield live
    finally:
        for service in reversed(started):
            await service.stop()
        await bus.close()
        await nats.stop()
        db.dispose()
