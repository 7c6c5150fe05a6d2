"""Schedules and their occurrences (the scheduler's desired and recorded state).

A `Schedule` says when an app instance runs (its `ScheduleSpec` as JSON, in the user's time zone) and how to treat
late and overlapping runs. Each concrete run is an `Occurrence` row in UTC, materialised ahead of time. The unique
(schedule_id, start_at) pair makes materialisation idempotent, and an occurrence's `state` column is what scheduler
replicas race on: only the one whose conditional UPDATE moves it out of `planned` fires it.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Enum, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from aiot.ids import new_id
from aiot.store.base import Base, UTCDateTime
from aiot.timeutil import utcnow


class OverlapPolicy(enum.StrEnum):
    forbid = "forbid"  # a start while the instance still runs an earlier occurrence is skipped
    replace = "replace"  # type: ignore[assignment]  # shadows str.replace; the stored value must stay "replace"
    # (above) the earlier run is stopped and the new one starts


class OccurrenceState(enum.StrEnum):
    planned = "planned"
    starting = "starting"  # claimed by a scheduler replica, its start not yet confirmed (see scheduler.ledger)
    started = "started"
    skipped = "skipped"  # never started: missed past its deadline, overlap forbidden, instance gone, ...
    stopped = "stopped"  # ran, then ended (at its end time, replaced, or its schedule deleted)
    failed = "failed"  # the controller could not start it


class Schedule(Base):
    __tablename__ = "schedules"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("sch"))
    app_instance_id: Mapped[str] = mapped_column(ForeignKey("app_instances.id", ondelete="CASCADE"), index=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    timezone: Mapped[str] = mapped_column(String(64))
    late_start_deadline_s: Mapped[int] = mapped_column(Integer, default=300)
    overlap: Mapped[OverlapPolicy] = mapped_column(
        Enum(OverlapPolicy, native_enum=False, length=16), default=OverlapPolicy.forbid
    )
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # Runs ending before this instant are not materialised: set at creation and on each re-enable, so a
    # schedule never fires runs from before it existed (or while it was disabled).
    active_since: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Occurrences exist up to here; the scheduler extends it to now + horizon (several replicas may race, the
    # unique constraint below keeps that harmless).
    materialized_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Occurrence(Base):
    __tablename__ = "schedule_occurrences"
    __table_args__ = (
        UniqueConstraint("schedule_id", "start_at", name="uq_schedule_occurrences_schedule_start"),
        Index("ix_schedule_occurrences_state_start", "state", "start_at"),
        Index("ix_schedule_occurrences_state_end", "state", "end_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("occ"))
    schedule_id: Mapped[str] = mapped_column(ForeignKey("schedules.id", ondelete="CASCADE"))
    app_instance_id: Mapped[str] = mapped_column(String(32), index=True)  # copied: overlap checks need no join
    start_at: Mapped[datetime] = mapped_column(UTCDateTime())
    end_at: Mapped[datetime] = mapped_column(UTCDateTime())
    state: Mapped[OccurrenceState] = mapped_column(
        Enum(OccurrenceState, native_enum=False, length=16), default=OccurrenceState.planned
    )
    reason: Mapped[str] = mapped_column(String(300), default="")
    fired_by: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the scheduler replica
    fired_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
