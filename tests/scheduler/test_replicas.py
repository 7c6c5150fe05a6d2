"""Several scheduler replicas against one PostgreSQL database: every occurrence is materialised once, started
once and stopped once, however their passes interleave. Each replica has its own engine (its own connections),
and its database work runs in worker threads, so the replicas really race."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from aiot.scheduler import ledger
from aiot.store.engine import Database
from aiot.store.scheduling import Occurrence, OccurrenceState
from tests.scheduler.conftest import (
    RecordingController,
    SimClock,
    add_instances,
    add_schedule,
    make_service,
    prepare_database,
)

pytestmark = pytest.mark.postgres
DAY = datetime(2026, 12, 8, tzinfo=UTC)
SCHEDULES = 200


def _spec(times: list[str]) -> dict:
    return {
        "timezone": "Europe/Berlin",
        "start_date": "2026-12-08",
        "end_date": "2026-12-08",
        "times": times,
        "duration_minutes": 1,
    }


@pytest.mark.slow
async def test_two_replicas_fire_each_occurrence_exactly_once(postgres_url: str) -> None:
    db_a = prepare_database(postgres_url)
    db_b = Database(postgres_url)
    try:
        clock = SimClock(DAY + timedelta(hours=6, minutes=59, seconds=50))  # 07:59:50 in Berlin
        controller = RecordingController(clock)
        instances = add_instances(db_a, SCHEDULES)
        for instance in instances:  # two one-minute runs each: 08:00 and 08:01 local -> 400 occurrences
            add_schedule(db_a, instance, _spec(["08:00", "08:01"]), active_since=clock.now)
        horizon = timedelta(hours=2)
        replicas = [
            make_service(db, controller, clock, horizon=horizon, replica=name)
            for db, name in ((db_a, "replica-a"), (db_b, "replica-b"))
        ]
        end = DAY + timedelta(hours=7, minutes=2, seconds=10)
        while clock.now < end:
            await asyncio.gather(*(r.tick() for r in replicas))
            clock.advance(seconds=3)

        expected = SCHEDULES * 2
        starts = Counter(c.occurrence_id for c in controller.of("start"))
        stops = Counter(c.occurrence_id for c in controller.of("stop"))
        assert len(starts) == expected and set(starts.values()) == {1}, starts.most_common(3)
        assert len(stops) == expected and set(stops.values()) == {1}, stops.most_common(3)
        assert set(starts) == set(stops)
        with db_a.session() as session:
            rows = list(session.scalars(select(Occurrence)))
        assert len(rows) == expected
        assert {r.state for r in rows} == {OccurrenceState.stopped}
        assert {r.id for r in rows} == set(starts)
        fired_by = Counter(r.fired_by for r in rows)
        assert set(fired_by) == {"replica-a", "replica-b"}, fired_by  # both really took part
        # every start happened at or after its time and within the 3 s step, never before
        by_id = {r.id: r for r in rows}
        for call in controller.of("start"):
            lateness = call.at - by_id[call.occurrence_id].start_at
            assert timedelta(0) <= lateness < timedelta(seconds=3)
        assert sum(r.totals["started"] for r in replicas) == expected
    finally:
        db_a.dispose()
        db_b.dispose()


def test_concurrent_materialisation_creates_each_occurrence_once(postgres_url: str) -> None:
    setup = prepare_database(postgres_url)
    now = DAY
    for instance in add_instances(setup, 50):
        add_schedule(
            setup, instance, {**_spec(["06:00", "12:00", "18:00"]), "end_date": "2026-12-31"}, active_since=now
        )
    setup.dispose()
    horizon = timedelta(hours=48)  # Dec 8 00:00 - Dec 10 00:00 UTC: 6 runs per schedule
    results: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def replica() -> None:
        db = Database(postgres_url)
        try:
            barrier.wait()
            results.append(ledger.materialise_due(db, now, horizon))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            db.dispose()

    threads = [threading.Thread(target=replica) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert sum(results) == 50 * 6  # the inserts that won add up to the whole set, once
    check = Database(postgres_url)
    try:
        with check.session() as session:
            assert session.scalar(select(func.count()).select_from(Occurrence)) == 50 * 6
            dup = session.scalar(
                select(func.count()).select_from(
                    select(Occurrence.schedule_id, Occurrence.start_at)
                    .group_by(Occurrence.schedule_id, Occurrence.start_at)
                    .having(func.count() > 1)
                    .subquery()
                )
            )
            assert dup == 0
        assert ledger.materialise_due(check, now, horizon) == 0
    finally:
        check.dispose()
