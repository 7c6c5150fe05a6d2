"""`aiot store ...`: where package and log archives are kept, and moving them between backends.

Runs beside the platform with its settings (the same environment / data dir as `aiot up`): with the embedded
NATS server it joins the one `aiot up` runs on the data dir; with AIOT_NATS_URL it connects there.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import typer

from aiot.cli.output import AS_JSON, OUTPUT, Output, console, emit, err_console

if TYPE_CHECKING:
    from aiot.bus.client import Bus
    from aiot.settings import Settings

store_app = typer.Typer(help="Package and log archives: status, and moving them between stores.", no_args_is_help=True)

BACKENDS = ("nats", "azure")


async def _bus(settings: Settings) -> Bus:
    from aiot.bus.client import Bus, connect_from_settings
    from aiot.bus.embedded import EmbeddedNats

    if not settings.embedded_nats:
        return await connect_from_settings(settings, name="aiot-store")
    shared = EmbeddedNats(settings.data_dir, settings.nats_host)
    if not shared.attach():
        err_console.print(
            f"[red]no running platform owns {settings.data_dir}: start `aiot up` first (the NATS object store lives "
            "in its nats-server), or set AIOT_NATS_URL[/]"
        )
        raise typer.Exit(2)
    return await Bus.connect(
        [shared.url], user=shared.platform_user, password=shared.platform_password, name="aiot-store"
    )


async def _migrate(settings: Settings, source: str, target: str) -> list[dict[str, object]]:
    from aiot.blobs.base import CONTAINERS
    from aiot.blobs.factory import open_blob_store
    from aiot.blobs.migrate import migrate_container

    bus = await _bus(settings)
    try:
        reports = []
        for container in CONTAINERS:
            report = await migrate_container(
                container,
                open_blob_store(settings, bus, container, backend=source),
                open_blob_store(settings, bus, container, backend=target),
            )
            reports.append(report.to_json())
        return reports
    finally:
        await bus.close()


async def _status(settings: Settings) -> list[dict[str, object]]:
    from aiot.blobs.base import CONTAINERS
    from aiot.blobs.factory import open_blob_store

    backends = [b for b in BACKENDS if b == "nats" or settings.azure_storage_connection_string]
    bus = await _bus(settings)
    try:
        rows: list[dict[str, object]] = []
        for backend in backends:
            for container in CONTAINERS:
                blobs = await open_blob_store(settings, bus, container, backend=backend).list()
                rows.append(
                    {
                        "backend": backend,
                        "in_use": backend == settings.artifact_store,
                        "container": container,
                        "objects": len(blobs),
                        "bytes": sum(b.size for b in blobs),
                    }
                )
        return rows
    finally:
        await bus.close()


@store_app.command("migrate")
def migrate(
    to: str = typer.Option(..., "--to", help="the store to copy into: azure or nats"),
    output: Output = OUTPUT,
    as_json: bool = AS_JSON,
) -> None:
    """Copy every package and log archive from the store in use (AIOT_ARTIFACT_STORE) into another, verifying
    each copy's SHA-256. Safe to run again (verified copies are skipped); deletes nothing. Then set
    AIOT_ARTIFACT_STORE to the new store and restart the platform."""
    from aiot.blobs.migrate import MigrationError
    from aiot.settings import load_settings

    if to not in BACKENDS:
        err_console.print(f"[red]--to must be one of {', '.join(BACKENDS)}, not {to!r}[/]")
        raise typer.Exit(2)
    settings = load_settings()
    source = settings.artifact_store
    if to == source:
        err_console.print(f"[red]the platform already uses the {to} store (AIOT_ARTIFACT_STORE); nothing to copy[/]")
        raise typer.Exit(2)
    if to == "azure" and not settings.azure_storage_connection_string:
        err_console.print("[red]--to azure needs AIOT_AZURE_STORAGE_CONNECTION_STRING[/]")
        raise typer.Exit(2)
    try:
        reports = asyncio.run(_migrate(settings, source, to))
    except MigrationError as exc:
        err_console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    emit(reports, output, ["container", "copied", "already_present", "bytes_copied"], as_json=as_json)
    if output == Output.table and not as_json:
        console.print(f"every copy verified; set AIOT_ARTIFACT_STORE={to} and restart the platform to use it")


@store_app.command("status")
def status(output: Output = OUTPUT, as_json: bool = AS_JSON) -> None:
    """Objects and bytes per store and container (the Azure store only when its connection string is set)."""
    from aiot.settings import load_settings

    rows = asyncio.run(_status(load_settings()))
    emit(rows, output, ["backend", "in_use", "container", "objects", "bytes"], as_json=as_json)
