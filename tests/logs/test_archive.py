"""Daily archives in the object store: round trip, idempotence, completeness, pruning, API download."""

from __future__ import annotations

import gzip
import io
import json
from datetime import UTC, date, datetime, timedelta

import pytest

from aiot.logs import archive
from aiot.logs.collector import seconds_until_next_run
from aiot.timeutil import utcnow
from tests.logs.conftest import LogsPlatform

BACKENDS = pytest.mark.parametrize("logs_platform", ["nats", "azure"], indirect=True)
"""Archives on both blob stores: the NATS object store (default) and Azure Blob storage (Azurite)."""


@BACKENDS
async def test_archive_round_trip_and_idempotence(logs_platform: LogsPlatform) -> None:
    p = logs_platform
    wid = p.users["wl_carol"]
    sent = [f"line {i}: temperature {20 + i}" for i in range(30)]
    for i, message in enumerate(sent):
        await p.publish(
            f"aiot.logs.{wid}",
            {"ts": utcnow().isoformat(), "level": "INFO" if i % 3 else "ERROR", "workload_id": wid, "message": message},
        )
    await p.publish("aiot.logs.platform.api", {"message": "api started"})
    await p.publish(f"aiot.logs.{wid}", b"\x00\xff not a record")
    today = utcnow().date()

    first = await p.collector.archive_day(today)
    assert first is not None and first.records == 31 and first.skipped == 1 and not first.complete
    data = await archive.read_archive(p.collector.store, today)
    records = archive.decode_archive(data)
    assert [r.message for r in records] == [*sent, "api started"]
    assert records[0].workload_id == wid and records[0].level == "ERROR" and records[-1].service == "api"
    lines = [json.loads(line) for line in gzip.decompress(data).decode().splitlines()]
    assert [line["seq"] for line in lines] == sorted(line["seq"] for line in lines)

    again = await p.collector.archive_day(today)  # incomplete day: re-archived, same bytes
    assert again is not None and again.sha256 == first.sha256
    assert await archive.read_archive(p.collector.store, today) == data

    # Once the day is over (plus grace) the archive is complete, and a complete one is skipped afterwards.
    after = (
        datetime.combine(today + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
        + archive.GRACE
        + timedelta(seconds=1)
    )
    done = await archive.archive_day(p.bus.js, p.collector.store, today, now=after)
    assert done is not None and done.complete and done.sha256 == first.sha256
    skipped = await archive.archive_day(p.bus.js, p.collector.store, today, now=after + timedelta(hours=1))
    assert skipped is not None and skipped.archived_at == done.archived_at


@BACKENDS
async def test_api_lists_and_downloads_archives(logs_platform: LogsPlatform) -> None:
    p = logs_platform
    await p.publish("aiot.logs.platform.api", {"message": "hello archive"})
    today = utcnow().date()
    await p.collector.archive_day(today)
    listing = await p.client.get("/api/v1/logs/archives", headers=p.headers("admin1"))
    assert listing.status_code == 200
    assert [a["day"] for a in listing.json()] == [today.isoformat()] and listing.json()[0]["records"] == 1
    download = await p.client.get(f"/api/v1/logs/archives/{today.isoformat()}", headers=p.headers("admin1"))
    assert download.status_code == 200 and download.headers["content-type"] == "application/gzip"
    assert [r.message for r in archive.decode_archive(download.content)] == ["hello archive"]
    assert (await p.client.get("/api/v1/logs/archives", headers=p.headers("alice"))).status_code == 403
    missing = await p.client.get("/api/v1/logs/archives/1999-01-01", headers=p.headers("admin1"))
    assert missing.status_code == 404
    bad = await p.client.get("/api/v1/logs/archives/yesterday", headers=p.headers("admin1"))
    assert bad.status_code == 422 and bad.json()["error"]["details"]["field"] == "day"


@BACKENDS
async def test_old_archives_are_pruned_and_catch_up_runs(logs_platform: LogsPlatform) -> None:
    p = logs_platform
    store = p.collector.store
    await store.put(archive.archive_name(date(2000, 1, 1)), io.BytesIO(b"old"))
    await store.put("not-an-archive.txt", io.BytesIO(b"x"))
    await p.publish("aiot.logs.platform.api", {"message": "today"})
    # catch_up archives only finished days: today's records are not archived yet, the 2000 archive goes.
    assert await p.collector.catch_up() == []
    assert [a.day for a in await archive.list_archives(store)] == []
    assert p.collector.health().state.value == "ok"


def test_next_run_is_shortly_after_midnight() -> None:
    assert seconds_until_next_run(datetime(2024, 5, 1, 23, 0, tzinfo=UTC)) == 3600 + 300
    assert seconds_until_next_run(datetime(2024, 5, 1, 0, 2, tzinfo=UTC)) == 180
    assert seconds_until_next_run(datetime(2024, 5, 1, 0, 6, tzinfo=UTC)) == 24 * 3600 - 60
