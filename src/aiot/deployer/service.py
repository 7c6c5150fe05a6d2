"""The deployer as a platform service: a reconcile loop (every second, and at once when woken)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiot.deployer.reconcile import PassResult, reconcile_once
from aiot.deployer.rollouts import RolloutPolicy, check_model_rollouts
from aiot.secrets_store import platform_secret
from aiot.services.base import HealthState, PlatformService, ServiceHealth
from aiot.services.context import ServiceContext
from aiot.services.nats_auth import announce_auth_change

log = logging.getLogger(__name__)

WAKE_SUBJECT = "aiot.internal.deployer.wake"
INTERVAL = 1.0


async def wake_deployer(ctx: ServiceContext) -> None:
    """Ask the deployer to reconcile now (after creating or stopping workloads)."""
    if ctx.bus is not None:
        await ctx.bus.publish(WAKE_SUBJECT, b"")


async def wake_nodes(ctx: ServiceContext, node_ids: set[str]) -> None:
    """Tell agents their assignments changed (a hint: they poll anyway)."""
    if ctx.bus is not None:
        for node_id in node_ids:
            await ctx.bus.publish(f"aiot.node.{node_id}.wake", b"")


class DeployerService(PlatformService):
    name = "deployer"

    def __init__(self) -> None:
        self._ctx: ServiceContext | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._sub = None
        self._error = ""
        self.passes = 0
        self.last: PassResult | None = None

    async def start(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        self._secret = platform_secret(ctx.settings)
        if ctx.bus is not None:
            async def on_wake(_msg: object) -> None:
                self._wake.set()

            self._sub = await ctx.bus.subscribe(WAKE_SUBJECT, on_wake)
        self._task = asyncio.create_task(self._loop(), name="deployer")

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=INTERVAL)
            self._wake.clear()
            try:
                await self.reconcile()
                self._error = ""
            except Exception as exc:  # noqa: BLE001 - the loop must survive; the next pass retries
                self._error = f"{type(exc).__name__}: {exc}"
                log.exception("deployer pass failed")

    async def reconcile(self) -> PassResult:
        ctx = self._ctx
        assert ctx is not None

        def run() -> PassResult:
            with ctx.db.session() as session:
                check_model_rollouts(session, self._secret, RolloutPolicy.from_settings(ctx.settings))
                return reconcile_once(session, self._secret, ctx.settings.node_grace_seconds,
                                      ctx.settings.model_ready_deadline_seconds)

        result = await asyncio.to_thread(run)
        self.passes += 1
        self.last = result
        if result.placed or result.lost_nodes or result.touched_nodes:
            await announce_auth_change(ctx)  # workload credentials follow their placement
            await wake_nodes(ctx, result.touched_nodes)
        return result

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def health(self) -> ServiceHealth:
        if self._task is None:
            return ServiceHealth(HealthState.stopped)
        if self._error:
            return ServiceHealth(HealthState.degraded, self._error)
        return ServiceHealth(HealthState.ok, f"{self.passes} passes", {"passes": self.passes})
