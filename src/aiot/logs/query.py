"""Search the log stream (newest first, with a limit) and tail it live, by service, workload, app instance,
minimum level, time range and text.

Why backward windows: "the last 200 lines mentioning X" should not read a week of logs. Without `since`, the
query reads the newest slice of the stream first (15 minutes, then doubling further back) and stops as soon as
it has `limit` matches or reaches the oldest record. Each slice is read by a server-side filtered consumer that
starts at a time (see `stream.read_range`); the server narrows by subject, this module by the record's fields.

Time-range filters apply to the record's own `ts` (what people see). Slices are cut on the server's storage
time: `since` starts the read at `since - CLOCK_SKEW` (a record cannot be stored before it was written, give or
take clock skew), but `until` does not end it, because a record may be *stored* long after its `ts` (the SDK
buffers records while NATS is unreachable and sends them later).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from aiot.logs.records import (
    LEVELS,
    SUBJECT_PREFIX,
    SUBJECTS,
    LogRecord,
    platform_subject,
    try_parse,
    workload_subject,
)
from aiot.logs.stream import first_time, read_range
from aiot.timeutil import utcnow

if TYPE_CHECKING:
    from nats.aio.subscription import Subscription
    from nats.js import JetStreamContext

    from aiot.bus.client import Bus

CLOCK_SKEW = timedelta(minutes=5)
FIRST_WINDOW = timedelta(minutes=15)
MAX_SUBJECT_FILTERS = 64  # beyond this, read all workload subjects and filter here
DEFAULT_MAX_SCAN = 500_000
ALL_WORKLOADS = f"{SUBJECT_PREFIX}.*"  # one token after aiot.logs: workload subjects only


@dataclass(frozen=True)
class LogFilter:
    """What to keep. `workload_ids=None` means any workload; an empty tuple means none (nothing visible)."""

    service: str | None = None
    workload_ids: tuple[str, ...] | None = None
    app_instance_id: str | None = None
    min_level: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    text: str | None = None

    def __post_init__(self) -> None:
        if self.min_level is not None and self.min_level not in LEVELS:
            raise ValueError(f"min_level must be one of {', '.join(LEVELS)}, got {self.min_level!r}")
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"{name} must be an aware datetime (UTC)")
        if self.since and self.until and self.since > self.until:
            raise ValueError("since must not be after until")

    @property
    def empty(self) -> bool:
        return self.workload_ids is not None and not self.workload_ids

    def subjects(self) -> list[str]:
        """The narrowest subject filters the server can apply for this filter."""
        if self.workload_ids is not None:
            if len(self.workload_ids) <= MAX_SUBJECT_FILTERS:
                return [workload_subject(w) for w in sorted(set(self.workload_ids))]
            return [ALL_WORKLOADS]
        if self.service == "workload":
            return [ALL_WORKLOADS]
        if self.service:
            return [platform_subject(self.service)]
        return [SUBJECTS]

    def matches(self, record: LogRecord, *, check_time: bool = True) -> bool:
        if self.service and record.service != self.service:
            return False
        if self.workload_ids is not None and record.workload_id not in self.workload_ids:
            return False
        if self.app_instance_id and record.app_instance_id != self.app_instance_id:
            return False
        if self.min_level and record.levelno < LEVELS[self.min_level]:
            return False
        if check_time and self.since and record.ts < self.since:
            return False
        if check_time and self.until and record.ts > self.until:
            return False
        if self.text:
            needle = self.text.casefold()
            if needle not in record.message.casefold() and needle not in (record.logger or "").casefold():
                return False
        return True


@dataclass(frozen=True)
class FoundLog:
    seq: int | None
    subject: str
    record: LogRecord

    def to_json(self) -> dict[str, Any]:
        return {**self.record.to_json(), "seq": self.seq}


@dataclass
class QueryResult:
    records: list[FoundLog] = field(default_factory=list)  # newest first
    scanned: int = 0
    truncated: bool = False  # stopped at max_scan before covering the whole range


async def query_logs(
    js: JetStreamContext,
    flt: LogFilter,
    *,
    limit: int = 200,
    max_scan: int = DEFAULT_MAX_SCAN,
    now: datetime | None = None,
) -> QueryResult:
    """The newest `limit` records matching `flt`, newest first (by arrival in the stream)."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    result = QueryResult()
    if flt.empty:
        return result
    subjects = flt.subjects()
    if flt.since is not None:
        await _scan(js, flt, subjects, flt.since - CLOCK_SKEW, None, limit, max_scan, result)
        return result
    oldest = await first_time(js)
    if oldest is None:
        return result
    window_end = (now or utcnow()) + CLOCK_SKEW  # the server clock may be a little ahead
    span = FIRST_WINDOW
    while len(result.records) < limit and not result.truncated:
        window_start = window_end - span
        if window_start <= oldest:
            await _scan(js, flt, subjects, None, window_end, limit, max_scan, result)
            break
        await _scan(js, flt, subjects, window_start, window_end, limit, max_scan, result)
        window_end, span = window_start, span * 2
    return result


async def _scan(
    js: JetStreamContext,
    flt: LogFilter,
    subjects: Sequence[str],
    start: datetime | None,
    stop: datetime | None,
    limit: int,
    max_scan: int,
    result: QueryResult,
) -> None:
    """Read one slice oldest-first, keep its newest `limit - found` matches, append them newest first."""
    want = limit - len(result.records)
    kept: deque[FoundLog] = deque(maxlen=want)
    stream = read_range(js, subjects, start=start, stop=stop)
    try:
        async for stored in stream:
            result.scanned += 1
            record = try_parse(stored.data, subject=stored.subject, received=stored.time)
            if record is not None and flt.matches(record):
                kept.append(FoundLog(seq=stored.seq, subject=stored.subject, record=record))
            if result.scanned >= max_scan:
                result.truncated = True
                break
    finally:
        await stream.aclose()
    result.records.extend(reversed(kept))


# ---------------------------------------------------------------------- live tail


class LogTail:
    """New records matching a filter, as they are published (core NATS subscriptions: no replay, no lag).

    Use `async with LogTail(bus, flt) as tail:` then `await tail.next(timeout)` or `async for record in tail`.
    A slow reader loses the oldest waiting records (bounded queue, counted in `dropped`), never the publisher.
    """

    def __init__(self, bus: Bus, flt: LogFilter, *, queue_size: int = 1000) -> None:
        self.bus = bus
        self.filter = flt
        self.dropped = 0
        self._queue: asyncio.Queue[LogRecord] = asyncio.Queue(maxsize=queue_size)
        self._subs: list[Subscription] = []

    async def __aenter__(self) -> LogTail:
        if self.filter.empty:
            return self

        async def on_msg(msg: Any) -> None:
            record = try_parse(msg.data, subject=msg.subject, received=utcnow())
            if record is None or not self.filter.matches(record, check_time=False):
                return
            if self.filter.until and record.ts > self.filter.until:
                return
            if self._queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    self._queue.get_nowait()
                    self.dropped += 1
            self._queue.put_nowait(record)

        for subject in self.filter.subjects():
            self._subs.append(await self.bus.subscribe(subject, on_msg))
        await self.bus.flush()  # subscriptions are live on the server when this returns
        return self

    async def __aexit__(self, *exc: object) -> None:
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()

    async def next(self, timeout: float | None = None) -> LogRecord | None:  # noqa: ASYNC109 - poll with a bound
        """The next matching record, or None after `timeout` seconds without one."""
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None

    async def __aiter__(self) -> AsyncIterator[LogRecord]:
        while True:
            yield await self._queue.get()
