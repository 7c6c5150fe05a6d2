"""`LogRelayService` ("log-relay"): a node's captured workload output, checked, into the log stream.

A node agent publishes each line of its workloads' stdout/stderr on `aiot.node.<node id>.logs.<workload id>`, the
one log subject pattern its NATS user may use (a fixed permission: no permission change, so no reconnect, each
time a workload is placed on or moved off the node). This service checks that the workload runs on that node
(assigned to it now, or reported there within `STOPPED_LOG_GRACE_S` while it stops or moves) and republishes the
line on `aiot.logs.<workload id>`; a line a node sends for another node's workload is dropped and counted, so a
node still cannot forge another workload's log. Replicas share the lines as a queue group; the answer to "does
this workload run there" is cached for a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import or_, select

from aiot.logs.records import NODE_LOGS, workload_subject
from aiot.services.contract import HealthState, PlatformService, ServiceHealth
from aiot.store.runtime import DesiredState, Workload, WorkloadStatus
from aiot.timeutil import utcnow

if TYPE_CHECKING:
    from aiot.services.contract import ServiceContext

log = logging.getLogger(__name__)

QUEUE = "aiot-log-relay"
CACHE_SECONDS = 1.0
STOPPED_LOG_GRACE_S = 120.0
"""A node may still send the output of a workload stopped or moved this recently (its last lines)."""


class LogRelayService(PlatformService):
    name = "log-relay"

    def __init__(self) -> None:
        self._ctx: ServiceContext | None = None
        self._sub: Any = None
        self._cache: dict[tuple[str, str], tuple[float, bool]] = {}
        self.relayed = 0
        self.dropped = 0

    async def start(self, ctx: ServiceContext) -> None:
        if ctx.bus is None:
            raise RuntimeError("log-relay needs the NATS bus (ServiceContext.bus is None)")
        self._ctx = ctx
        self._sub = await ctx.bus.nc.subscribe(NODE_LOGS, queue=QUEUE, cb=self._on_line)

    async def _on_line(self, msg: Any) -> None:
        ctx = self._ctx
        assert ctx is not None and ctx.bus is not None
        parts = msg.subject.split(".")
        if len(parts) != 5:
            return
        node_id, workload_id = parts[2], parts[4]
        if not await self._runs_there(node_id, workload_id):
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning(
                    "dropped output for workload %s sent by node %s, which does not run it (%d so far)",
                    workload_id,
                    node_id,
                    self.dropped,
                )
            return
        try:
            record = json.loads(msg.data)
            if isinstance(record, dict):  # the relay vouches for these two fields, whatever the node wrote
                record["workload_id"], record["node_id"] = workload_id, node_id
                data = json.dumps(record).encode()
            else:
                data = msg.data
        except ValueError:
            data = msg.data
        await ctx.bus.publish(workload_subject(workload_id), data)
        self.relayed += 1

    async def _runs_there(self, node_id: str, workload_id: str) -> bool:
        key, now = (node_id, workload_id), time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        answer = await asyncio.to_thread(self._query, node_id, workload_id)
        if len(self._cache) > 50_000:
            self._cache.clear()
        self._cache[key] = (now + CACHE_SECONDS, answer)
        return answer

    def _query(self, node_id: str, workload_id: str) -> bool:
        ctx = self._ctx
        assert ctx is not None
        recent = utcnow() - timedelta(seconds=STOPPED_LOG_GRACE_S)
        with ctx.db.session() as session:
            query = (
                select(Workload)
                .outerjoin(WorkloadStatus, WorkloadStatus.workload_id == Workload.id)
                .where(Workload.id == workload_id, or_(Workload.node_id == node_id, WorkloadStatus.node_id == node_id))
            )
            workload = session.scalar(query)
            if workload is None:
                return False
            if workload.node_id == node_id and workload.desired == DesiredState.running:
                return True
            return workload.updated_at >= recent  # stopped or moved moments ago: its last lines

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    def health(self) -> ServiceHealth:
        if self._sub is None:
            return ServiceHealth(HealthState.stopped)
        return ServiceHealth(
            HealthState.ok,
            f"{self.relayed} lines relayed, {self.dropped} dropped",
            {"relayed": self.relayed, "dropped": self.dropped},
        )
