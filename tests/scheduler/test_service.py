"""The scheduler loop on a real SQLite database with a simulated clock: materialising, firing on time, stopping
at the end, late starts after an outage, overlap policies, failures; plus the real loop with a fast clock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from aiot.scheduler import ledger
from aiot.store.engine import Database
from aiot.store.scheduling import Occurrence, OccurrenceState, OverlapPolicy, Schedule
from tests.scheduler.conftest import RecordingController, SimClock, add_instances, add_schedule, make_service

DAY = datetime(2026, 12, 7, tzinfo=UTC)  # a Monday


def utc(hour: int, minute: int = 0, second: int = 0, day: int = 0) -> datetime:
    return DAY + timedelta(days=day, hours=hour, minutes=minute, seconds=second)


def spec(times: list[str], minutes: int = 60, **more: object) -> dict:
    return {
        "timezone": "UTC",
        "start_date": "2026-12-01",
        "end_date": "2026-12-31",
        "times": times,
        "duration_minutes": minutes,
        **more,
    }


def states(db: Database, schedule_id: str) -> list[tuple[datetime, str, str]]:
    with db.session() as session:
        rows = session.scalars(
            select(Occurrence).where(Occurrence.schedule_id == schedule_id).order_by(Occurrence.start_at)
        )
        return [(o.start_at, o.state.value, o.reason) for o in rows]


async def run_until(service, clock: SimClock, end: datetime, step: timedelta = timedelta(minutes=1)) -> None:
    while clock.now < end:
        clock.advance(seconds=step.total_seconds())
        await service.tick()


async def test_simulated_day_starts_and_stops_each_run_once(sqlite_db: Database) -> None:
    clock = SimClock(utc(0))
    controller = RecordingController(clock)
    [instance] = add_instances(sqlite_db)
    sid = add_schedule(sqlite_db, instance, spec(["08:00", "14:00", "20:00"], minutes=90), active_since=clock.now)
    service = make_service(sqlite_db, controller, clock)
    await run_until(service, clock, utc(23, 59), step=timedelta(minutes=5))
    starts = controller.of("start")
    assert [(c.at, c.until) for c in starts] == [(utc(8), utc(9, 30)), (utc(14), utc(15, 30)), (utc(20), utc(21, 30))]
    assert [c.at for c in controller.of("stop")] == [utc(9, 30), utc(15, 30), utc(21, 30)]
    assert {c.instance_id for c in controller.calls} == {instance}
    assert [c.occurrence_id for c in controller.of("stop")] == [c.occurrence_id for c in starts]
    # materialised two days ahead (horizon 48 h), each once although every tick re-checks
    rows = states(sqlite_db, sid)
    assert [s for _, s, _ in rows[:3]] == ["stopped"] * 3
    assert len(rows) == 3 + 6  # today's three runs and the next two days'


async def test_materialisation_is_idempotent(sqlite_db: Database) -> None:
    clock = SimClock(utc(0))
    [instance] = add_instances(sqlite_db)
    sid = add_schedule(sqlite_db, instance, spec(["08:00", "20:00"]), active_since=clock.now)
    horizon = timedelta(hours=48)
    assert ledger.materialise_due(sqlite_db, clock.now, horizon) == 4
    assert ledger.materialise_due(sqlite_db, clock.now, horizon) == 0  # window already covered
    with sqlite_db.session() as session:  # forget the bookkeeping: the unique constraint still holds
        session.get(Schedule, sid).materialized_until = None
    assert ledger.materialise_due(sqlite_db, clock.now, horizon) == 0
    assert ledger.materialise_due(sqlite_db, clock.now + timedelta(hours=12), horizon) == 1
    assert len(states(sqlite_db, sid)) == 5


async def test_runs_from_before_the_schedule_existed_do_not_fire(sqlite_db: Database) -> None:
    clock = SimClock(utc(10))
    controller = RecordingController(clock)
    [instance] = add_instances(sqlite_db)
    sid = add_schedule(sqlite_db, instance, spec(["06:00", "09:30", "12:00"], minutes=60), active_since=clock.now)
    service = make_service(sqlite_db, controller, clock)
    await service.tick()
    # 06:00-07:00 was over before it existed; 09:30-10:30 is in progress and 30 min late: past the 5 min deadline
    rows = states(sqlite_db, sid)
    assert rows[0][:2] == (utc(9, 30), "skipped") and "late-start deadline" in rows[0][2]
    assert rows[1][:2] == (utc(12), "planned")
    assert controller.calls == []


async def test_platform_down_restart_within_deadline_starts_late(sqlite_db: Database) -> None:
    clock = SimClock(utc(7))
    controller = RecordingController(clock)
    [instance] = add_instances(sqlite_db)
    sid = add_schedule(sqlite_db, instance, spec(["08:00"], minutes=120), deadline=900, active_since=clock.now)
    await make_service(sqlite_db, controller, clock).tick()  # materialised, then the platform goes down
    clock.set(utc(8, 10))  # back up 10 minutes after the start: within the 15 min deadline
    report = await make_service(sqlite_db, controller, clock).tick()
    assert report.started and len(controller.of("start")) == 1
    call = controller.of("start")[0]
    assert call.at == utc(8, 10) and call.until == utc(10)  # late, and it still ends on time
    assert states(sqlite_db, sid)[0][1] == "started"


async def test_platform_down_past_deadline_skips_with_reason(sqlite_db: Database) -> None:
    clock = SimClock(utc(7))
    controller = RecordingController(clock)
    [instance] = add_instances(sqlite_db)
    sid = add_schedule(sqlite_db, instance, spec(["08:00"], minutes=120), deadline=900, active_since=clock.now)
    await make_service(sqlite_db, controller, clock).tick()
    clock.set(utc(8, 16))  # 16 minutes late: past the deadline
    report = await make_service(sqlite_db, controller, clock).tick()
    assert report.skipped and not report.started
    assert controller.calls == []
    start, state, reason = states(sqlite_db, sid)[0]
    assert state == "skipped" and "missed by 960 s" in reason and "900 s" in reason


async def test_platform_down_past_the_run_end_skips(sqlite_db: Database) -> None:
    clock = SimClock(utc(7))
    controller = RecordingController(clock)
    [instance] = add_instances(sqlite_db)
    sid = add_schedule(sqlite_db, instance, spec(["08:00"], minutes=30), deadline=7200, active_since=clock.now)
    await make_service(sqlite_db, controller, clock).tick()
    clock.set(utc(9))  # within the deadline but after the run's end
    await make_service(sqlite_db, controller, clock).tick()
    assert controller.calls == []
    _, state, reason = states(sqlite_db, sid)[0]
    assert state == "skipped" and "end time" in reason


async def test_outage_spanning_a_whole_run_is_recorded(sqlite_db: Database) -> None:
    clock = SimClock(utc(0))
    controller = RecordingController(clock)
    [instance] = add_instances(sqlite_db)
    sid = add_schedule(sqlite_db, instance, spec(["08:00", "18:00"], minutes=30), deadline=600, active_since=clock.now)
    service = make_service(sqlite_db, controller, clock)
    await service.tick()
    clock.set(utc(18, 5))  # down from 00:00 to 18:05: the 08:00 run is lost, the 18:00 one starts late
    await service.tick()
    rows = states(sqlite_db, sid)
    assert [s for _, s, _ in rows[:2]] == ["skipped", "started"]
    assert [c.at for c in controller.of("start")] == [utc(18, 5)]


async def test_overlap_forbid_skips_the_second_start(sqlite_db: Database) -> None:
    clock = SimClock(utc(7))
    controller = RecordingController(clock)
    [instance] = add_instances(sqlite_db)
    long_run = add_schedule(sqlite_db, instance, spec(["08:00"], minutes=180), active_since=clock.now)
    other = add_schedule(
        sqlite_db, instance, spec(["09:00", "12:00"], minutes=30), active_since=clock.now, overlap=OverlapPolicy.forbid
    )
    await run_until(make_service(sqlite_db, controller, clock), clock, utc(12, 45))
    assert [c.at for c in controller.of("start")] == [utc(8), utc(12)]  # 09:00 forbidden; 12:00 after 11:00 end
    rows = states(sqlite_db, other)
    assert rows[0][1] == "skipped" and "overlap forbidden" in rows[0][2]
    long_occ = states(sqlite_db, long_run)[0]
    assert long_occ[1] == "stopped"  # the first run was left alone and ended at 11:00
    assert [c.at for c in controller.of("stop")] == [utc(11), utc(12, 30)]


async def test_overlap_replace_stops_the_old_run_first(sqlite_db: Database) -> None:
    clock = SimClock(utc(7))
    controller = RecordingController(clock)
    [instance] = add_instances(sqlite_db)
    first = add_schedule(sqlite_db, instance, spec(["08:00"], minutes=180), active_since=clock.now)
    add_schedule(
        sqlite_db, instance, spec(["09:00"], minutes=30), active_since=clock.now, overlap=OverlapPolicy.replace
    )
    await run_until(make_service(sqlite_db, controller, clock), clock, utc(12))
    seq = [(c.action, c.at) for c in controller.calls]
    assert seq == [("start", utc(8)), ("stop", utc(9)), ("start", utc(9)), ("stop", utc(9, 30))]
    assert controller.calls[1].occurrence_id == controller.calls[0].occurrence_id  # the old one was stopped
    replaced = states(sqlite_db, first)[0]
    assert replaced[1] == "stopped" and replaced[2].startswith("replaced by occurrence occ_")


async def test_back_to_back_runs_do_not_overlap(sqlite_db: Database) -> None:
    clock = SimClock(utc(7))
    controller = RecordingController(clock)
    [instance] = add_instances(sqlite_db)
    add_schedule(sqlite_db, instance, spec(["08:00", "09:00"], minutes=60), active_since=clock.now)
    await run_until(make_service(sqlite_db, controller, clock), clock, utc(10, 30))
    assert [(c.action, c.at) for c in controller.calls] == [
        ("start", utc(8)),
        ("stop", utc(9)),
        ("start", utc(9)),
        ("stop", utc(10)),
    ]


async def test_failed_start_is_recorded(sqlite_db: Database) -> None:
    clock = SimClock(utc(7, 59))
    controller = RecordingController(clock, fail_starts=True)
    [instance] = add_instances(sqlite_db)
    sid = add_schedule(sqlite_db, instance, spec(["08:00"]), active_since=clock.now)
    service = make_service(sqlite_db, controller, clock)
    await run_until(service, clock, utc(9, 30))
    _, state, reason = states(sqlite_db, sid)[0]
    assert state == "failed" and "node pool exhausted" in reason
    assert controller.calls == []  # nothing to stop at 09:00: it never ran
    assert service.totals["failed"] == 1


async def test_disabled_schedule_fires_nothing(sqlite_db: Database) -> None:
    clock = SimClock(utc(7))
    controller = RecordingController(clock)
    [instance] = add_instances(sqlite_db)
    sid = add_schedule(sqlite_db, instance, spec(["08:00"]), active_since=clock.now)
    service = make_service(sqlite_db, controller, clock)
    await service.tick()
    with sqlite_db.session() as session:  # disabled after materialising (as a race with the API would)
        session.get(Schedule, sid).enabled = False
    await run_until(service, clock, utc(9, 30))
    assert controller.calls == []
    assert states(sqlite_db, sid)[0][1:] == ("skipped", "the schedule is disabled")


async def test_new_york_schedule_fires_at_dst_shifted_utc_times(sqlite_db: Database) -> None:
    clock = SimClock(datetime(2026, 10, 30, tzinfo=UTC))
    controller = RecordingController(clock)
    [instance] = add_instances(sqlite_db)
    add_schedule(
        sqlite_db,
        instance,
        {
            "timezone": "America/New_York",
            "start_date": "2026-10-30",
            "end_date": "2026-11-02",
            "times": ["08:30"],
            "duration_minutes": 10,
        },
        active_since=clock.now,
        now=clock.now,
    )
    await run_until(
        make_service(sqlite_db, controller, clock), clock, datetime(2026, 11, 3, tzinfo=UTC), step=timedelta(minutes=30)
    )
    assert [c.at.strftime("%m-%d %H:%M") for c in controller.of("start")] == [
        "10-30 12:30",
        "10-31 12:30",
        "11-01 13:30",
        "11-02 13:30",
    ]


async def test_real_loop_with_a_fast_clock(sqlite_db: Database) -> None:
    """The service's own loop (start/stop, next-due wake-ups), with time running 200x faster (about 5 s for the
    two runs). At 600x a 0.5 s stall of a loaded machine was 5 minutes: past a run's whole length, so the run was
    rightly skipped and the test failed for the machine, not the scheduler."""
    origin, began = utc(7, 59), asyncio.get_running_loop().time()

    def fast_clock() -> datetime:
        return origin + timedelta(seconds=(asyncio.get_running_loop().time() - began) * 200)

    controller = RecordingController()
    [instance] = add_instances(sqlite_db)
    add_schedule(sqlite_db, instance, spec(["08:00", "08:10"], minutes=5), active_since=origin)
    service = make_service(sqlite_db, controller, fast_clock, interval=0.05)
    await service.start(_ctx(sqlite_db))
    try:
        for _ in range(600):  # 30 s at most: about 5 s alone, longer beside the suite's heaviest tests
            if len(controller.of("stop")) == 2:
                break
            await asyncio.sleep(0.05)
    finally:
        await service.stop()
    assert [c.action for c in controller.calls] == ["start", "stop", "start", "stop"]
    assert service.health().state.value == "stopped"
    with sqlite_db.session() as session:
        assert (
            session.scalar(
                select(func.count()).select_from(Occurrence).where(Occurrence.state == OccurrenceState.stopped)
            )
            == 2
        )


def _ctx(db: Database):
    from aiot.services.contract import ServiceContext
    from aiot.settings import Settings

    return ServiceContext(settings=Settings(database_url=db.url), db=db)


async def test_refill_with_a_budget_goes_batch_by_batch_and_finishes(sqlite_db: Database) -> None:
    clock = SimClock(utc(0))
    instances = add_instances(sqlite_db, 5)
    for instance in instances:
        add_schedule(sqlite_db, instance, spec(["08:00"]), active_since=clock.now)
    horizon = timedelta(hours=48)
    first = ledger.refill_due(sqlite_db, clock.now, horizon, batch=2, budget_s=0.0)
    assert (first.created, first.more) == (4, True)  # one batch of 2 schedules x 2 days, then the budget ran out
    second = ledger.refill_due(sqlite_db, clock.now, horizon, batch=2, budget_s=0.0)
    assert (second.created, second.more) == (4, True)  # the next two schedules, not the first two again
    last = ledger.refill_due(sqlite_db, clock.now, horizon, batch=2, budget_s=0.0)
    assert (last.created, last.more) == (2, False)
    assert ledger.refill_due(sqlite_db, clock.now, horizon, batch=2, budget_s=0.0).created == 0


def _claimed_by_a_replica_that_dies(db: Database, minutes: int) -> tuple[SimClock, RecordingController, str, str]:
    """A run at 08:00 lasting `minutes`, claimed at 08:00 by "replica-a", which then dies before its controller
    start returns: (clock, a controller for the survivor, schedule id, occurrence id)."""
    clock = SimClock(utc(8))
    [instance] = add_instances(db)
    sid = add_schedule(db, instance, spec(["08:00"], minutes=minutes), active_since=clock.now)
    ledger.materialise_due(db, clock.now, timedelta(hours=48))
    [due] = ledger.due_starts(db, clock.now)
    decision = ledger.fire(db, due, clock.now, "replica-a")  # ... and replica A is killed here
    assert decision is not None and decision.start
    assert states(db, sid)[0][1] == "starting"
    return clock, RecordingController(clock), sid, due


async def test_a_start_left_unconfirmed_by_a_dead_replica_is_taken_over_once(sqlite_db: Database) -> None:
    """Replica A claims a run and dies before its controller start returns: the run stays `starting`; after
    STALE_START replica B starts it (once), owns it, and stops it at its end."""
    clock, controller, sid, due = _claimed_by_a_replica_that_dies(sqlite_db, minutes=30)
    survivor = make_service(sqlite_db, controller, clock, replica="replica-b")
    clock.advance(seconds=ledger.STALE_START.total_seconds() - 5)
    await survivor.tick()
    assert controller.of("start") == []  # not yet stale: A may only be slow
    clock.advance(seconds=10)
    await survivor.tick()
    await survivor.tick()
    assert [(c.occurrence_id, c.until) for c in controller.of("start")] == [(due, utc(8, 30))]
    with sqlite_db.session() as session:
        occ = session.get(Occurrence, due)
        assert (occ.state, occ.fired_by) == (OccurrenceState.started, "replica-b")
    await run_until(survivor, clock, utc(8, 31))
    assert [c.occurrence_id for c in controller.of("stop")] == [due]
    assert len(controller.of("start")) == 1


async def test_a_stale_start_whose_run_has_ended_is_stopped_not_started(sqlite_db: Database) -> None:
    clock, controller, sid, due = _claimed_by_a_replica_that_dies(sqlite_db, minutes=1)
    clock.advance(minutes=5)  # nobody runs until 08:05
    survivor = make_service(sqlite_db, controller, clock, replica="replica-b")
    await survivor.tick()
    assert controller.of("start") == []
    assert [c.occurrence_id for c in controller.of("stop")] == [due]  # in case A's start had gone through
    assert states(sqlite_db, sid)[0][1] == "stopped"
