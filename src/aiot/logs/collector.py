"""`LogCollectorService` ("log-collector"): owns the `AIOT_LOGS` stream and writes the daily archives.

On start it makes sure the stream exists (retention `log_retention_days`) and archives every finished day
still in the stream that has no complete archive yet (the platform may have been down at midnight); then it
wakes shortly after each UTC midnight (`archive.GRACE`) to archive yesterday, and deletes archives older than
`log_archive_days`. Archiving is idempotent, so two replicas doing the same day is harmless.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from aiot.blobs.base import LOG_ARCHIVES
from aiot.blobs.factory import open_blob_store
from aiot.logs import archive
from aiot.logs.stream import ensure_logs_stream, first_time
from aiot.services.loop import LoopService
from aiot.timeutil import utcnow

if TYPE_CHECKING:
    from aiot.blobs.base import BlobStore
    from aiot.bus.client import Bus
    from aiot.services.contract import ServiceContext

log = logging.getLogger(__name__)

RETRY_AFTER_ERROR = 300.0


class LogCollectorService(LoopService):
    name = "log-collector"

    def __init__(self) -> None:
        super().__init__()
        self._store: BlobStore | None = None
        self.archived: list[date] = []
        self.last_run: datetime | None = None

    async def on_start(self, ctx: ServiceContext) -> None:
        if ctx.bus is None:
            raise RuntimeError("log-collector needs the NATS bus (ServiceContext.bus is None)")
        await ensure_logs_stream(ctx.bus, ctx.settings, force=True)
        self._store = open_blob_store(ctx.settings, ctx.bus, LOG_ARCHIVES)

    async def run_pass(self) -> None:
        await self.catch_up()

    async def next_delay(self) -> float:
        """Shortly after the next UTC midnight; RETRY_AFTER_ERROR after a failed pass (NATS trouble)."""
        return RETRY_AFTER_ERROR if self._error else seconds_until_next_run(utcnow())

    def describe_error(self, exc: Exception) -> str:
        return f"archiving failed: {type(exc).__name__}: {exc}"

    def health_extra(self) -> dict[str, Any]:
        return {"archived_days": len(self.archived), "last_run": self.last_run.isoformat() if self.last_run else None}

    def health_detail(self) -> str:
        last = self.archived[-1].isoformat() if self.archived else "none yet"
        return f"log stream ready; last archived day: {last}"

    @property
    def bus(self) -> Bus:
        assert self._ctx is not None and self._ctx.bus is not None, "log-collector not started"
        return self._ctx.bus

    @property
    def store(self) -> BlobStore:
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


def seconds_until_next_run(now: datetime) -> float:
    """Seconds from `now` until the next UTC midnight plus `archive.GRACE` (late records included)."""
    tomorrow = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), tzinfo=now.tzinfo)
    target = tomorrow + archive.GRACE
    if now < target - timedelta(days=1):  # before today's run time (00:00-00:05): run today
        target -= timedelta(days=1)
    return max((target - now).total_seconds(), 1.0)
