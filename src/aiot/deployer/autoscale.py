"""Scale-out policy: add a node when the cluster stays busy, drain and remove one when it stays idle.

The decision is a pure function of the observed average CPU over time (`AutoscalePolicy.decide`), so it is
tested without a cluster; `AutoscaleService` feeds it node reports and acts through the node provider.
Only nodes the provider started are ever removed, and only after draining moved their workloads away.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from sqlalchemy import select

from aiot.deployer.service import wake_deployer
from aiot.services.contract import HealthState, ServiceContext, ServiceHealth
from aiot.services.loop import LoopService
from aiot.store.runtime import DesiredState, Node, NodeStatus, Workload
from aiot.timeutil import utcnow

log = logging.getLogger(__name__)
INTERVAL = 2.0


@dataclass
class AutoscalePolicy:
    high_cpu: float
    low_cpu: float
    window_s: float
    idle_window_s: float
    min_nodes: int
    max_nodes: int
    high_since: float | None = None
    low_since: float | None = None

    def decide(self, now: float, avg_cpu: float | None, managed: int) -> str:
        """'add', 'remove' or 'hold' for this observation (time in seconds, any monotonic clock)."""
        if managed < self.min_nodes:
            return "add"
        if avg_cpu is None:
            self.high_since = self.low_since = None
            return "hold"
        if avg_cpu >= self.high_cpu:
            self.high_since = now if self.high_since is None else self.high_since
        else:
            self.high_since = None
        if avg_cpu <= self.low_cpu:
            self.low_since = now if self.low_since is None else self.low_since
        else:
            self.low_since = None
        if self.high_since is not None and now - self.high_since >= self.window_s and managed < self.max_nodes:
            self.high_since = None
            return "add"
        if self.low_since is not None and now - self.low_since >= self.idle_window_s and managed > self.min_nodes:
            self.low_since = None
            return "remove"
        return "hold"


class AutoscaleService(LoopService):
    name = "autoscaler"
    interval = INTERVAL

    def __init__(self) -> None:
        super().__init__()
        self.policy: AutoscalePolicy | None = None
        self.actions: list[str] = []

    async def on_start(self, ctx: ServiceContext) -> None:
        s = ctx.settings
        self.policy = AutoscalePolicy(
            s.autoscale_high_cpu,
            s.autoscale_low_cpu,
            s.autoscale_window_s,
            s.autoscale_idle_window_s,
            s.autoscale_min_nodes,
            s.autoscale_max_nodes,
        )

    def enabled(self, ctx: ServiceContext) -> bool:
        return ctx.settings.autoscale

    async def run_pass(self) -> None:
        await self.step()

    async def step(self) -> str:
        ctx, policy = self._ctx, self.policy
        assert ctx is not None and policy is not None
        provider = ctx.node_provider
        if provider is None:
            return "hold"
        managed = provider.managed()
        with ctx.db.session() as session:
            ready = list(session.scalars(select(Node).where(Node.status == NodeStatus.ready)))
            loads = [float((n.load or {}).get("cpu_percent", 0.0)) for n in ready if n.load]
            # Finish removals: a drained provider node with no workloads left is stopped.
            for node in session.scalars(
                select(Node).where(Node.status == NodeStatus.draining, Node.provider == provider.name)
            ):
                busy = session.scalar(
                    select(Workload.id)
                    .where(Workload.node_id == node.id, Workload.desired == DesiredState.running)
                    .limit(1)
                )
                if busy is None and node.name in managed:
                    provider.remove_node(node.name)
                    node.status, node.status_changed_at = NodeStatus.removed, utcnow()
                    self.actions.append(f"removed {node.name}")
        avg = sum(loads) / len(loads) if loads else None
        decision = policy.decide(asyncio.get_running_loop().time(), avg, len(provider.managed()))
        if decision == "add":
            name = provider.add_node()
            self.actions.append(f"added {name}")
            log.info("autoscaler: average CPU %s%%: added node %s", f"{avg:.0f}" if avg is not None else "?", name)
        elif decision == "remove":
            with ctx.db.session() as session:
                candidates = [
                    n
                    for n in session.scalars(
                        select(Node).where(Node.status == NodeStatus.ready, Node.provider == provider.name)
                    )
                    if n.name in managed
                ]
                if candidates:

                    def count(node: Node) -> int:
                        return len(list(session.scalars(select(Workload.id).where(Workload.node_id == node.id))))

                    victim = min(candidates, key=lambda n: (count(n), n.name))
                    victim.status, victim.status_changed_at = NodeStatus.draining, utcnow()
                    self.actions.append(f"draining {victim.name}")
                    log.info("autoscaler: cluster idle: draining %s", victim.name)
            await wake_deployer(ctx)
        return decision

    def health(self) -> ServiceHealth:
        if self._ctx is None:
            return ServiceHealth(HealthState.stopped)
        if not self._ctx.settings.autoscale:
            return ServiceHealth(HealthState.ok, "disabled (AIOT_AUTOSCALE=false)")
        return super().health()

    def health_detail(self) -> str:
        return "; ".join(self.actions[-3:]) or "no action yet"
