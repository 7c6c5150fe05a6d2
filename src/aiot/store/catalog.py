"""Tables of uploaded artifacts: device types, model packages, app packages (metadata only) and who owns each
package name.

Archives themselves live in the NATS object store under their SHA-256 (`aiot_artifacts` bucket), so identical
bytes are stored once. A name plus version is immutable: the unique constraint makes the second, different
upload a 409 even when two uploads race. A name belongs to the user who first uploaded it (`PackageName`, one
row per kind and name, kept when every version is deleted so nobody else can take the name over).
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


class PackageKind(enum.StrEnum):
    """The two namespaces of package names: a model and an app may share a name."""

    model = "model"
    app = "app"


class PackageName(Base):
    """Who owns a package name. Only the owner (or an admin) adds versions, deprecates or deletes them.

    A separate table rather than a column on the versions: the name must stay owned after its last version is
    deleted, and "who owns `comfort`" must be one row, not a vote among versions uploaded by different people.
    `owner_id` is NULL once the owning user is deleted: the name is then frozen (admins only), never free.
    """

    __tablename__ = "package_names"
    __table_args__ = (UniqueConstraint("kind", "name", name="uq_package_names_kind_name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("pkn"))
    kind: Mapped[PackageKind] = mapped_column(Enum(PackageKind, native_enum=False, length=16))
    name: Mapped[str] = mapped_column(String(64))
    owner_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


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
