"""Binding an app's aliases to concrete devices at a location, and its models to package versions.

Automatic when unambiguous: an alias whose device type has exactly one enabled device at the location binds to
it. With several candidates the user must choose (the error lists them); a user's choice is checked (exists, at
that location, right type, enabled). Many instances may bind the same device.
"""

from __future__ import annotations

from typing import Any

from packaging.specifiers import SpecifierSet
from packaging.version import Version
from sqlalchemy import select
from sqlalchemy.orm import Session

from aiot.artifacts import names
from aiot.errors import ValidationFailed
from aiot.store.catalog import AppPackage, DeviceType, ModelPackage, PackageKind, PackageStatus
from aiot.store.devices import Device, DeviceState, Location


def _devices_of_type(session: Session, location: Location, type_name: str) -> list[Device]:
    return list(
        session.scalars(
            select(Device)
            .join(DeviceType, Device.type_id == DeviceType.id)
            .where(Device.location_id == location.id, DeviceType.name == type_name, Device.state == DeviceState.enabled)
            .order_by(Device.name)
        )
    )


def resolve_devices(
    session: Session, app: AppPackage, location: Location, chosen: dict[str, list[str]] | None
) -> dict[str, dict[str, list[str]]]:
    """{"sensors": {alias: [device ids]}, "controllers": {...}}; every problem in one 422."""
    chosen = chosen or {}
    context = app.manifest.get("context") or {}
    result: dict[str, dict[str, list[str]]] = {"sensors": {}, "controllers": {}}
    problems: list[dict[str, Any]] = []
    for section in ("sensors", "controllers"):
        for alias, ref in (context.get(section) or {}).items():
            type_name = ref["device_type"]
            candidates = _devices_of_type(session, location, type_name)
            ids = {d.id for d in candidates}
            field = f"bindings.{alias}"
            if alias in chosen:
                picked = chosen[alias] if isinstance(chosen[alias], list) else [chosen[alias]]
                wrong = [d for d in picked if d not in ids]
                if wrong or not picked:
                    problems.append(
                        {
                            "field": field,
                            "message": f"{wrong or picked} are not enabled {type_name} "
                            f"devices at {location.name}; candidates: {sorted(ids) or 'none'}",
                        }
                    )
                    continue
                result[section][alias] = list(picked)
            elif len(candidates) == 1:
                result[section][alias] = [candidates[0].id]
            elif not candidates:
                problems.append(
                    {"field": field, "message": f"{location.name} has no enabled {type_name} device for '{alias}'"}
                )
            else:
                names = ", ".join(f"{d.id} ({d.name})" for d in candidates)
                problems.append(
                    {
                        "field": field,
                        "message": f"several {type_name} devices at {location.name} could "
                        f"serve '{alias}': choose in bindings.{alias} from {names}",
                    }
                )
    extra = set(chosen) - set(context.get("sensors") or {}) - set(context.get("controllers") or {})
    for alias in sorted(extra):
        problems.append({"field": f"bindings.{alias}", "message": f"the app declares no device alias '{alias}'"})
    if problems:
        raise ValidationFailed(
            "cannot bind the app at this location: " + "; ".join(p["message"] for p in problems),
            field=problems[0]["field"],
            details={"problems": problems},
        )
    return result


def resolve_model(session: Session, name: str, spec: str) -> ModelPackage:
    """The newest active version of model `name` (or `owner/name`) within `spec` (PEP 440).

    Every version of a name is its one owner's (aiot.artifacts.names), so "newest" never picks up another
    user's upload; `owner/name` additionally insists on who that owner is. Called when an instance is created
    (its versions are then pinned), never to pick what an existing instance runs."""
    owner, bare = names.split_owner(name)
    if owner is not None and not names.owner_matches(session, PackageKind.model, bare, owner):
        raise ValidationFailed(f"model {bare!r} is not owned by {owner!r}", field="models")
    name = bare
    specifier = SpecifierSet(spec or "", prereleases=True)
    rows = [
        m
        for m in session.scalars(
            select(ModelPackage).where(ModelPackage.name == name, ModelPackage.status == PackageStatus.active)
        )
        if Version(m.version) in specifier
    ]
    if not rows:
        raise ValidationFailed(f"no active version of model {name!r} matches {spec or 'any'}", field="models")
    return max(rows, key=lambda m: Version(m.version))


def locations_for_app(session: Session, app: AppPackage) -> list[Location]:
    """Locations having at least one enabled device of every type the app needs (the schedule form offers these)."""
    context = app.manifest.get("context") or {}
    needed = {
        ref["device_type"] for section in ("sensors", "controllers") for ref in (context.get(section) or {}).values()
    }
    out = []
    for location in session.scalars(select(Location).order_by(Location.name)):
        if all(_devices_of_type(session, location, t) for t in needed):
            out.append(location)
    return out
