"""Locations, device instances and device credentials: the admin's device inventory (rules only, no HTTP).

A device's credential is its id as username plus a random password shown once. Only a bcrypt hash is stored:
that is the form nats-server checks directly, so the platform never needs the password again. Every change
that alters who may connect (register, rotate, revoke, disable, delete) bumps nothing here; the caller announces
it (`aiot.natsauth.sources.announce_auth_change`) and the NATS auth service rebuilds its user directory from
these rows (`aiot.devices.nats_users`).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from sqlalchemy import select
from sqlalchemy.orm import Session

from aiot.bus.auth import hash_password
from aiot.errors import Conflict, NotFound, ValidationFailed
from aiot.store.catalog import DeviceType
from aiot.store.devices import Device, DeviceCredential, DeviceState, Location
from aiot.timeutil import utcnow

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,99}$")


@dataclass(frozen=True)
class IssuedCredential:
    """What a device needs to connect; the password is shown here once and never stored in clear."""

    username: str
    password: str


def _check_name(name: str, field: str) -> str:
    name = name.strip()
    if not NAME_RE.match(name):
        raise ValidationFailed(
            f"{field} must be 1-100 characters: letters, digits, spaces, '_', '.', '-' (starting with a letter "
            "or digit)",
            field=field,
        )
    return name


def check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        hint = sorted(z for z in available_timezones() if name.lower() in z.lower())[:3]
        raise ValidationFailed(
            f"unknown time zone {name!r}: expected an IANA name such as 'Asia/Kolkata' or 'Europe/Paris'"
            + (f" (did you mean {', '.join(hint)}?)" if hint else ""),
            field="timezone",
        ) from exc
    return name


# ---------------------------------------------------------------------- locations


def create_location(
    session: Session,
    *,
    name: str,
    kind: str = "site",
    address: str = "",
    timezone: str = "UTC",
    parent: str | None = None,
) -> Location:
    name = _check_name(name, "name")
    if session.scalar(select(Location).where(Location.name == name)) is not None:
        raise Conflict(f"a location named {name!r} already exists", field="name")
    parent_row = get_location(session, parent, field="parent") if parent else None
    location = Location(
        name=name,
        kind=kind.strip() or "site",
        address=address,
        timezone=check_timezone(timezone),
        parent_id=parent_row.id if parent_row else None,
    )
    session.add(location)
    session.flush()
    return location


def get_location(session: Session, ref: str, field: str = "location") -> Location:
    row = session.get(Location, ref) or session.scalar(select(Location).where(Location.name == ref))
    if row is None:
        raise NotFound(f"no location {ref!r} (give its id or name)", field=field)
    return row


def delete_location(session: Session, location: Location) -> None:
    if session.scalar(select(Device.id).where(Device.location_id == location.id).limit(1)):
        raise Conflict(f"location {location.name!r} still has devices; remove them first", field="location")
    if session.scalar(select(Location.id).where(Location.parent_id == location.id).limit(1)):
        raise Conflict(f"location {location.name!r} has child locations", field="location")
    session.delete(location)


# ---------------------------------------------------------------------- devices


def get_device(session: Session, ref: str) -> Device:
    row = session.get(Device, ref)
    if row is None:
        raise NotFound(f"no device {ref!r}", field="device")
    return row


def delete_device(session: Session, ref: str) -> None:
    """Forget a device and its credential (the caller announces the change to NATS)."""
    session.delete(get_device(session, ref))


def list_device_types(session: Session, kind: str | None = None) -> list[DeviceType]:
    """Every device type (or those of one kind: sensor, controller), by name."""
    query = select(DeviceType).order_by(DeviceType.name)
    if kind:
        query = query.where(DeviceType.kind == kind)
    return list(session.scalars(query))


def get_device_type(session: Session, ref: str) -> DeviceType:
    """A device type by id or name (404 naming `device_type`, with the known names, otherwise)."""
    row = session.get(DeviceType, ref) or session.scalar(select(DeviceType).where(DeviceType.name == ref))
    if row is None:
        known = ", ".join(session.scalars(select(DeviceType.name).order_by(DeviceType.name))) or "none yet"
        raise NotFound(f"no device type {ref!r} (known: {known})", field="device_type")
    return row


def create_device(session: Session, *, name: str, device_type: str, location: str) -> tuple[Device, IssuedCredential]:
    name = _check_name(name, "name")
    type_row = get_device_type(session, device_type)
    location_row = get_location(session, location)
    clash = session.scalar(select(Device).where(Device.location_id == location_row.id, Device.name == name))
    if clash is not None:
        raise Conflict(f"location {location_row.name!r} already has a device named {name!r}", field="name")
    device = Device(name=name, type_id=type_row.id, location_id=location_row.id)
    session.add(device)
    session.flush()
    return device, issue_credential(session, device)


def issue_credential(session: Session, device: Device) -> IssuedCredential:
    """A new password for `device` (first issue or rotation); the old one stops working at the next sync."""
    password = secrets.token_urlsafe(24)
    row = session.get(DeviceCredential, device.id)
    if row is None:
        row = DeviceCredential(device_id=device.id, password_bcrypt=hash_password(password))
        session.add(row)
    else:
        row.password_bcrypt = hash_password(password)
        row.issued_at = utcnow()
        row.revoked_at = None
    session.flush()
    return IssuedCredential(username=device.id, password=password)


def revoke_credential(session: Session, device: Device) -> None:
    row = session.get(DeviceCredential, device.id)
    if row is None or row.revoked_at is not None:
        raise Conflict(f"device {device.id} has no active credential", field="device")
    row.revoked_at = utcnow()


def set_state(session: Session, device: Device, state: DeviceState) -> None:
    device.state = state


def credential_status(session: Session, device: Device) -> str:
    """ "active", "revoked" or "none" (never issued)."""
    return credential_statuses(session, [device.id]).get(device.id, "none")


def credential_statuses(session: Session, device_ids: list[str]) -> dict[str, str]:
    """`credential_status` of many devices at once (device lists); devices without a credential are absent."""
    rows = (
        session.execute(
            select(DeviceCredential.device_id, DeviceCredential.revoked_at).where(
                DeviceCredential.device_id.in_(device_ids)
            )
        )
        if device_ids
        else []
    )
    return {device_id: "revoked" if revoked_at is not None else "active" for device_id, revoked_at in rows}


@dataclass(frozen=True)
class ConnectableDevice:
    """A device that may connect right now: enabled, with an active credential."""

    device_id: str
    kind: str
    password_bcrypt: str


def connectable_devices(session: Session) -> list[ConnectableDevice]:
    rows = session.execute(
        select(Device.id, DeviceType.kind, DeviceCredential.password_bcrypt)
        .join(DeviceType, Device.type_id == DeviceType.id)
        .join(DeviceCredential, DeviceCredential.device_id == Device.id)
        .where(Device.state == DeviceState.enabled, DeviceCredential.revoked_at.is_(None))
        .order_by(Device.id)
    )
    return [ConnectableDevice(device_id=r[0], kind=r[1].value, password_bcrypt=r[2]) for r in rows]
