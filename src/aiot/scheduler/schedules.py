"""Schedules as their owners keep them: create, find, list, change, delete, and their run history (rules only,
no HTTP).

Who may touch a schedule is decided here, once: its owner, or an admin; anyone else is told it does not exist
(404 like a missing id). Disabling or deleting a schedule deletes its *planned* occurrences in the same
transaction, so no scheduler replica can fire one of them afterwards; runs already started are stopped by the
caller (`ledger.claim_running_for_schedule`), which needs the deployer and so lives outside this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from aiot.accounts.caller import Caller
from aiot.devices.grants import scope_for
from aiot.errors import Forbidden, NotFound
from aiot.scheduler.ledger import ACTIVE, HORIZON, materialise_schedule
from aiot.scheduler.rules import ScheduleSpec
from aiot.store.apps import AppInstance, InstanceState
from aiot.store.scheduling import Occurrence, OccurrenceState, OverlapPolicy, Schedule


@dataclass(frozen=True)
class Policy:
    late_start_deadline_s: int
    overlap: OverlapPolicy


def get_owned(session: Session, caller: Caller, schedule_id: str) -> Schedule:
    """The schedule if the caller owns it (or is an admin); 404 otherwise: others' schedules are invisible."""
    row = session.get(Schedule, schedule_id)
    if row is None or (not caller.is_admin and row.owner_id != caller.user_id):
        raise NotFound(f"no schedule {schedule_id!r}", field="schedule_id")
    return row


def create_schedule(
    session: Session,
    caller: Caller,
    *,
    app_instance_id: str,
    spec: ScheduleSpec,
    policy: Policy,
    name: str,
    enabled: bool,
    now: datetime,
) -> Schedule:
    """A schedule for one of the caller's live instances, owned by the instance's owner; refused while that owner
    no longer has access to the instance's location (a run could not start there).

    Its occurrences (the next 48 h) are created with it, in the same transaction: a run due a minute from now
    exists at once rather than when a scheduler replica's refill gets to it (with thousands of new schedules at
    once, that refill, spread over passes, fired some of them up to 72 s late: `bench/scheduler.py`)."""
    instance = session.get(AppInstance, app_instance_id)
    if (
        instance is None
        or instance.state == InstanceState.retired
        or (not caller.is_admin and instance.owner_id != caller.user_id)
    ):
        raise NotFound(f"no app instance {app_instance_id!r}", field="app_instance_id")
    if not scope_for(session, instance.owner_id).allows(instance.location_id):
        raise Forbidden(
            f"the instance's owner no longer has access to its location {instance.location_id} "
            "(an admin must grant it again)",
            field="location",
        )
    row = Schedule(
        app_instance_id=instance.id,
        owner_id=instance.owner_id,
        name=name,
        spec=spec.model_dump(mode="json"),
        timezone=spec.timezone,
        late_start_deadline_s=policy.late_start_deadline_s,
        overlap=policy.overlap,
        enabled=enabled,
        active_since=now,
        created_at=now,
    )
    session.add(row)
    session.flush()
    if enabled:
        materialise_schedule(session, row, now, HORIZON)
    return row


def list_schedules(session: Session, caller: Caller, app_instance_id: str | None = None) -> list[Schedule]:
    """The caller's schedules (an admin's: everyone's), oldest first, optionally of one instance."""
    query = select(Schedule).order_by(Schedule.created_at, Schedule.id)
    if not caller.is_admin:
        query = query.where(Schedule.owner_id == caller.user_id)
    if app_instance_id:
        query = query.where(Schedule.app_instance_id == app_instance_id)
    return list(session.scalars(query))


def running_occurrence(session: Session, schedule: Schedule) -> Occurrence | None:
    """The schedule's run in progress (starting, running or stopping), if any."""
    return session.scalar(
        select(Occurrence).where(Occurrence.schedule_id == schedule.id, Occurrence.state.in_(ACTIVE)).limit(1)
    )


def _forget_planned(session: Session, schedule_id: str) -> None:
    session.execute(
        delete(Occurrence).where(Occurrence.schedule_id == schedule_id, Occurrence.state == OccurrenceState.planned)
    )


def change_schedule(
    session: Session,
    row: Schedule,
    *,
    now: datetime,
    name: str | None = None,
    policy: Policy | None = None,
    enabled: bool | None = None,
) -> None:
    """Rename, change the policy, enable or disable. Re-enabling counts from now (runs from before are not fired
    late); disabling deletes the planned runs at once."""
    if name is not None:
        row.name = name
    if policy is not None:
        row.late_start_deadline_s, row.overlap = policy.late_start_deadline_s, policy.overlap
    if enabled is not None and enabled != row.enabled:
        row.enabled = enabled
        row.materialized_until = None
        if enabled:
            row.active_since = now
            session.flush()
            materialise_schedule(session, row, now, HORIZON)  # its runs exist at once, as on creation
        else:
            _forget_planned(session, row.id)


def retire_schedule(session: Session, schedule_id: str) -> None:
    """First step of a deletion: disabled with no planned runs, so no replica fires anything of it from here on
    (the caller then stops a run in progress and calls `delete_schedule`)."""
    _forget_planned(session, schedule_id)
    row = session.get(Schedule, schedule_id)
    if row is not None:
        row.enabled = False


def delete_schedule(session: Session, schedule_id: str) -> None:
    """The schedule and its whole history."""
    session.execute(delete(Occurrence).where(Occurrence.schedule_id == schedule_id))
    session.execute(delete(Schedule).where(Schedule.id == schedule_id))


def list_occurrences(
    session: Session, schedule: Schedule, state: OccurrenceState | None = None, limit: int = 100
) -> list[Occurrence]:
    """Materialised runs (the next ~48 h and the history), newest first."""
    query = select(Occurrence).where(Occurrence.schedule_id == schedule.id)
    if state is not None:
        query = query.where(Occurrence.state == state)
    return list(session.scalars(query.order_by(Occurrence.start_at.desc()).limit(limit)))
