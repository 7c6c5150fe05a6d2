"""`aiot up`, `aiot service run NAME`, `aiot db upgrade`: commands that run platform processes locally."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from aiot.cli.output import console, err_console
from aiot.errors import PlatformError
from aiot.logs.handler import quiet_http_client_loggers

if TYPE_CHECKING:
    from aiot.launch.control_plane import StartupReport
    from aiot.settings import Settings

# The services, their web framework and database layer are imported inside the commands that run them: every
# `aiot` command imports this module, and people's commands (login, push, status) should start in well under a
# second, not wait ~2 s for FastAPI and SQLAlchemy they never use.

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
service_app = typer.Typer(help="Run or list single platform services.", no_args_is_help=True)


def _settings(port: int | None, data_dir: Path | None, **extra: object) -> Settings:
    from aiot.settings import load_settings

    overrides: dict[str, object] = {k: v for k, v in extra.items() if v is not None}
    if port is not None:
        overrides["port"] = port
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    return load_settings(**overrides)


def _configure_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_http_client_loggers()


def _print_report(report: StartupReport) -> None:
    if report.api_url:
        url = report.api_url
        console.print(f"[bold green]AIoT control plane[/] at [link]{url}[/]  (API docs: {url}/docs)")
    console.print(f"NATS: {report.nats_url}   database: {report.database_url}")
    if report.generated_admin_password:
        console.print(
            f"first admin created: [bold]{report.admin_username}[/] / "
            f"password [bold]{report.generated_admin_password}[/]"
            "  (shown once: change it with `aiot login` then `aiot password`)"
        )
    else:
        console.print(f"admin login: {report.admin_username} (password as set before, or AIOT_ADMIN_PASSWORD)")
    console.print("press Ctrl+C to stop")


async def _run(settings: Settings, names: list[str] | None, without: tuple[str, ...]) -> None:
    from aiot.launch.control_plane import ControlPlane

    plane = ControlPlane(settings, names, without)
    report = await plane.start()
    _print_report(report)
    await plane.run_until_signalled()


def _loop_factory() -> Any:
    """uvloop when installed (it comes with uvicorn[standard]): the services' NATS traffic (ingest's two
    publishes per reading above all) costs less on it; see bench/README.md, "Profiling the worst ratio"."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _check_service_names(names: list[str]) -> None:
    """Unknown service names are a usage error (exit 2) before anything starts."""
    from aiot.launch.catalog import SERVICE_FACTORIES, unknown_services

    unknown = unknown_services(names)
    if unknown:
        err_console.print(
            f"[red]error:[/] unknown service {', '.join(map(repr, unknown))}; known: {', '.join(SERVICE_FACTORIES)}"
        )
        raise typer.Exit(2)


def run_control_plane(settings: Settings, names: list[str] | None, without: tuple[str, ...] = ()) -> None:
    from aiot.bus.auth import INSECURE_FAST_HASHES, insecure_fast_hashes
    from aiot.bus.client import BusUnavailable
    from aiot.bus.embedded import EmbeddedNatsError

    if insecure_fast_hashes():
        err_console.print(
            f"[red]warning:[/] {INSECURE_FAST_HASHES}=1: passwords and credentials are hashed at their cheapest "
            "cost (for the test suite only); unset it anywhere real"
        )
    _check_service_names([*(names or []), *without])
    _configure_logging(settings)

    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(_run(settings, names, without))
    except PlatformError as exc:
        err_console.print(f"[red]error:[/] {exc.message}")
        raise typer.Exit(1) from exc
    except (EmbeddedNatsError, BusUnavailable) as exc:
        err_console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        pass


def up(
    port: int | None = typer.Option(None, help="HTTP port (AIOT_PORT; default 8080)."),
    data_dir: Path | None = typer.Option(None, help="Data directory (AIOT_DATA_DIR)."),
    nodes: int | None = typer.Option(None, help="Local node agents to start beside it (AIOT_NODES)."),
    autoscale: bool | None = typer.Option(None, help="Add/remove local nodes by load (AIOT_AUTOSCALE)."),
    without: list[str] = typer.Option(
        [],
        "--without",
        help="A service not to run here (repeatable): you run it yourself with `aiot service run "
        "NAME`, e.g. scheduler replicas under a process manager.",
    ),
) -> None:
    """Start the control plane with every service (embedded NATS and SQLite unless configured otherwise)."""
    run_control_plane(_settings(port, data_dir, nodes=nodes, autoscale=autoscale), None, tuple(without))


def demo(
    port: int | None = typer.Option(None, help="HTTP port (AIOT_PORT; default 8080)."),
    data_dir: Path | None = typer.Option(None, help="Data directory (AIOT_DATA_DIR)."),
) -> None:
    """Run the whole platform story on this machine: 2 nodes, simulated devices, sample models and apps."""
    from aiot.demo import DemoError, run_demo

    settings = _settings(port, data_dir)
    _configure_logging(settings)
    try:
        asyncio.run(run_demo(settings, console))
    except (PlatformError, DemoError) as exc:
        err_console.print(f"[red]demo failed:[/] {getattr(exc, 'message', exc)}")
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        pass


@service_app.command("run")
def service_run(
    name: str = typer.Argument(..., help="A service name, as `aiot service ls` lists them."),
    port: int | None = typer.Option(None, help="HTTP port, for the api service."),
    data_dir: Path | None = typer.Option(None),
) -> None:
    """Run one platform service alone, against the same database and NATS as the others."""
    run_control_plane(_settings(port, data_dir), [name])


@service_app.command("ls")
def service_ls() -> None:
    """List the platform services `aiot up` runs."""
    from aiot.launch.catalog import SERVICE_FACTORIES

    for name in SERVICE_FACTORIES:
        console.print(name)


@db_app.command("upgrade")
def db_upgrade(data_dir: Path | None = typer.Option(None), revision: str = "head") -> None:
    """Apply database migrations (the control plane also does this when it starts)."""
    settings = _settings(None, data_dir)
    from aiot.datadir import prepare_data_dir

    prepare_data_dir(settings.data_dir)
    from aiot.store import migrate

    migrate.upgrade(settings.effective_database_url, revision)
    console.print(f"database at {settings.effective_database_url.split('@')[-1]} is at {revision}")
