"""Keeps the embedded nats-server's user list equal to what the database says may connect.

Sources (devices now; workloads later) each turn database rows into `NatsUser`s. The service rebuilds the list
when told (`aiot.internal.auth.changed`, published by whoever changed credentials, from any process) and every
`RESYNC_SECONDS` anyway, so a lost notification only delays a change, never loses it (reconcile, not
fire-and-forget). Only the process that owns the embedded server runs it; against an external NATS server the
platform cannot rewrite the server's users, and the service says so in its health.

It also enforces "MQTT client id = user name" (`mqtt_guard`): a user seen on an MQTT connection with another
client id is left out of the user list for a while, which closes its connections and refuses its logins.

Against an external NATS server configured for auth callout (`AIOT_NATS_CALLOUT`, see `aiot.bus.callout`) the
same sources feed an in-memory directory that answers the server's authorization requests: a credential works
as soon as it is committed and announced, and "MQTT client id = user name" is checked before a session exists.
A credential that changes or disappears is forgotten at once and, with a system-account user configured
(`AIOT_NATS_SYSTEM_USER`), its open connections are kicked, so it reconnects through the callout or not at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from sqlalchemy.orm import Session

from aiot.bus import nkey_jwt
from aiot.bus.auth import NatsUser
from aiot.bus.callout import CalloutResponder
from aiot.bus.client import Bus
from aiot.bus.kick import kick_users
from aiot.secrets_store import platform_secret
from aiot.services.base import HealthState, PlatformService, ServiceHealth
from aiot.services.context import ServiceContext
from aiot.services.mqtt_guard import INTERVAL as GUARD_INTERVAL
from aiot.services.mqtt_guard import MqttClientIdGuard

log = logging.getLogger(__name__)

AUTH_CHANGED_SUBJECT = "aiot.internal.auth.changed"
RESYNC_SECONDS = 15.0

UserSource = Callable[[Session], list[NatsUser]]
USER_SOURCES: list[UserSource] = []


def register_user_source(source: UserSource) -> UserSource:
    """Add a function that lists NATS users from the database (decorator-friendly)."""
    if source not in USER_SOURCES:
        USER_SOURCES.append(source)
    return source


async def announce_auth_change(ctx: ServiceContext) -> None:
    """Tell the auth service to resync now (call after committing a credential change)."""
    if ctx.bus is not None:
        await ctx.bus.publish(AUTH_CHANGED_SUBJECT, b"")
        with contextlib.suppress(Exception):
            await ctx.bus.flush(timeout=2)


class NatsAuthService(PlatformService):
    name = "nats-auth"

    def __init__(self) -> None:
        self._ctx: ServiceContext | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sub = None
        self._last_error = ""
        self._users = 0
        self._syncs = 0
        self.guard = MqttClientIdGuard()
        self._guard_task: asyncio.Task[None] | None = None
        self._guard_error = ""
        self._sync_lock = asyncio.Lock()  # the sync loop and the guard both sync: one reload at a time
        self.callout: CalloutResponder | None = None
        self._directory: dict[str, NatsUser] = {}
        self._system: Bus | None = None

    async def start(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        if ctx.bus is None:
            return
        if ctx.embedded is None:
            if ctx.settings.nats_callout:
                await self._start_callout(ctx)
            return
        await self.sync()  # before serving: devices registered earlier may connect as soon as we are up
        self._sub = await ctx.bus.subscribe(AUTH_CHANGED_SUBJECT, self._on_change)
        self._task = asyncio.create_task(self._loop(), name="nats-auth-sync")
        self._guard_task = asyncio.create_task(self._guard_loop(), name="nats-auth-mqtt-guard")

    async def _on_change(self, _msg: object) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=RESYNC_SECONDS)
            self._wake.clear()
            try:
                await self.sync()
            except Exception as exc:  # noqa: BLE001 - keep reconciling; report in health
                self._last_error = f"{type(exc).__name__}: {exc}"
                log.exception("NATS user sync failed")

    async def _guard_loop(self) -> None:
        ctx = self._ctx
        assert ctx is not None and ctx.embedded is not None
        while True:
            await asyncio.sleep(GUARD_INTERVAL)
            try:
                if not ctx.embedded.running:
                    continue
                connections = await ctx.embedded.mqtt_connections()
                if self.guard.check(connections, time.monotonic()):
                    await self.sync()  # now: the reload closes the offender's connections
                self._guard_error = ""
            except Exception as exc:  # noqa: BLE001 - keep watching; report in health
                if not self._guard_error:
                    log.warning("MQTT client id check failed: %s", exc)
                self._guard_error = f"MQTT client id check: {type(exc).__name__}: {exc}"

    async def _start_callout(self, ctx: ServiceContext) -> None:
        assert ctx.bus is not None
        await self.sync()
        issuer = nkey_jwt.account_keypair(platform_secret(ctx.settings))
        self.callout = CalloutResponder(ctx.bus.nc, issuer, lambda name: self._directory.get(name))
        await self.callout.start()
        self._sub = await ctx.bus.subscribe(AUTH_CHANGED_SUBJECT, self._on_change)
        self._task = asyncio.create_task(self._loop(), name="nats-auth-sync")

    async def sync(self) -> None:
        ctx = self._ctx
        assert ctx is not None
        if ctx.embedded is None:
            await self._sync_directory(ctx)
            return

        def collect() -> list[NatsUser]:
            with ctx.db.session() as session:
                return [user for source in USER_SOURCES for user in source(session)]

        async with self._sync_lock:
            users = await asyncio.to_thread(collect)
            quarantined = self.guard.quarantined(time.monotonic())
            users = [user for user in users if user.username not in quarantined]
            await ctx.embedded.set_users(users)
        self._users, self._last_error = len(users), ""
        self._syncs += 1

    async def _sync_directory(self, ctx: ServiceContext) -> None:
        """Callout mode: refresh the directory; credentials that changed or went are forgotten and kicked."""

        def collect() -> list[NatsUser]:
            with ctx.db.session() as session:
                return [user for source in USER_SOURCES for user in source(session)]

        async with self._sync_lock:
            fresh = {user.username: user for user in await asyncio.to_thread(collect)}
            gone = [name for name, user in self._directory.items() if fresh.get(name) != user]
            self._directory = fresh
            for name in gone:
                if self.callout is not None:
                    self.callout.forget(name)
            if gone:
                await self._kick(ctx, gone)
        self._users, self._last_error = len(fresh), ""
        self._syncs += 1

    async def _kick(self, ctx: ServiceContext, usernames: list[str]) -> None:
        """Close the open connections of `usernames` on every server (needs a system-account user)."""
        settings = ctx.settings
        if not settings.nats_system_user or settings.nats_system_password is None:
            return
        if self._system is None:
            self._system = await Bus.connect(settings.nats_url or "", user=settings.nats_system_user,
                                             password=settings.nats_system_password.get_secret_value(),
                                             name="aiot-nats-auth-system", attempts=1)
        kicked = await kick_users(self._system.nc, usernames)
        if kicked:
            log.info("closed %d connection(s) of %d revoked or changed NATS user(s)", kicked, len(usernames))

    async def stop(self) -> None:
        if self.callout is not None:
            with contextlib.suppress(Exception):
                await self.callout.stop()
            self.callout = None
        if self._system is not None:
            with contextlib.suppress(Exception):
                await self._system.close()
            self._system = None
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        for task in (self._task, self._guard_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._guard_task = None

    def health(self) -> ServiceHealth:
        if self._ctx is None:
            return ServiceHealth(HealthState.stopped)
        if self._ctx.embedded is None and self.callout is not None:
            extra = {"users": self._users, "syncs": self._syncs, "allowed": self.callout.allowed,
                     "refused": self.callout.refused}
            if self._last_error:
                return ServiceHealth(HealthState.degraded, self._last_error, extra)
            return ServiceHealth(HealthState.ok, f"auth callout: {self._users} users", extra)
        if self._ctx.embedded is None:
            return ServiceHealth(HealthState.degraded, "external NATS without auth callout: per-device/workload "
                                 "users are not managed by the platform; set AIOT_NATS_CALLOUT (see "
                                 "`aiot nats callout-config`) or configure them on that server")
        extra = {"users": self._users, "syncs": self._syncs, "mqtt_client_id_violations": self.guard.violations,
                 "quarantined": len(self.guard.until)}
        if self._last_error or self._guard_error:
            return ServiceHealth(HealthState.degraded, self._last_error or self._guard_error, extra)
        return ServiceHealth(HealthState.ok, f"{self._users} users", extra)
