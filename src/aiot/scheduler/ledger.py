"""The scheduler's database work: materialising occurrences and claiming them, safely among replicas.

Every function here is synchronous (the service runs them in a worker thread) and takes "now" as an argument,
so tests drive a simulated day without sleeping. Exactly-once rests on two things only:

- materialising inserts with ON CONFLICT DO NOTHING on the unique (schedule_id, start_at), so replicas that
  materialise the same window at once create each occurrence once;
- firing claims an occurrence with one conditional `UPDATE ... SET state=... WHERE id=:id AND state='planned'`;
  the replica whose UPDATE changed a row (rowcount 1) owns it, every other one backs off. Stopping claims the same
  way from `started`.

A claimed run is `starting` until the controller's start returned, then `started`. A replica killed in between
leaves it `starting`; once that is older than `STALE_START`, any replica takes it over (`claim_stale_starts`,
again a conditional UPDATE) and drives the start again (the controller's start is idempotent), or, if the run's
end has passed meanwhile, stops it. So a run is never lost with its replica, and never started twice.
Decisions about one app instance (overlap) are serialised by locking its row (`SELECT ... FOR UPDATE` on
PostgreSQL; SQLite serialises writers anyway).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aiot.ids import new_id
from aiot.scheduler.rules import MAX_RUN_MINUTES, ScheduleSpec, occurrences
from aiot.store.apps import AppInstance, InstanceState
from aiot.store.engine import Database
from aiot.store.scheduling import Occurrence, OccurrenceState, OverlapPolicy, Schedule
from aiot.timeutil import as_utc

log = logging.getLogger(__name__)
HORIZON = timedelta(hours=48)  # how far ahead a schedule's occurrences exist

# A run starting less than this late counts as on time whatever its deadline (loop and database latency).
ON_TIME_TOLERANCE = timedelta(seconds=5)
# After a long outage, runs older than this are not even recorded (they would only be marked skipped).
LOOKBACK = timedelta(days=1)
MAX_RUN = timedelta(minutes=MAX_RUN_MINUTES)
ENDED = "ended"
ACTIVE = (OccurrenceState.starting, OccurrenceState.started)  # the instance runs (or is being started) for it
# A start unconfirmed for this long belongs to a replica that died (a start takes well under a second).
STALE_START = timedelta(seconds=20)


@dataclass
class StartDecision:
    """What firing one occurrence decided; the service then calls the controller accordingly."""

    occurrence_id: str
    instance_id: str
    start: bool  # False: skipped (see reason)
    until: datetime
    reason: str = ""
    stop_first: list[str] = field(default_factory=list)  # occurrence ids replaced by this one (same instance)


# ---------------------------------------------------------------------- materialising


def _insert_ignoring_duplicates(session: Session, rows: list[dict]) -> int:
    """Insert occurrence rows; rows whose (schedule_id, start_at) exists already are silently dropped."""
    if not rows:
        return 0
    dialect = session.get_bind().dialect.name
    if dialect in ("postgresql", "sqlite"):
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        stmt = (
            insert(Occurrence)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["schedule_id", "start_at"])
            .returning(Occurrence.id)
        )  # count what RETURNING yields: rowcount is unreliable here (psycopg)
        return len(session.execute(stmt).all())
    inserted = 0  # another backend: check, then insert each row in a savepoint
    for row in rows:
        try:
            with session.begin_nested():
                session.add(Occurrence(**row))
            inserted += 1
        except IntegrityError:
            continue
    return inserted


def materialise_schedule(session: Session, schedule: Schedule, now: datetime, horizon: timedelta) -> int:
    """Create the schedule's occurrences up to now + horizon (idempotent); returns how many were new."""
    upper = now + horizon
    lower = max(schedule.materialized_until or (schedule.active_since - MAX_RUN), now - LOOKBACK)
    rows = []
    if lower < upper:
        spec = ScheduleSpec.stored(schedule.spec)
        for start, end in occurrences(spec, lower, upper):
            if end <= schedule.active_since:
                continue  # it was over before the schedule existed (or was re-enabled)
            rows.append(
                {
                    "id": new_id("occ"),
                    "schedule_id": schedule.id,
                    "app_instance_id": schedule.app_instance_id,
                    "start_at": start,
                    "end_at": end,
                    "state": OccurrenceState.planned,
                    "reason": "",
                }
            )
    inserted = _insert_ignoring_duplicates(session, rows)
    session.execute(
        update(Schedule)
        .where(Schedule.id == schedule.id, Schedule.enabled.is_(True))
        .where((Schedule.materialized_until.is_(None)) | (Schedule.materialized_until < upper))
        .values(materialized_until=upper)
        .execution_options(synchronize_session=False)
    )  # the row is not read again in this session
    return inserted


@dataclass
class Refill:
    """What one materialisation pass did: occurrences created, and whether schedules are still waiting."""

    created: int = 0
    more: bool = False


def materialise_due(db: Database, now: datetime, horizon: timedelta, batch: int = 50) -> int:
    """`refill_due` without a time budget: the number of occurrences created."""
    return refill_due(db, now, horizon, batch).created


def refill_due(
    db: Database, now: datetime, horizon: timedelta, batch: int = 50, budget_s: float | None = None
) -> Refill:
    """Extend every enabled schedule whose materialised window runs short. Schedules go in id order, `batch` per
    transaction, so concurrent replicas take row locks in the same order (they wait, never deadlock).

    With `budget_s`, stop after the batch that exceeds it (`more` says so): with thousands of schedules a full
    refill takes seconds, and the caller fires what is due in between. Windows are refilled an hour (or a quarter
    of the horizon) before they run out, so a refill spread over several passes is never late."""
    import time

    started = time.monotonic()
    refill = min(timedelta(hours=1), horizon / 4)
    with db.session() as session:
        ids = list(
            session.scalars(
                select(Schedule.id)
                .where(Schedule.enabled.is_(True))
                .where((Schedule.materialized_until.is_(None)) | (Schedule.materialized_until < now + horizon - refill))
                .order_by(Schedule.id)
            )
        )
    done = Refill()
    for first in range(0, len(ids), batch):
        with db.session() as session:
            rows = session.scalars(
                select(Schedule).where(Schedule.id.in_(ids[first : first + batch])).order_by(Schedule.id)
            )
            for schedule in list(rows):
                if schedule.enabled:
                    done.created += materialise_schedule(session, schedule, now, horizon)
        if budget_s is not None and first + batch < len(ids) and time.monotonic() - started > budget_s:
            done.more = True  # at least one batch per pass, so a refill always progresses
            break
    return done


# ---------------------------------------------------------------------- firing


def due_starts(db: Database, now: datetime, limit: int = 1000) -> list[str]:
    with db.session() as session:
        return list(
            session.scalars(
                select(Occurrence.id)
                .where(Occurrence.state == OccurrenceState.planned, Occurrence.start_at <= now)
                .order_by(Occurrence.start_at, Occurrence.id)
                .limit(limit)
            )
        )


def _claim(session: Session, occurrence_id: str, frm: OccurrenceState, **values: object) -> bool:
    result = session.execute(
        update(Occurrence)
        .where(Occurrence.id == occurrence_id, Occurrence.state == frm)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def _skip_reason(
    session: Session, occ: Occurrence, schedule: Schedule | None, instance: AppInstance | None, now: datetime
) -> str:
    if schedule is None or not schedule.enabled:
        return "the schedule is disabled"
    if instance is None or instance.state == InstanceState.retired:
        return f"app instance {occ.app_instance_id} no longer exists"
    if now >= occ.end_at:
        return f"missed: its end time {occ.end_at.isoformat()} had passed when the scheduler ran"
    late = now - occ.start_at
    deadline = timedelta(seconds=schedule.late_start_deadline_s)
    if late > max(deadline, ON_TIME_TOLERANCE):
        return (
            f"missed by {late.total_seconds():.0f} s, more than the late-start deadline of "
            f"{schedule.late_start_deadline_s} s (was the platform down?)"
        )
    return ""


def fire(db: Database, occurrence_id: str, now: datetime, replica: str) -> StartDecision | None:
    """Decide and claim one due occurrence. None: another replica claimed it first (or it is gone)."""
    with db.session() as session:
        occ = session.get(Occurrence, occurrence_id)
        if occ is None or occ.state != OccurrenceState.planned:
            return None
        # Serialise decisions about this instance across replicas (overlap checks must see each other).
        instance = session.scalar(select(AppInstance).where(AppInstance.id == occ.app_instance_id).with_for_update())
        schedule = session.get(Schedule, occ.schedule_id)
        reason = _skip_reason(session, occ, schedule, instance, now)
        running: list[Occurrence] = []
        if not reason:
            running = list(
                session.scalars(
                    select(Occurrence)
                    .where(
                        Occurrence.app_instance_id == occ.app_instance_id,
                        Occurrence.state.in_(ACTIVE),
                        Occurrence.end_at > now,
                        Occurrence.id != occ.id,
                    )
                    .order_by(Occurrence.start_at)
                )
            )
            assert schedule is not None
            if running and schedule.overlap == OverlapPolicy.forbid:
                other = running[0]
                reason = (
                    f"overlap forbidden: the instance still runs occurrence {other.id} until {other.end_at.isoformat()}"
                )
        state = OccurrenceState.skipped if reason else OccurrenceState.starting
        if not _claim(
            session, occ.id, OccurrenceState.planned, state=state, reason=reason, fired_by=replica, fired_at=now
        ):
            return None
        decision = StartDecision(occ.id, occ.app_instance_id, start=not reason, until=occ.end_at, reason=reason)
        for other in [] if reason else running:  # overlap == replace (forbid set a reason above)
            if _claim(
                session,
                other.id,
                other.state,
                state=OccurrenceState.stopped,
                reason=f"replaced by occurrence {occ.id}",
                stopped_at=now,
            ):
                decision.stop_first.append(other.id)
        return decision


def confirm_started(db: Database, occurrence_id: str) -> bool:
    """The controller's start returned: `starting` -> `started`. False: it was stopped (deleted, replaced)
    meanwhile."""
    with db.session() as session:
        return _claim(session, occurrence_id, OccurrenceState.starting, state=OccurrenceState.started)


def mark_failed(db: Database, occurrence_id: str, reason: str) -> None:
    with db.session() as session:
        _claim(session, occurrence_id, OccurrenceState.starting, state=OccurrenceState.failed, reason=reason[:300])


@dataclass
class StaleStart:
    """A start whose replica died before confirming it, now claimed by this replica."""

    occurrence_id: str
    instance_id: str
    until: datetime
    ended: bool  # its end passed meanwhile: it was marked stopped; stop the instance (in case it did start)


def claim_stale_starts(
    db: Database, now: datetime, replica: str, grace: timedelta = STALE_START, limit: int = 100
) -> list[StaleStart]:
    """Take over `starting` occurrences older than `grace` (their replica died between claim and confirm)."""
    cutoff = now - grace
    with db.session() as session:
        rows = list(
            session.execute(
                select(Occurrence.id, Occurrence.app_instance_id, Occurrence.end_at)
                .where(Occurrence.state == OccurrenceState.starting, Occurrence.fired_at < cutoff)
                .limit(limit)
            )
        )
    taken = []
    for occurrence_id, instance_id, end_at in rows:
        ended = as_utc(end_at) <= now
        values: dict[str, object] = {"fired_by": replica, "fired_at": now}
        if ended:
            values.update(state=OccurrenceState.stopped, reason=ENDED, stopped_at=now)
        with db.session() as session:
            result = session.execute(
                update(Occurrence)
                .where(
                    Occurrence.id == occurrence_id,
                    Occurrence.state == OccurrenceState.starting,
                    Occurrence.fired_at < cutoff,
                )
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount == 1:
                taken.append(StaleStart(occurrence_id, instance_id, as_utc(end_at), ended))
    return taken


def cancelled_meanwhile(db: Database, occurrence_id: str) -> bool:
    """After a start: was the occurrence deleted or replaced while the controller started it? (Its stop may then
    have reached the controller before the start did.) An occurrence that simply ended is not cancelled."""
    with db.session() as session:
        row = session.execute(select(Occurrence.state, Occurrence.reason).where(Occurrence.id == occurrence_id)).first()
    if row is None:
        return True
    return row.state == OccurrenceState.stopped and row.reason != ENDED


# ---------------------------------------------------------------------- stopping


def claim_due_stops(db: Database, now: datetime, replica: str, limit: int = 1000) -> list[tuple[str, str]]:
    """Occurrences whose end time has come, claimed for stopping by this replica: [(instance, occurrence)]."""
    with db.session() as session:
        due = list(
            session.execute(
                select(Occurrence.id, Occurrence.app_instance_id)
                .where(Occurrence.state == OccurrenceState.started, Occurrence.end_at <= now)
                .order_by(Occurrence.end_at)
                .limit(limit)
            )
        )
    claimed = []
    for occurrence_id, instance_id in due:
        with db.session() as session:
            if _claim(
                session,
                occurrence_id,
                OccurrenceState.started,
                state=OccurrenceState.stopped,
                reason=ENDED,
                stopped_at=now,
            ):
                claimed.append((instance_id, occurrence_id))
    return claimed


def stop_failed(db: Database, occurrence_id: str, reason: str) -> None:
    """Hand a stop that failed for a passing reason back to the loop (it retries next tick)."""
    with db.session() as session:
        _claim(
            session,
            occurrence_id,
            OccurrenceState.stopped,
            state=OccurrenceState.started,
            reason=f"stop failed, retrying: {reason}"[:300],
            stopped_at=None,
        )


def claim_running_for_schedule(db: Database, schedule_id: str, now: datetime, reason: str) -> list[tuple[str, str]]:
    """Mark the schedule's running occurrences stopped (delete, disable); returns [(instance, occurrence)]."""
    with db.session() as session:
        rows = list(
            session.execute(
                select(Occurrence.id, Occurrence.app_instance_id, Occurrence.state).where(
                    Occurrence.schedule_id == schedule_id, Occurrence.state.in_(ACTIVE)
                )
            )
        )
        return [
            (instance_id, occurrence_id)
            for occurrence_id, instance_id, state in rows
            if _claim(session, occurrence_id, state, state=OccurrenceState.stopped, reason=reason, stopped_at=now)
        ]


def next_due(db: Database) -> datetime | None:
    """The earliest instant something is due (a planned start or a running occurrence's end)."""
    with db.session() as session:
        start = session.scalar(select(func.min(Occurrence.start_at)).where(Occurrence.state == OccurrenceState.planned))
        end = session.scalar(select(func.min(Occurrence.end_at)).where(Occurrence.state == OccurrenceState.started))
    found = [as_utc(v) for v in (start, end) if v is not None]
    return min(found) if found else None
