"""Original device type zips (`sensor/<TYPE>.json`, `controller/<TYPE>.json`) and device instance zips
(`sensors/*.json`, `controllers/*.json`) -> our device type definitions and a registration plan.

Original types list only the parameter *types* (`"parameters": ["float", "int"]`), not names. Our types name
every value, so names come from a user-given mapping (`names={"TEMP": ["temperature"]}`) or default to
`value` (one parameter) / `value_0`, `value_1`, ... (several). A controller gets one command, `set`, whose
arguments are those values: the compat SDK's `send_controller_data(i, *args)` sends its positional args
there, in order. A single `image` parameter makes a sensor a frame (JPEG) sensor.

Instances carry `geo_location: {street, city}`; the location they are registered at is named from both
(`<street>-<city>`, slugified), which is also how the original platform matched an app's schedule to devices.
Their `ip_loc` (where the original platform reached the device over Kafka) has no meaning here: devices
connect to us with the credential printed at registration.
"""

from __future__ import annotations

from typing import Any

from aiot.artifacts.legacy.common import (
    Converted,
    LegacyFormatError,
    check_converted,
    dumps,
    identifier,
    load_json,
    require,
    slugify,
)
from aiot.artifacts.manifests import DeviceTypeDefinition

PARAM_TYPES = {
    "int": "integer",
    "integer": "integer",
    "float": "number",
    "double": "number",
    "number": "number",
    "string": "string",
    "str": "string",
    "boolean": "boolean",
    "bool": "boolean",
}
TYPE_DIRS = {"sensor": "sensor", "controller": "controller"}
INSTANCE_DIRS = {"sensors": "sensor", "controllers": "controller"}


TYPE_PREFIX = "legacy-"
"""Converted device types are named `legacy-<type>`: they differ from this platform's own types of the same
kind (values named `value`, controllers take `set`), so `FAN` must not collide with the built-in `fan` (which
would be a 409 on upload, and a wrong simulator under `aiot sim run`)."""


def type_name(original: str) -> str:
    """Our device type name for an original `TYPE` (`TEMP` -> `legacy-temp`)."""
    return slugify(TYPE_PREFIX + original, "device")


def location_name(street: str, city: str) -> str:
    """Our location name for an original `geo_location` (`MG Road`, `Pune` -> `mg-road-pune`)."""
    return slugify(f"{street}-{city}", "loc")


def _value_names(type_key: str, count: int, names: dict[str, list[str]] | None, file: str) -> list[str]:
    given = (names or {}).get(type_key) or (names or {}).get(type_name(type_key))
    if given:
        if len(given) != count:
            raise LegacyFormatError(
                file,
                "parameters",
                f"the name mapping for {type_key} gives {len(given)} names but the type has {count} parameters",
                code="mapping_mismatch",
            )
        return [identifier(n) for n in given]
    return ["value"] if count == 1 else [f"value_{i}" for i in range(count)]


def convert_type(
    doc: Any, kind: str, original: str, file: str, names: dict[str, list[str]] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """One original type file -> (our definition, notes)."""
    notes: list[str] = []
    params = require(doc, file, "parameters", list)
    count = doc.get("parameter_count")
    if count is not None and (not isinstance(count, int) or count != len(params)):
        raise LegacyFormatError(
            file, "parameter_count", f"is {count!r} but 'parameters' lists {len(params)}", code="invalid_value"
        )
    if not params:
        raise LegacyFormatError(file, "parameters", "at least one parameter is needed", code="invalid_value")
    for i, p in enumerate(params):
        if not isinstance(p, str) or (p.lower() not in PARAM_TYPES and p.lower() != "image"):
            raise LegacyFormatError(
                file,
                f"parameters[{i}]",
                f"{p!r} is not one of int, float, string, image, boolean",
                code="invalid_value",
            )
    kinds = [p.lower() for p in params]
    desc_parts = [str(doc[k]) for k in ("company", "model") if isinstance(doc.get(k), str) and doc.get(k)]
    definition: dict[str, Any] = {
        "format": 1,
        "name": type_name(original),
        "kind": kind,
        "description": f"Imported from the original platform's {kind} type {original}"
        + (f" ({' '.join(desc_parts)})" if desc_parts else "")
        + ".",
    }
    if "image" in kinds:
        if kind != "sensor" or len(kinds) != 1:
            raise LegacyFormatError(
                file,
                "parameters",
                "an 'image' parameter is supported only as the single parameter of a sensor (a camera)",
                code="unsupported",
            )
        definition["frame"] = {"encoding": "jpeg"}
        notes.append(f"{original}: image sensor -> JPEG frames (get_sensor_image returns the encoded bytes)")
    else:
        value_names = _value_names(original, len(kinds), names, file)
        values = {n: {"type": PARAM_TYPES[k]} for n, k in zip(value_names, kinds, strict=True)}
        if kind == "sensor":
            definition["fields"] = values
        else:
            definition["commands"] = {
                "set": {"description": "send_controller_data(i, *args): the args in order", "args": values}
            }
            definition["state"] = {n: dict(v, required=False) for n, v in values.items()}
        if not (names and (original in names or type_name(original) in names)):
            notes.append(f"{original}: values named {', '.join(value_names)} (give names with a mapping)")
    check_converted(DeviceTypeDefinition, definition, file)
    return definition, notes


def is_device_type_zip(files: dict[str, bytes]) -> bool:
    return bool(files) and all(
        n.split("/", 1)[0] in TYPE_DIRS and n.endswith(".json") and n.count("/") == 1 for n in files
    )


def is_device_instance_zip(files: dict[str, bytes]) -> bool:
    return bool(files) and all(
        n.split("/", 1)[0] in INSTANCE_DIRS and n.endswith(".json") and n.count("/") == 1 for n in files
    )


def convert_device_types(
    files: dict[str, bytes], source: str = "device-types.zip", names: dict[str, list[str]] | None = None
) -> Converted:
    """All types of an original device type zip -> `Converted(kind="device-types")`, one file per type."""
    out: dict[str, bytes] = {}
    notes: list[str] = []
    for path in sorted(files):
        folder, filename = path.split("/", 1)
        original = filename[:-5]
        definition, type_notes = convert_type(load_json(files, path), TYPE_DIRS[folder], original, path, names)
        if f"{definition['name']}.json" in out:
            raise LegacyFormatError(path, None, f"two types map to the name '{definition['name']}'", code="duplicate")
        if definition["name"] != original:
            notes.append(f"{folder} type {original} is named '{definition['name']}' here")
        notes.extend(type_notes)
        out[f"{definition['name']}.json"] = dumps(definition)
    return Converted(
        kind="device-types", name=", ".join(n[:-5] for n in sorted(out)), source=source, files=out, notes=notes
    )


def convert_device_instances(
    files: dict[str, bytes], source: str = "devices.zip", location: str | None = None
) -> Converted:
    """An original device instance zip -> the locations and devices to register (nothing registered here).

    `location` (a location name) overrides street+city for every device."""
    notes: list[str] = []
    locations: dict[str, dict[str, Any]] = {}
    devices: list[dict[str, Any]] = []
    for path in sorted(files):
        folder, filename = path.split("/", 1)
        doc = load_json(files, path)
        original_type = require(doc, path, "type", str)
        if location:
            loc = location
        else:
            geo = require(doc, path, "geo_location", dict)
            street = require(geo, path, "street", str, "geo_location").strip()
            city = require(geo, path, "city", str, "geo_location").strip()
            if not street or not city:
                raise LegacyFormatError(path, "geo_location", "street and city must not be empty", code="invalid_value")
            loc = location_name(street, city)
            locations.setdefault(loc, {"name": loc, "kind": "site", "address": f"{street}, {city}"})
        ip = doc.get("ip_loc") if isinstance(doc.get("ip_loc"), dict) else {}
        name = slugify(f"{original_type}-{filename[:-5]}", "device")
        devices.append(
            {
                "name": name,
                "device_type": type_name(original_type),
                "kind": INSTANCE_DIRS[folder],
                "location": loc,
                "source_file": path,
                "original_address": f"{ip.get('ip', '')}:{ip.get('port', '')}" if ip else "",
            }
        )
    if location:
        notes.append(f"every device is registered at location '{location}' (given), not at its street+city")
    else:
        notes.append("locations named <street>-<city>: " + ", ".join(sorted(locations)))
    if any(d["original_address"] for d in devices):
        notes.append(
            "ip_loc is not used: each device connects to this platform with the credential printed at registration"
        )
    names = [d["name"] for d in devices]
    if len(set(names)) != len(names):
        raise LegacyFormatError(source, None, "two instance files give the same device name", code="duplicate")
    return Converted(
        kind="devices",
        name=f"{len(devices)} devices",
        source=source,
        locations=list(locations.values()),
        devices=devices,
        notes=notes,
    )
