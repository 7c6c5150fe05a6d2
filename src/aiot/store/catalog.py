"""Tables of uploaded artifacts: device types, model packages and app packages (metadata only).

Archives themselves live in the NATS object store under their SHA-256 (`aiot_artifacts` bucket), so identical
bytes are stored once. A name plus version is immutable: the unique constraint makes the second, different
upload a 409 even when two uploads race.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Enum, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from aiot.ids import new_id
from aiot.store.base import Base, UTCDateTime
from aiot.timeutil import utcnow


class PackageStatus(enum.StrEnum):
    active = "active"
    deprecated = "deprecated"  # still runs and resolves, but new apps/schedules should not pick it


class DeviceKind(enum.StrEnum):
    sensor = "sensor"
    controller = "controller"


class DeviceType(Base):
    __tablename__ = "device_types"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("dty"))
    name: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    kind: Mapped[DeviceKind] = mapped_column(Enum(DeviceKind, native_enum=False, length=16))
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    sha256: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class _Package:
    """Columns shared by model and app packages."""

    name: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[str] = mapped_column(String(64))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[PackageStatus] = mapped_column(
        Enum(PackageStatus, native_enum=False, length=16), default=PackageStatus.active
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ModelPackage(_Package, Base):
    __tablename__ = "model_packages"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_model_packages_name_version"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("mdl"))
    owner_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)


class AppPackage(_Package, Base):
    __tablename__ = "app_packages"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_app_packages_name_version"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("app"))
    kind: Mapped[str] = mapped_column(String(16))
    owner_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
