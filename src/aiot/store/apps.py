"""App instances: an app package version bound to devices at a location for one end user.

The scheduler starts and stops an instance at its occurrences; the deployer turns a running instance into a
workload. Bindings map each alias the app's `app.json` declares to concrete device ids, so many instances may
share one device while each sees only what it is bound to.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Enum, ForeignKey, String, text
from sqlalchemy.orm import Mapped, mapped_column

from aiot.ids import new_id
from aiot.store.base import Base, UTCDateTime
from aiot.timeutil import utcnow


class InstanceState(enum.StrEnum):
    idle = "idle"  # scheduled, not running now
    running = "running"  # desired running (a workload exists)
    retired = "retired"  # deleted by its user; kept for history


class AppInstance(Base):
    __tablename__ = "app_instances"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("ins"))
    app_id: Mapped[str] = mapped_column(ForeignKey("app_packages.id", ondelete="RESTRICT"), index=True)
    location_id: Mapped[str] = mapped_column(ForeignKey("locations.id", ondelete="RESTRICT"), index=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    bindings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # {"sensors": {alias: [dev...]}, ...}
    # The model version each alias of the app resolved to when the instance was created: {alias: "mdl_..."}.
    # Every start uses exactly these (with `app_id`, the instance's whole code is pinned); only an explicit
    # upgrade changes them (aiot.apps.pinning.repin).
    models: Mapped[dict[str, str]] = mapped_column(JSON, default=dict, server_default=text("'{}'"))
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[InstanceState] = mapped_column(
        Enum(InstanceState, native_enum=False, length=16), default=InstanceState.idle
    )
    workload_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    current_occurrence_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    run_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    address: Mapped[str | None] = mapped_column(String(300), nullable=True)
    notified_address: Mapped[str | None] = mapped_column(String(300), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
