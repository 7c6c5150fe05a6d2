"""The deployer as a platform service: a reconcile loop (every second, and at once when woken)."""

from __future__ import annotations

import asyncio
import logging

from aiot.deployer.reconcile import PassResult, reconcile_once
from aiot.deployer.rollouts import RolloutPolicy, check_model_rollouts
from aiot.natsauth.sources import announce_auth_change
from aiot.secrets_store import platform_secret
from aiot.services.contract import ServiceContext
from aiot.services.loop import LoopService

log = logging.getLogger(__name__)

WAKE_SUBJECT = "aiot.internal.deployer.wake"
INTERVAL = 1.0


async def wake_deployer(ctx: ServiceContext) -> None:
    """Ask the deployer to reconcile now (after creating or stopping workloads)."""
    if ctx.bus is not None:
        await ctx.bus.publish(WAKE_SUBJECT, b"")


async def workloads_changed(ctx: ServiceContext) -> None:
    """After creating or stopping workloads: refresh NATS permissions (workload users come and go) and wake the
    deployer now, not at its next pass."""
    await announce_auth_change(ctx)
    await wake_deployer(ctx)


async def wake_nodes(ctx: ServiceContext, node_ids: set[str]) -> None:
    """Tell agents their assignments changed (a hint: they poll anyway)."""
    if ctx.bus is not None:
        for node_id in node_ids:
            await ctx.bus.publish(f"aiot.node.{node_id}.wake", b"")


class DeployerService(LoopService):
    name = "deployer"
    interval = INTERVAL
    wake_subject = WAKE_SUBJECT

    def __init__(self) -> None:
        super().__init__()
        self.last: PassResult | None = None
        self._secret = b""

    async def on_start(self, ctx: ServiceContext) -> None:
        self._secret = platform_secret(ctx.settings)

    async def run_pass(self) -> None:
        await self.reconcile()

    async def reconcile(self) -> PassResult:
        ctx = self.ctx

        def run() -> PassResult:
            with ctx.db.session() as session:
                check_model_rollouts(session, self._secret, RolloutPolicy.from_settings(ctx.settings))
                return reconcile_once(
                    session, self._secret, ctx.settings.node_grace_seconds, ctx.settings.model_ready_deadline_seconds
                )

        result = await asyncio.to_thread(run)
        self.last = result
        if result.placed or result.lost_nodes or result.touched_nodes:
            await announce_auth_change(ctx)  # workload credentials follow their placement
            await wake_nodes(ctx, result.touched_nodes)
        return result
