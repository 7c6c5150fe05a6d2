"""Who may see which locations and devices: admins everything, everyone else only what an admin granted.

The rule (docs/security.md): a grant gives one user one location *and its whole subtree* (child locations via
`Location.parent_id`), so granting "North School" also gives its rooms. It applies to every non-admin role the
same way: end users bind apps only there, app and AI developers see device *types* (the catalogue) always but
locations and devices only where an admin granted them (to test their app on real devices). Everything outside
answers 404 exactly like a missing id, so a user cannot learn which other homes or devices exist.

Rules only (no HTTP): the API's routes and the app-instance rules call `scope_for()` and the `visible_*` checks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from aiot.devices.inventory import get_device, get_location
from aiot.errors import NotFound
from aiot.store.apps import AppInstance, InstanceState
from aiot.store.devices import Device, DeviceState, Location, LocationGrant
from aiot.store.models import Role, User


@dataclass(frozen=True)
class LocationScope:
    """The locations one user may see: `everything` (admins) or exactly `ids` (grants with their subtrees)."""

    everything: bool
    ids: frozenset[str]

    def allows(self, location_id: str) -> bool:
        return self.everything or location_id in self.ids


EVERYTHING = LocationScope(everything=True, ids=frozenset())


def subtree(session: Session, roots: Iterable[str]) -> frozenset[str]:
    """`roots` and every location below them. One query for the parent links, then a walk in memory: location
    trees are small (sites, buildings, rooms) and this avoids a recursive CTE that differs per database."""
    children: dict[str, list[str]] = {}
    for loc_id, parent_id in session.execute(select(Location.id, Location.parent_id)):
        if parent_id is not None:
            children.setdefault(parent_id, []).append(loc_id)
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        current = stack.pop()
        if current not in seen:
            seen.add(current)
            stack.extend(children.get(current, ()))
    return frozenset(seen)


def scope_for(session: Session, user: User | str) -> LocationScope:
    """The scope of `user` (a row or an id); an unknown id sees nothing."""
    row = session.get(User, user) if isinstance(user, str) else user
    if row is None:
        return LocationScope(everything=False, ids=frozenset())
    if row.role == Role.admin:
        return EVERYTHING
    roots = session.scalars(select(LocationGrant.location_id).where(LocationGrant.user_id == row.id))
    return LocationScope(everything=False, ids=subtree(session, roots))


def visible_location(session: Session, scope: LocationScope, ref: str, field: str = "location") -> Location:
    """The location `ref` (id or name) if the scope covers it; 404 otherwise, worded like a missing one."""
    row = get_location(session, ref, field=field)
    if not scope.allows(row.id):
        raise NotFound(f"no location {ref!r} (give its id or name)", field=field)
    return row


def visible_device(session: Session, scope: LocationScope, device_id: str) -> Device:
    """The device if it stands at a location the scope covers; 404 otherwise, worded like a missing one."""
    row = get_device(session, device_id)
    if not scope.allows(row.location_id):
        raise NotFound(f"no device {device_id!r}", field="device")
    return row


# ---------------------------------------------------------------------- granting (admins)


def grant(session: Session, location: Location, user: User, granted_by: str | None) -> tuple[LocationGrant, bool]:
    """Give `user` the location's subtree; idempotent. Returns the grant and whether it is new."""
    existing = session.get(LocationGrant, (location.id, user.id))
    if existing is not None:
        return existing, False
    row = LocationGrant(location_id=location.id, user_id=user.id, granted_by=granted_by)
    session.add(row)
    session.flush()
    return row, True


def revoke(session: Session, location: Location, user: User) -> None:
    """Take the grant back. Instances the user already has there keep their row but no longer start
    (`aiot.apps.instances.start_instance` checks the owner's scope); the API stops the running ones
    (`instances_outside_scope`)."""
    row = session.get(LocationGrant, (location.id, user.id))
    if row is None:
        raise NotFound(f"{user.username} has no grant on location {location.name!r}", field="user")
    session.delete(row)


def instances_outside_scope(session: Session, user_id: str) -> list[str]:
    """Ids of the user's running app instances at locations the user may no longer see (after a revoke)."""
    scope = scope_for(session, user_id)
    running = session.scalars(
        select(AppInstance).where(AppInstance.owner_id == user_id, AppInstance.state == InstanceState.running)
    )
    return [i.id for i in running if not scope.allows(i.location_id)]


def list_grants(session: Session, *, user_id: str | None = None, location_id: str | None = None) -> list[LocationGrant]:
    query = select(LocationGrant).order_by(LocationGrant.location_id, LocationGrant.user_id)
    if user_id is not None:
        query = query.where(LocationGrant.user_id == user_id)
    if location_id is not None:
        query = query.where(LocationGrant.location_id == location_id)
    return list(session.scalars(query))


def visible_locations(
    session: Session, scope: LocationScope, device_type: str | None = None
) -> list[tuple[Location, int]]:
    """The locations `scope` allows, by name, each with its count of enabled devices; `device_type` keeps only
    locations having that type."""
    devices = list(session.scalars(select(Device).where(Device.state == DeviceState.enabled)))
    out = []
    for loc in session.scalars(select(Location).order_by(Location.name)):
        if not scope.allows(loc.id):
            continue
        here = [d for d in devices if d.location_id == loc.id]
        if device_type and not any(d.device_type.name == device_type for d in here):
            continue
        out.append((loc, len(here)))
    return out


def location_devices(session: Session, location: Location) -> list[Device]:
    """Every device at a location (enabled or not), by name."""
    return list(session.scalars(select(Device).where(Device.location_id == location.id).order_by(Device.name)))


def visible_devices(
    session: Session, scope: LocationScope, location: str | None = None, device_type: str | None = None
) -> list[Device]:
    """The devices `scope` allows, by location and name, optionally of one (visible) location and/or type."""
    query = select(Device).order_by(Device.location_id, Device.name)
    if location:
        query = query.where(Device.location_id == visible_location(session, scope, location).id)
    return [
        d
        for d in session.scalars(query)
        if scope.allows(d.location_id) and (not device_type or d.device_type.name == device_type)
    ]
