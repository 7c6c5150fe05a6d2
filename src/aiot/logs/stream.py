"""The `AIOT_LOGS` JetStream stream: creating it, and reading a time slice of it with an ephemeral consumer.

Reading goes through a pull consumer that starts at a time (`DeliverPolicy.BY_START_TIME`, so the server seeks
instead of us skipping) and filters by subject on the server (`aiot.logs.<workload_id>` when the caller knows
the workloads), with no acks and in memory: it is a read, not a work queue. It stops at the caller's end time
or when nothing is pending, so a query never waits for messages that will not come.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from nats.js import api as js_api
from nats.js.errors import APIError, NotFoundError

from aiot.bus.client import is_storage_full, reservation_failed
from aiot.logs.records import STREAM, SUBJECTS

if TYPE_CHECKING:
    from nats.js import JetStreamContext

    from aiot.bus.client import Bus
    from aiot.settings import Settings

_ensured: weakref.WeakSet[Bus] = weakref.WeakSet()


async def ensure_logs_stream(bus: Bus, settings: Settings, *, force: bool = False) -> None:
    """Create or update `AIOT_LOGS` (retention `log_retention_days`); once per connection unless `force`."""
    if bus in _ensured and not force:
        return
    if settings.log_retention_days <= 0:
        raise ValueError(f"log_retention_days must be > 0, got {settings.log_retention_days}")
    mb = settings.log_stream_max_mb
    try:
        await bus.ensure_stream(
            STREAM, [SUBJECTS], max_age=settings.log_retention_days * 86400.0, max_bytes=mb * 1024**2 if mb else None
        )
    except APIError as exc:
        if is_storage_full(exc):
            raise reservation_failed(exc, f"the log stream {STREAM}", "log_stream_max_mb", mb) from exc
        raise
    _ensured.add(bus)


@dataclass(frozen=True)
class StoredMessage:
    """One message read back from the stream, with the server's sequence and time (trusted, unlike `ts`)."""

    seq: int
    subject: str
    time: datetime
    data: bytes


async def first_time(js: JetStreamContext) -> datetime | None:
    """Time of the oldest record still in the stream (None when the stream is empty or missing)."""
    try:
        info = await js.stream_info(STREAM)
    except NotFoundError:
        return None
    if not info.state.messages:
        return None
    first = await js.get_msg(STREAM, info.state.first_seq)
    return _stream_time(first)


def _stream_time(raw: js_api.RawStreamMsg) -> datetime | None:
    value = getattr(raw, "time", None)
    if isinstance(value, str) and value:
        return js_api.Base._parse_utc_iso(value)
    return value if isinstance(value, datetime) else None


async def read_range(
    js: JetStreamContext,
    subjects: Sequence[str],
    *,
    start: datetime | None,
    stop: datetime | None = None,
    batch: int = 500,
) -> AsyncIterator[StoredMessage]:
    """Messages on `subjects` stored at `start` or later (all when None), oldest first, until `stop` (exclusive)
    or the current end of the stream. Close the iterator (or finish it) to delete the consumer."""
    config = js_api.ConsumerConfig(
        ack_policy=js_api.AckPolicy.NONE, mem_storage=True, inactive_threshold=30.0, max_ack_pending=-1
    )
    if len(subjects) == 1:
        config.filter_subject = subjects[0]
    else:
        config.filter_subjects = list(subjects)
    if start is not None:
        config.deliver_policy = js_api.DeliverPolicy.BY_START_TIME
        config.opt_start_time = start
    else:
        config.deliver_policy = js_api.DeliverPolicy.ALL
    try:
        psub = await js.pull_subscribe(subjects[0], durable=None, stream=STREAM, config=config)
    except NotFoundError:
        return
    consumer_name = None
    try:
        info = await psub.consumer_info()
        consumer_name = info.name
        remaining = info.num_pending
        while remaining > 0:
            msgs = await psub.fetch(batch=min(batch, remaining), timeout=5.0)
            for msg in msgs:
                meta = msg.metadata
                if stop is not None and meta.timestamp >= stop:
                    return
                yield StoredMessage(seq=meta.sequence.stream, subject=msg.subject, time=meta.timestamp, data=msg.data)
                remaining = meta.num_pending
                if remaining == 0:
                    return
    finally:
        with contextlib.suppress(Exception):
            await psub.unsubscribe()
        if consumer_name:
            with contextlib.suppress(Exception):
                await js.delete_consumer(STREAM, consumer_name)
