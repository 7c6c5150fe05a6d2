"""Import packages made for the original platform (see docs/migrating.md): detect the format, convert.

Pure functions (bytes in, `Converted` out): nothing is stored, registered or run here, and uploaded code is
never imported (hook modules are parsed with `ast`, pickles only disassembled). The CLI (`aiot import`) and
the API (`POST /api/v1/import`) store the result as the calling user through the ordinary upload paths, so
every rule of a normal upload applies to a converted package too.
"""

from __future__ import annotations

from pathlib import Path

from aiot.artifacts.legacy.app import ALIAS_FORMAT, convert_app
from aiot.artifacts.legacy.common import Converted, LegacyFormatError, read_zip, read_zip_bytes
from aiot.artifacts.legacy.devices import (
    convert_device_instances,
    convert_device_types,
    is_device_instance_zip,
    is_device_type_zip,
)
from aiot.artifacts.legacy.model import convert_model

KINDS = ("model", "app", "device-types", "devices")


def detect(files: dict[str, bytes]) -> str | None:
    """Which original format these files are (one of KINDS), or None (e.g. already one of ours)."""
    if "model.json" in files or ("app.json" in files and b'"context"' in files["app.json"]):
        return None
    if "config.json" in files:
        return "model"
    if "app.json" in files and "config/control.json" in files:
        return "app"
    if is_device_type_zip(files):
        return "device-types"
    if is_device_instance_zip(files):
        return "devices"
    return None


def convert(
    files: dict[str, bytes],
    source: str,
    *,
    version: str = "1.0.0",
    models: dict[str, str] | None = None,
    names: dict[str, list[str]] | None = None,
    location: str | None = None,
) -> Converted:
    """Detect and convert; LegacyFormatError when the files are none of the original formats."""
    kind = detect(files)
    if kind == "model":
        return convert_model(files, source, version=version)
    if kind == "app":
        return convert_app(files, source, version=version, models=models)
    if kind == "device-types":
        return convert_device_types(files, source, names)
    if kind == "devices":
        return convert_device_instances(files, source, location)
    raise LegacyFormatError(
        source,
        None,
        "not a package of the original platform: expected config.json (model), app.json + "
        "config/control.json (app), sensor/ + controller/ (device types) or sensors/ + controllers/ (devices)",
        code="unknown_format",
    )


def convert_path(path: Path, **options: object) -> Converted:
    """Convert a zip file or a folder holding an original package."""
    if path.is_dir():
        files = {
            p.relative_to(path).as_posix(): p.read_bytes()
            for p in sorted(path.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts
        }
    else:
        files = read_zip(path)
    return convert(files, path.name, **options)  # type: ignore[arg-type]


__all__ = [
    "ALIAS_FORMAT",
    "KINDS",
    "Converted",
    "LegacyFormatError",
    "convert",
    "convert_path",
    "detect",
    "read_zip",
    "read_zip_bytes",
]
