"""Keeps who may connect to NATS equal to what the database says, through the server's auth callout.

Sources (devices, nodes, workloads) each turn database rows into `NatsUser`s. The service rebuilds the user
directory when told (`aiot.internal.auth.changed`, published by whoever changed credentials, from any process)
and every `RESYNC_SECONDS` anyway, so a lost notification only delays a change, never loses it (reconcile, not
fire-and-forget).

Both kinds of NATS deployment use the same mechanism, auth callout (`aiot.bus.callout`): the server asks about
each connecting client and the answer carries its permissions.
- The embedded server (`aiot up` on one machine): the directory goes to `EmbeddedNats.set_users`, whose responder
  answers the callout and closes the connections of users that changed or went.
- An external server or cluster configured with `aiot nats callout-config` (`AIOT_NATS_CALLOUT`): this service
  answers the callout itself (replicas share it as a queue group) and, with a system-account user configured
  (`AIOT_NATS_SYSTEM_USER`), closes the open connections of credentials that changed or went.
Either way "MQTT client id = user name" is checked at connect, before a device could take over another's session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiot.bus import nkey_jwt
from aiot.bus.auth import NatsUser, changed_users
from aiot.bus.callout import CalloutResponder
from aiot.bus.client import Bus
from aiot.bus.kick import kick_users
from aiot.natsauth.sources import AUTH_CHANGED_SUBJECT, USER_SOURCES
from aiot.secrets_store import platform_secret
from aiot.services.contract import HealthState, ServiceContext, ServiceHealth
from aiot.services.loop import LoopService

log = logging.getLogger(__name__)

RESYNC_SECONDS = 15.0


class NatsAuthService(LoopService):
    name = "nats-auth"
    interval = RESYNC_SECONDS
    wake_subject = AUTH_CHANGED_SUBJECT
    pass_at_start = False  # on_start syncs before serving

    def __init__(self) -> None:
        super().__init__()
        self._users = 0
        self._syncs = 0
        self._sync_lock = asyncio.Lock()
        self.callout: CalloutResponder | None = None  # external servers only; the embedded one has its own
        self._directory: dict[str, NatsUser] = {}
        self._system: Bus | None = None

    @property
    def manages_users(self) -> bool:
        ctx = self._ctx
        return ctx is not None and ctx.bus is not None and (ctx.embedded is not None or ctx.settings.nats_callout)

    def enabled(self, ctx: ServiceContext) -> bool:
        return self.manages_users

    async def on_start(self, ctx: ServiceContext) -> None:
        if not self.manages_users:
            return
        await self.sync()  # before serving: devices registered earlier may connect as soon as we are up
        if ctx.embedded is None:
            assert ctx.bus is not None
            issuer = nkey_jwt.account_keypair(platform_secret(ctx.settings))
            self.callout = CalloutResponder(
                ctx.bus.nc, issuer, lambda name: self._directory.get(name), on_miss=self.sync
            )
            await self.callout.start()
        else:
            ctx.embedded.on_directory_miss = self.sync
            if ctx.embedded.callout is not None:
                ctx.embedded.callout.on_miss = self.sync

    async def run_pass(self) -> None:
        await self.sync()

    async def sync(self) -> None:
        """Read every source and apply the result (users that changed or went lose their connections)."""
        ctx = self.ctx

        def collect() -> list[NatsUser]:
            with ctx.db.session() as session:
                return [user for source in USER_SOURCES for user in source(session)]

        async with self._sync_lock:
            users = await asyncio.to_thread(collect)
            if ctx.embedded is not None:
                await ctx.embedded.set_users(users)
            else:
                await self._apply_external(ctx, users)
        self._users, self._error = len(users), ""
        self._syncs += 1

    async def _apply_external(self, ctx: ServiceContext, users: list[NatsUser]) -> None:
        fresh = {user.username: user for user in users}
        gone = changed_users(self._directory, fresh)
        self._directory = fresh
        for name in gone:
            if self.callout is not None:
                self.callout.forget(name)
        settings = ctx.settings
        if not gone or not settings.nats_system_user or settings.nats_system_password is None:
            return
        if self._system is None:
            self._system = await Bus.connect(
                settings.nats_url or "",
                user=settings.nats_system_user,
                password=settings.nats_system_password.get_secret_value(),
                name="aiot-nats-auth-system",
                attempts=1,
            )
        kicked = await kick_users(self._system.nc, gone)
        if kicked:
            log.info("closed %d connection(s) of %d changed or removed NATS user(s)", kicked, len(gone))

    async def on_stop(self) -> None:
        for closing in (self.callout, self._system):
            if closing is not None:
                with contextlib.suppress(Exception):
                    await closing.stop() if isinstance(closing, CalloutResponder) else await closing.close()
        self.callout = self._system = None

    def health(self) -> ServiceHealth:
        ctx = self._ctx
        if ctx is None:
            return ServiceHealth(HealthState.stopped)
        if not self.manages_users:
            return ServiceHealth(
                HealthState.degraded,
                "external NATS without auth callout: per-device/workload "
                "users are not managed by the platform; set AIOT_NATS_CALLOUT (see "
                "`aiot nats callout-config`) or configure them on that server",
            )
        responder = ctx.embedded.callout if ctx.embedded is not None else self.callout
        extra = {
            "users": self._users,
            "syncs": self._syncs,
            "allowed": responder.allowed if responder else 0,
            "refused": responder.refused if responder else 0,
        }
        if self._error:
            return ServiceHealth(HealthState.degraded, self._error, extra)
        return ServiceHealth(HealthState.ok, f"auth callout: {self._users} users", extra)
