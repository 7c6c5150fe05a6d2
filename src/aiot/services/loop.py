"""`LoopService`: the one shape of most platform services, a pass repeated on a timer or when woken.

The deployer, the apps watcher, the scheduler, the notifier, the autoscaler, the log collector and the NATS
user sync each had their own copy of the same loop (start a task, wait on an event with a timeout, run one pass,
turn an exception into `degraded` health, cancel on stop). Here it is once, as Home Assistant's
`DataUpdateCoordinator` is for its integrations: a subclass says what one pass does (`run_pass`), how long to
wait before the next (`interval`, or `next_delay()` when that varies), which NATS subject wakes it from other
processes (`wake_subject`), and what its health says when all is well.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import abstractmethod
from typing import Any

from aiot.services.contract import HealthState, PlatformService, ServiceContext, ServiceHealth

log = logging.getLogger(__name__)


class LoopService(PlatformService):
    """Runs `run_pass` at start, then again `interval` seconds after each pass or at once on `wake()`.

    A pass that raises is logged and shown as `degraded` health until a later pass succeeds; the loop never
    ends on its own. `stop()` cancels a pass in progress (bounded wait) and unsubscribes."""

    interval: float = 1.0
    wake_subject: str | None = None
    stop_timeout: float = 5.0
    pass_at_start: bool = True  # False: `on_start` did the first pass's work; the loop waits first

    def __init__(self) -> None:
        self._ctx: ServiceContext | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._sub: Any = None
        self._error = ""
        self.passes = 0

    @property
    def ctx(self) -> ServiceContext:
        assert self._ctx is not None, f"{self.name}: used before start()"
        return self._ctx

    async def start(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        self._wake = asyncio.Event()
        await self.on_start(ctx)
        if not self.enabled(ctx):
            return
        if self.wake_subject and ctx.bus is not None:

            async def on_wake(_msg: object) -> None:
                self._wake.set()

            self._sub = await ctx.bus.subscribe(self.wake_subject, on_wake)
        self._task = asyncio.create_task(self._loop(), name=self.name)

    async def on_start(self, ctx: ServiceContext) -> None:
        """Set-up before the first pass (override)."""

    def enabled(self, ctx: ServiceContext) -> bool:
        """False: this process runs no loop (a feature switched off in settings); health says why."""
        return True

    async def on_stop(self) -> None:
        """Clean-up after the loop ended (override)."""

    def wake(self) -> None:
        """Run the next pass now (same process); other processes publish on `wake_subject`."""
        self._wake.set()

    async def next_delay(self) -> float:
        """Seconds to wait after a pass (override when it varies, e.g. until the next due time)."""
        return self.interval

    @abstractmethod
    async def run_pass(self) -> None:
        """One pass of the service's work."""

    async def _loop(self) -> None:
        if not self.pass_at_start:
            await self._wait(self.interval)
        while True:
            self._wake.clear()  # a wake that arrives during the pass makes the next one start at once
            try:
                await self.run_pass()
                self._error = ""
                self.passes += 1
            except Exception as exc:  # noqa: BLE001 - the loop must survive; the next pass retries
                self._error = self.describe_error(exc)
                log.exception("%s: pass failed", self.name)
            try:
                delay = await self.next_delay()
            except Exception:  # noqa: BLE001
                delay = self.interval
            await self._wait(delay)

    async def _wait(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, delay))

    def describe_error(self, exc: Exception) -> str:
        """What health shows for a failed pass (override to add context)."""
        return f"{type(exc).__name__}: {exc}"

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=self.stop_timeout)
            self._task = None
        await self.on_stop()

    def health(self) -> ServiceHealth:
        if self._task is None:
            return ServiceHealth(HealthState.stopped)
        if self._error:
            return ServiceHealth(HealthState.degraded, self._error, self.health_extra())
        return ServiceHealth(HealthState.ok, self.health_detail(), self.health_extra())

    def health_detail(self) -> str:
        """What `ok` health says (override)."""
        return f"{self.passes} passes"

    def health_extra(self) -> dict[str, Any]:
        """Figures shown with the health (override)."""
        return {"passes": self.passes}
