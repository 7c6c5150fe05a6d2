"""Rollouts: every version change of an app instance or a model deployment, with its outcome.

A rollout is the record that lets the platform fall back: it keeps what ran before (`from_*`) beside what was
asked for (`to_*`), so a failed change can be undone automatically, and the list of rollouts of one target is
that target's version history (which version ran when, and why each change ended as it did).
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Enum, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from aiot.ids import new_id
from aiot.store.base import Base, UTCDateTime
from aiot.timeutil import utcnow


class RolloutState(enum.StrEnum):
    rolling = "rolling"  # the new version is starting or soaking
    succeeded = "succeeded"  # healthy for the whole soak period: the old version is retired
    rolled_back = "rolled_back"  # the new version failed; the old one runs again
    superseded = "superseded"  # another rollout of the same target replaced this one before it finished


class RolloutTarget(enum.StrEnum):
    instance = "instance"  # an app instance (target_id: ins_…)
    model = "model"  # every deployment of a model name (target_id: the name)


class Rollout(Base):
    __tablename__ = "rollouts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("rol"))
    target: Mapped[RolloutTarget] = mapped_column(Enum(RolloutTarget, native_enum=False, length=16))
    target_id: Mapped[str] = mapped_column(String(100), index=True)
    from_package_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    to_package_id: Mapped[str] = mapped_column(String(32))
    from_version: Mapped[str] = mapped_column(String(50), default="")
    to_version: Mapped[str] = mapped_column(String(50), default="")
    # instances: the model pins before and after ({alias: mdl_…}); models: {"replicas": N}
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    manual_rollback: Mapped[bool] = mapped_column(Boolean, default=False)  # asked for by a user, not a failure
    state: Mapped[RolloutState] = mapped_column(
        Enum(RolloutState, native_enum=False, length=16), default=RolloutState.rolling
    )
    reason: Mapped[str] = mapped_column(String(500), default="")
    requested_by: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    healthy_since: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)  # soak start
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
