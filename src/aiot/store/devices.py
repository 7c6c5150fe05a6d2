"""Tables of the physical world: locations, device instances, the devices' own credentials, and which people
were given which locations (`LocationGrant`).

A device's NATS/MQTT password is stored only as a bcrypt hash (the form nats-server checks), shown to the admin
once at registration or rotation. Revoking sets `revoked_at`; the embedded server's user list is rebuilt from
the active rows, which cuts the device off.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Enum, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from aiot.ids import new_id
from aiot.store.base import Base, UTCDateTime
from aiot.store.catalog import DeviceType
from aiot.timeutil import utcnow


class DeviceState(enum.StrEnum):
    enabled = "enabled"
    disabled = "disabled"


class Location(Base):
    __tablename__ = "locations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("loc"))
    name: Mapped[str] = mapped_column(String(100), unique=True, index=True)
    kind: Mapped[str] = mapped_column(String(40), default="site")  # school, bank, junction, home, ...
    address: Mapped[str] = mapped_column(String(300), default="")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")  # IANA name, checked with zoneinfo
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("locations.id", ondelete="RESTRICT"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Device(Base):
    __tablename__ = "devices"
    __table_args__ = (UniqueConstraint("location_id", "name", name="uq_devices_location_name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("dev"))
    name: Mapped[str] = mapped_column(String(100))
    type_id: Mapped[str] = mapped_column(ForeignKey("device_types.id", ondelete="RESTRICT"), index=True)
    location_id: Mapped[str] = mapped_column(ForeignKey("locations.id", ondelete="RESTRICT"), index=True)
    state: Mapped[DeviceState] = mapped_column(
        Enum(DeviceState, native_enum=False, length=16), default=DeviceState.enabled
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    device_type: Mapped[DeviceType] = relationship(lazy="joined")
    location: Mapped[Location] = relationship(lazy="joined")


class DeviceCredential(Base):
    """The one credential of a device (username = device id). Rotation replaces the hash in place."""

    __tablename__ = "device_credentials"

    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    password_bcrypt: Mapped[str] = mapped_column(String(100))
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class LocationGrant(Base):
    """An admin gave `user_id` the location `location_id` and every location below it (its subtree).

    Why a table and not a column on the location: one home can be shared by several end users, and one end user can
    hold several places. Non-admins see, read and bind only devices under their grants (`aiot.devices.grants`).
    """

    __tablename__ = "location_grants"

    location_id: Mapped[str] = mapped_column(ForeignKey("locations.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True)
    granted_by: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
