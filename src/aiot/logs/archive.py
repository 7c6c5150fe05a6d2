"""Daily log archives in the blob store (container `log-archives`): one gzipped JSON-lines object per UTC day.

A day is the records the stream *stored* between 00:00 and 24:00 UTC (server time: it cannot be forged by a
producer's clock and only moves forward, so once the day is over plus `GRACE`, no record can join it). Lines
are the normalised records plus their stream `seq` and `subject`, serialised with sorted keys and gzipped with
a fixed header (mtime 0): archiving the same day twice yields byte-identical objects, so re-running is safe.
An archive is never replaced by one with fewer records (the stream may already have dropped part of the day).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import tempfile
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from aiot.blobs.base import BlobInfo
from aiot.logs.records import SUBJECTS, LogRecord, try_parse
from aiot.logs.stream import read_range
from aiot.timeutil import utcnow

if TYPE_CHECKING:
    from nats.js import JetStreamContext

    from aiot.blobs.base import BlobStore

log = logging.getLogger(__name__)

SUFFIX = ".jsonl.gz"
GRACE = timedelta(minutes=5)  # a day's archive made this long after midnight is complete


def archive_name(day: date) -> str:
    return f"{day.isoformat()}{SUFFIX}"


def parse_day(text: str) -> date:
    """'2024-05-01' (or its archive name) -> date; ValueError saying what is expected otherwise."""
    value = text[: -len(SUFFIX)] if text.endswith(SUFFIX) else text
    try:
        return date.fromisoformat(value) if len(value) == 10 else _bad_day(text)
    except ValueError:
        return _bad_day(text)


def _bad_day(text: str) -> date:
    raise ValueError(f"{text!r} is not a day; expected YYYY-MM-DD (UTC)")


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(0), tzinfo=UTC)
    return start, start + timedelta(days=1)


@dataclass(frozen=True)
class ArchiveInfo:
    day: date
    name: str
    size: int
    records: int
    skipped: int  # messages of the day that were not log records (garbage)
    complete: bool
    archived_at: str
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "name": self.name,
            "size": self.size,
            "records": self.records,
            "skipped": self.skipped,
            "complete": self.complete,
            "archived_at": self.archived_at,
            "sha256": self.sha256,
        }


def _int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0


def _info_from_blob(blob: BlobInfo) -> ArchiveInfo | None:
    try:
        day = parse_day(blob.name)
    except ValueError:
        return None
    meta = blob.metadata
    return ArchiveInfo(
        day=day,
        name=blob.name,
        size=blob.size,
        records=_int(meta.get("records")),
        skipped=_int(meta.get("skipped")),
        complete=meta.get("complete", "").lower() == "true",
        archived_at=meta.get("archived_at", ""),
        sha256=meta.get("sha256", ""),
    )


async def archive_info(store: BlobStore, day: date) -> ArchiveInfo | None:
    blob = await store.info(archive_name(day))
    return None if blob is None else _info_from_blob(blob)


async def list_archives(store: BlobStore) -> list[ArchiveInfo]:
    """Every archive, oldest day first."""
    infos = [info for blob in await store.list() if (info := _info_from_blob(blob)) is not None]
    return sorted(infos, key=lambda i: i.day)


async def read_archive(store: BlobStore, day: date) -> bytes:
    """The gzipped JSON-lines bytes of a day (raises `BlobNotFound` when there is none)."""
    with tempfile.TemporaryFile() as sink:
        await store.get_into(archive_name(day), sink)
        sink.seek(0)
        return sink.read()


def decode_archive(data: bytes) -> list[LogRecord]:
    """The records of an archive, in stream order."""
    lines = gzip.decompress(data).decode("utf-8").splitlines()
    out = []
    for line in lines:
        body = json.loads(line)
        body.pop("seq", None)
        body.pop("subject", None)
        out.append(LogRecord.model_validate(body))
    return out


async def archive_day(
    js: JetStreamContext, store: BlobStore, day: date, *, force: bool = False, now: datetime | None = None
) -> ArchiveInfo | None:
    """Write the archive of `day` from the stream; None when the stream holds nothing of that day.

    Skips (returns the existing info) when a complete archive exists, unless `force`; never replaces an
    archive with one holding fewer records.
    """
    now = now or utcnow()
    start, end = day_bounds(day)
    if start > now:
        raise ValueError(f"cannot archive {day.isoformat()}: the day has not started yet")
    existing = await archive_info(store, day)
    if existing is not None and existing.complete and not force:
        return existing
    records = skipped = 0
    digest = hashlib.sha256()
    with tempfile.TemporaryFile() as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
            async for stored in read_range(js, [SUBJECTS], start=start, stop=end):
                record = try_parse(stored.data, subject=stored.subject, received=stored.time)
                if record is None:
                    skipped += 1
                    continue
                line = (
                    json.dumps(
                        {**record.to_json(), "seq": stored.seq, "subject": stored.subject},
                        sort_keys=True,
                        separators=(",", ":"),
                        ensure_ascii=False,
                    )
                    + "\n"
                )
                gz.write(line.encode("utf-8"))
                records += 1
        if records == 0:
            return existing
        if existing is not None and existing.records > records:
            log.warning(
                "log archive %s keeps its %d records: the stream now holds only %d of that day",
                existing.name,
                existing.records,
                records,
            )
            return existing
        raw.seek(0)
        for chunk in iter(lambda: raw.read(1 << 20), b""):
            digest.update(chunk)
        raw.seek(0)
        meta = {
            "records": str(records),
            "skipped": str(skipped),
            "complete": str(now >= end + GRACE).lower(),
            "archived_at": now.isoformat(),
            "sha256": digest.hexdigest(),
        }
        blob = await store.put(archive_name(day), raw, metadata=meta)
    log.info("archived %d log records of %s (%d bytes)", records, day.isoformat(), blob.size)
    return _info_from_blob(blob)


async def prune_archives(store: BlobStore, keep_days: float, today: date | None = None) -> list[date]:
    """Delete archives of days older than `keep_days` before `today`; returns the days deleted."""
    today = today or utcnow().date()
    oldest_kept = today - timedelta(days=keep_days)
    deleted = []
    for info in await list_archives(store):
        if info.day < oldest_kept:
            await store.delete(info.name)
            deleted.append(info.day)
    return deleted
