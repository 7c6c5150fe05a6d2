"""`aiot import PATH...`: packages of the original platform, converted and uploaded as the logged-in user.

Each PATH (a zip or a folder) is recognised (model, app, device types, device instances) and converted
locally first, so a broken original is reported before anything is sent, and the conversion (with every choice
the converter made) is printed. Without `--dry-run` the original zip goes to `POST /api/v1/import`, which
converts it the same way and stores it as you. Paths are imported in dependency order: device types, devices,
models, then apps (an app's models and device types must exist). `--dry-run DIR` writes the converted packages
(model/app folders, device type files, a devices plan) to DIR instead; push them later with the usual commands.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from aiot.cli.client import ApiClient, CliError
from aiot.cli.output import console

if TYPE_CHECKING:
    from aiot.artifacts.legacy import Converted

# The converter (pydantic models, zip handling) is imported by the command that uses it, not when the CLI
# starts: every `aiot` command paid for it before (about a tenth of a second).

ORDER = {"device-types": 0, "devices": 1, "model": 2, "app": 3}


def write_converted(converted: Converted, dest: Path) -> Path:
    """Write one conversion under `dest`; returns the folder or file written."""
    if converted.kind in ("model", "app"):
        folder = dest / converted.name
        for name, data in converted.files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
        return folder
    if converted.kind == "device-types":
        folder = dest / "device-types"
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in converted.files.items():
            (folder / name).write_bytes(data)
        return folder
    path = dest / f"devices-{Path(converted.source).stem}.json"
    dest.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"locations": converted.locations, "devices": converted.devices}, indent=2) + "\n")
    return path


def _show(converted: Converted) -> None:
    console.print(f"[bold]{converted.source}[/]: original {converted.kind} -> [bold]{converted.name}[/]")
    for note in converted.notes:
        console.print(f"  - {note}")


def _upload(path: Path, params: dict[str, Any]) -> dict[str, Any]:
    from aiot.artifacts.packing import zip_folder

    with tempfile.TemporaryDirectory(prefix="aiot-import-") as tmp:
        archive = zip_folder(path, Path(tmp) / f"{path.name}.zip") if path.is_dir() else path
        return ApiClient(timeout=300).post(
            "/import",
            content=archive.read_bytes(),
            params=params,
            headers={"Content-Type": "application/zip", "X-Filename": archive.name},
        )


def _report(kind: str, stored: Any) -> None:
    if kind in ("model", "app"):
        console.print(f"  stored {kind} [bold]{stored['name']} {stored['version']}[/] as {stored['id']}")
    elif kind == "device-types":
        console.print("  device types registered: " + ", ".join(t["name"] for t in stored))
    else:
        console.print("[bold yellow]  device credentials (shown once, keep them now):[/]")
        for device in stored["devices"]:
            connect = device["connect"]
            console.print(
                f"  {device['name']} ({device['device_type']}) at {device['location']}: "
                f"username {connect['username']} password {connect['password']}"
            )


def import_command(
    paths: list[Path] = typer.Argument(..., help="original packages: zips or folders"),
    dry_run: Path | None = typer.Option(
        None, "--dry-run", help="write the converted packages to this folder instead of uploading"
    ),
    location: str | None = typer.Option(
        None, "--location", help="register every device here instead of at its street+city"
    ),
    version: str = typer.Option("1.0.0", "--version", help="version of converted models and apps"),
    model: list[str] = typer.Option(
        [], "--model", help="OLD_MODEL_ID=MODEL_NAME for an app's config/models.json (repeat)"
    ),
    names: str | None = typer.Option(
        None, "--names", help="value names per original device type: TEMP=temperature;DHT=temperature,humidity"
    ),
) -> None:
    """Import packages made for the original platform (model, app, device type and device instance zips)."""
    from aiot.api.legacy_args import parse_model_map, parse_names
    from aiot.artifacts.legacy import LegacyFormatError, convert_path
    from aiot.errors import ValidationFailed

    try:
        options = {
            "version": version,
            "models": parse_model_map(model),
            "names": parse_names(names),
            "location": location,
        }
    except ValidationFailed as exc:
        raise CliError(exc.message) from None
    done: list[tuple[Path, Converted]] = []
    for path in paths:
        if not path.exists():
            raise CliError(f"{path} does not exist: give an original package zip or folder")
        try:
            done.append((path, convert_path(path, **options)))
        except LegacyFormatError as exc:
            raise CliError(f"{path}: {exc}") from None
    done.sort(key=lambda item: ORDER[item[1].kind])
    for path, converted in done:
        _show(converted)
        if dry_run is not None:
            console.print(f"  written to {write_converted(converted, dry_run)}")
            continue
        params: dict[str, Any] = {"version": version, "model": model}
        if names:
            params["names"] = names
        if location:
            params["location"] = location
        _report(converted.kind, _upload(path, params)["stored"])
