"""The scheduler service: a loop that materialises occurrences, starts due ones, and stops them at their end.

It owns no state outside the database, so any number of replicas may run against one PostgreSQL database:
`ledger` makes each occurrence fire (and stop) exactly once. Starting and stopping an app instance is not its
business: it calls an `InstanceController` (the apps package implements it with the deployer). The clock is
injectable so tests can run a simulated day in a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from aiot.errors import PlatformError
from aiot.ids import new_id
from aiot.scheduler import ledger
from aiot.services.loop import LoopService
from aiot.store.engine import Database
from aiot.timeutil import utcnow

if TYPE_CHECKING:
    from aiot.services.contract import ServiceContext

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
INTERVAL = 0.5  # seconds between passes at most (it sleeps less when something is due sooner)
HORIZON = ledger.HORIZON
REFILL_BUDGET_S = 0.25  # seconds of window refill per pass, between firing what is due


class InstanceController(Protocol):
    """How the scheduler starts and stops an app instance (the seam to the deployer).

    `start` must be idempotent for an instance that already runs (it then just takes the new occurrence and end
    time); `stop` for an occurrence that is no longer the instance's current one must do nothing."""

    async def start(self, instance_id: str, occurrence_id: str, until: datetime) -> None: ...

    async def stop(self, instance_id: str, occurrence_id: str) -> None: ...


def default_controller(ctx: ServiceContext) -> InstanceController:
    """The platform's controller (apps + deployer), imported late so the scheduler does not depend on them."""
    from aiot.apps.service import DeployerInstanceController

    return DeployerInstanceController(ctx)  # type: ignore[return-value]


def controller_for(ctx: ServiceContext) -> InstanceController:
    """The controller of this process's scheduler service if one runs here, else the default one (API use)."""
    service = ctx.services.get(SchedulerService.name)
    if isinstance(service, SchedulerService) and service.controller is not None:
        return service.controller
    return default_controller(ctx)


@dataclass
class TickReport:
    """What one pass did (tests read it; the health detail sums it)."""

    materialised: int = 0
    started: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


class SchedulerService(LoopService):
    name = "scheduler"

    def __init__(
        self,
        controller: InstanceController | None = None,
        *,
        clock: Clock = utcnow,
        interval: float = INTERVAL,
        horizon: timedelta = HORIZON,
        replica: str | None = None,
    ) -> None:
        super().__init__()
        self.controller = controller
        self.clock = clock
        self.interval = interval
        self.horizon = horizon
        self.replica = replica or f"{socket.gethostname()}:{os.getpid()}:{new_id('sched')[-6:]}"
        self._db: Database | None = None
        self.totals = {"started": 0, "skipped": 0, "stopped": 0, "failed": 0}
        self._refill_pending = False

    # ------------------------------------------------------------------ lifecycle

    async def on_start(self, ctx: ServiceContext) -> None:
        self.attach(ctx)

    def attach(self, ctx: ServiceContext) -> None:
        """Bind to a context without starting the loop (tests then call `tick` themselves)."""
        self._db = ctx.db
        if self.controller is None:
            self.controller = default_controller(ctx)

    def health_detail(self) -> str:
        return ", ".join(f"{count} {what}" for what, count in self.totals.items())

    def health_extra(self) -> dict[str, Any]:
        return {"replica": self.replica}

    # ------------------------------------------------------------------ the loop

    async def run_pass(self) -> None:
        await self.tick()

    async def next_delay(self) -> float:
        return self.interval if self._error else await self._delay()

    @property
    def refill_pending(self) -> bool:
        """A window refill ran out of its time budget last pass and goes on in the next one."""
        return self._refill_pending

    async def _delay(self) -> float:
        """Sleep until the next due instant, but never longer than `interval`."""
        assert self._db is not None
        if self._refill_pending:
            return 0.01  # a refill is half done: fire what is due, then go on with it
        due = await asyncio.to_thread(ledger.next_due, self._db)
        if due is None:
            return self.interval
        return min(self.interval, max(0.01, (due - self.clock()).total_seconds()))

    async def tick(self) -> TickReport:
        """One pass: materialise, stop what has ended, then start (or skip) what is due."""
        db, controller = self._db, self.controller
        assert db is not None and controller is not None, "call start() or attach() first"
        report = TickReport()
        now = self.clock()
        # Fire first, refill after: with thousands of schedules a refill takes seconds, and what is due now
        # must not wait for it. The refill has a time budget and goes on in the next pass (which comes at
        # once, see `_delay`); windows are refilled well before they run out, so nothing is materialised late.
        for instance_id, occurrence_id in await asyncio.to_thread(ledger.claim_due_stops, db, now, self.replica):
            await self._stop(db, controller, instance_id, occurrence_id, report)
        for stale in await asyncio.to_thread(ledger.claim_stale_starts, db, now, self.replica):
            log.warning(
                "occurrence %s of %s was left starting by a scheduler replica that stopped; %s",
                stale.occurrence_id,
                stale.instance_id,
                "stopping it (it has ended)" if stale.ended else "starting it again",
            )
            if stale.ended:
                await self._stop(db, controller, stale.instance_id, stale.occurrence_id, report)
            else:
                await self._act(
                    db,
                    controller,
                    ledger.StartDecision(stale.occurrence_id, stale.instance_id, start=True, until=stale.until),
                    report,
                )
        await self._fire_due(db, controller, now, report)
        refill = await asyncio.to_thread(ledger.refill_due, db, self.clock(), self.horizon, 50, REFILL_BUDGET_S)
        report.materialised = refill.created
        self._refill_pending = refill.more
        if refill.created and not refill.more:
            # Newly created occurrences may already be due (a schedule created for "now"): fire them in this pass.
            await self._fire_due(db, controller, self.clock(), report)
        for key in self.totals:
            self.totals[key] += len(getattr(report, key))
        return report

    async def _fire_due(self, db: Database, controller: InstanceController, now: datetime, report: TickReport) -> None:
        """Claim and start (or skip) every occurrence due at `now` that no other replica claimed first."""
        for occurrence_id in await asyncio.to_thread(ledger.due_starts, db, now):
            decision = await asyncio.to_thread(ledger.fire, db, occurrence_id, self.clock(), self.replica)
            if decision is not None:
                await self._act(db, controller, decision, report)

    async def _stop(
        self, db: Database, controller: InstanceController, instance_id: str, occurrence_id: str, report: TickReport
    ) -> None:
        try:
            await controller.stop(instance_id, occurrence_id)
            report.stopped.append(occurrence_id)
        except PlatformError as exc:  # e.g. the instance is gone: nothing left to stop
            log.warning("stopping %s for %s: %s", instance_id, occurrence_id, exc.message)
            report.stopped.append(occurrence_id)
        except Exception as exc:  # noqa: BLE001 - retried on the next pass
            log.warning("stopping %s for %s failed; will retry: %s", instance_id, occurrence_id, exc)
            await asyncio.to_thread(ledger.stop_failed, db, occurrence_id, f"{type(exc).__name__}: {exc}")

    async def _act(
        self, db: Database, controller: InstanceController, decision: ledger.StartDecision, report: TickReport
    ) -> None:
        if not decision.start:
            log.info("occurrence %s of %s skipped: %s", decision.occurrence_id, decision.instance_id, decision.reason)
            report.skipped.append(decision.occurrence_id)
            return
        for old in decision.stop_first:
            await self._stop(db, controller, decision.instance_id, old, report)
        try:
            await controller.start(decision.instance_id, decision.occurrence_id, decision.until)
        except Exception as exc:  # noqa: BLE001 - recorded on the occurrence, visible in the API
            message = exc.message if isinstance(exc, PlatformError) else f"{type(exc).__name__}: {exc}"
            log.warning("starting %s for %s failed: %s", decision.instance_id, decision.occurrence_id, message)
            await asyncio.to_thread(ledger.mark_failed, db, decision.occurrence_id, f"start failed: {message}")
            report.failed.append(decision.occurrence_id)
            return
        await asyncio.to_thread(ledger.confirm_started, db, decision.occurrence_id)
        report.started.append(decision.occurrence_id)
        # Deleted or replaced while we were starting it: undo, or the instance would run with no one to stop it.
        if await asyncio.to_thread(ledger.cancelled_meanwhile, db, decision.occurrence_id):
            with contextlib.suppress(Exception):
                await controller.stop(decision.instance_id, decision.occurrence_id)
