"""`LogCollectorService` ("log-collector"): owns the `AIOT_LOGS` stream and writes the daily archives.

On start it makes sure the stream exists (retention `log_retention_days`) and archives every finished day
still in the stream that has no complete archive yet (the platform may have been down at midnight); then it
wakes shortly after each UTC midnight (`archive.GRACE`) to archive yesterday, and deletes archives older than
`log_archive_days`. Archiving is idempotent, so two replicas doing the same day is harmless.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

from aiot.logs import archive
from aiot.logs.stream import ensure_logs_stream, first_time
from aiot.services.base import HealthState, PlatformService, ServiceHealth
from aiot.timeutil import utcnow

if TYPE_CHECKING:
    from nats.js.object_store import ObjectStore

    from aiot.bus.client import Bus
    from aiot.services.context import ServiceContext

log = logging.getLogger(__name__)

RETRY_AFTER_ERROR = 300.0


class LogCollectorService(PlatformService):
    name = "log-collector"

    def __init__(self) -> None:
        self._ctx: ServiceContext | None = None
        self._store: ObjectStore | None = None
        self._task: asyncio.Task[None] | None = None
        self._error = ""
        self.archived: list[date] = []
        self.last_run: datetime | None = None

    async def start(self, ctx: ServiceContext) -> None:
        if ctx.bus is None:
            raise RuntimeError("log-collector needs the NATS bus (ServiceContext.bus is None)")
        self._ctx = ctx
        await ensure_logs_stream(ctx.bus, ctx.settings, force=True)
        self._store = await ctx.bus.object_store(archive.BUCKET)
        self._task = asyncio.create_task(self._run(), name="log-collector")

    async def stop(self) -> None:
        """Cancel the archiving task and give it 5 s: a NATS call deep in it may not honour the cancellation at
        once (seen in the suite: a stop that waited minutes), and stopping must not wait on it."""
        if self._task is not None:
            self._task.cancel()
            done, _ = await asyncio.wait({self._task}, timeout=5)
            if not done:
                log.warning("log-collector: archiving did not stop within 5 s; leaving it")
            self._task = None

    def health(self) -> ServiceHealth:
        if self._task is None:
            return ServiceHealth(HealthState.stopped)
        extra = {"archived_days": len(self.archived),
                 "last_run": self.last_run.isoformat() if self.last_run else None}
        if self._error:
            return ServiceHealth(HealthState.degraded, self._error, extra)
        last = self.archived[-1].isoformat() if self.archived else "none yet"
        return ServiceHealth(HealthState.ok, f"log stream ready; last archived day: {last}", extra)

    @property
    def bus(self) -> Bus:
        assert self._ctx is not None and self._ctx.bus is not None, "log-collector not started"
        return self._ctx.bus

    @property
    def store(self) -> ObjectStore:
        assert self._store is not None, "log-collector not started"
        return self._store

    async def archive_day(self, day: date, *, force: bool = False) -> archive.ArchiveInfo | None:
        """Archive one UTC day now (tests, and an admin re-running a day)."""
        info = await archive.archive_day(self.bus.js, self.store, day, force=force)
        if info is not None and day not in self.archived:
            self.archived.append(day)
            self.archived.sort()
        return info

    async def catch_up(self, now: datetime | None = None) -> list[date]:
        """Archive every finished day still in the stream without a complete archive; prune old archives."""
        assert self._ctx is not None
        now = now or utcnow()
        oldest = await first_time(self.bus.js)
        done: list[date] = []
        if oldest is not None:
            day = oldest.date()
            yesterday = (now - archive.GRACE).date() - timedelta(days=1)
            while day <= yesterday:
                existing = await archive.archive_info(self.store, day)
                if (existing is None or not existing.complete) and await self.archive_day(day) is not None:
                    done.append(day)
                day += timedelta(days=1)
        await archive.prune_archives(self.store, self._ctx.settings.log_archive_days, now.date())
        self.last_run = now
        return done

    async def _run(self) -> None:
        while True:
            delay = RETRY_AFTER_ERROR
            try:
                await self.catch_up()
                self._error = ""
                delay = seconds_until_next_run(utcnow())
            except Exception as exc:  # noqa: BLE001 - NATS trouble: report it, try again later
                self._error = f"archiving failed: {type(exc).__name__}: {exc}"
                log.exception("log-collector: archiving failed; retrying in %.0fs", RETRY_AFTER_ERROR)
            await asyncio.sleep(delay)


def seconds_until_next_run(now: datetime) -> float:
    """Seconds from `now` until the next UTC midnight plus `archive.GRACE` (late records included)."""
    tomorrow = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), tzinfo=now.tzinfo)
    target = tomorrow + archive.GRACE
    if now < target - timedelta(days=1):  # before today's run time (00:00-00:05): run today
        target -= timedelta(days=1)
    return max((target - now).total_seconds(), 1.0)
