"""`aiot model ...`, `aiot app ...`, `aiot device-type ...`: push, list, show, download, deprecate, delete."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from aiot.artifacts.packing import zip_folder
from aiot.cli.client import ApiClient, CliError
from aiot.cli.output import AS_JSON, OUTPUT, Output, console, emit

model_app = typer.Typer(help="Model packages (AI developers).", no_args_is_help=True)
app_app = typer.Typer(help="App packages (app developers).", no_args_is_help=True)
device_type_app = typer.Typer(help="Device types (admin).", no_args_is_help=True)

PACKAGE_COLUMNS = ("id", "name", "version", "status", "size", "created_at")


def _chunks(path: Path, progress: Progress, task: int) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(256 * 1024):
            progress.update(task, advance=len(chunk))
            yield chunk


def _push(collection: str, path: Path) -> dict:
    if not path.exists():
        raise CliError(f"{path} does not exist: give a package folder or a .zip file")
    with tempfile.TemporaryDirectory(prefix="aiot-push-") as tmp:
        archive = path
        if path.is_dir():
            archive = zip_folder(path, Path(tmp) / f"{path.name}.zip")
        size = archive.stat().st_size
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=console,
            transient=True,
        ) as progress:
            task = progress.add_task(f"uploading {archive.name}", total=size)
            return ApiClient(timeout=300).post(
                f"/{collection}",
                content=_chunks(archive, progress, task),
                headers={"Content-Type": "application/zip", "X-Filename": archive.name},
            )


def _register(typer_app: typer.Typer, collection: str, noun: str) -> None:
    @typer_app.command("push")
    def push(
        path: Path = typer.Argument(..., help=f"{noun} folder (zipped for you) or .zip"), output: Output = OUTPUT
    ) -> None:
        """Validate and upload a package; every problem is listed by file and field."""
        row = _push(collection, path)
        if output != Output.table:
            emit(row, output)
            return
        label = f"{row['name']} {row['version']}"
        console.print(f"{noun} [bold]{label}[/] stored as {row['id']} (sha256 {row['sha256'][:12]})")

    @typer_app.command("ls")
    def ls(
        name: str | None = typer.Option(None),
        all_: bool = typer.Option(False, "--all", help="Include deprecated."),
        output: Output = OUTPUT,
        as_json: bool = AS_JSON,
    ) -> None:
        rows = ApiClient().get(
            f"/{collection}",
            params={"name": name, "include_deprecated": all_} if name else {"include_deprecated": all_},
        )
        emit(rows, output, PACKAGE_COLUMNS, title=collection, as_json=as_json)

    @typer_app.command("show")
    def show(ref: str = typer.Argument(..., help="id, name or name:version"), output: Output = OUTPUT) -> None:
        emit(ApiClient().get(f"/{collection}/{ref}"), output)

    @typer_app.command("download")
    def download(ref: str, output: Path = typer.Option(None, "-o", "--output")) -> None:
        client = ApiClient(timeout=300)
        row = client.get(f"/{collection}/{ref}")
        target = output or Path(f"{row['name']}-{row['version']}.zip")
        data = client.request("GET", f"/{collection}/{row['id']}/download", raw=True)
        target.write_bytes(data)
        console.print(f"wrote {target} ({len(data)} bytes)")

    @typer_app.command("deprecate")
    def deprecate(ref: str) -> None:
        row = ApiClient().post(f"/{collection}/{ref}/deprecate")
        console.print(f"{row['name']} {row['version']} deprecated")

    @typer_app.command("rm")
    def rm(ref: str) -> None:
        ApiClient().delete(f"/{collection}/{ref}")
        console.print(f"deleted {ref}")


_register(model_app, "models", "model")
_register(app_app, "apps", "app")


@device_type_app.command("add")
def add_device_type(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="device type JSON"), output: Output = OUTPUT
) -> None:
    row = ApiClient().post(
        "/device-types",
        content=file.read_bytes(),
        headers={"Content-Type": "application/json", "X-Filename": file.name},
    )
    if output != Output.table:
        emit(row, output)
        return
    console.print(f"device type [bold]{row['name']}[/] ({row['kind']}) registered as {row['id']}")


@device_type_app.command("ls")
def ls_device_types(output: Output = OUTPUT, as_json: bool = AS_JSON) -> None:
    emit(
        ApiClient().get("/device-types"),
        output,
        ("id", "name", "kind", "created_at"),
        title="device types",
        as_json=as_json,
    )
