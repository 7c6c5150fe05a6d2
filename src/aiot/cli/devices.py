"""`aiot location ...`, `aiot device ...` and `aiot sim run`: the admin's view of the physical world."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import sys
from datetime import UTC, datetime, timedelta

import typer

from aiot.cli.client import ApiClient, CliError
from aiot.cli.output import AS_JSON, OUTPUT, Output, console, emit

location_app = typer.Typer(
    help="Locations (admin adds and grants; everyone lists the ones they were granted).", no_args_is_help=True
)
device_app = typer.Typer(help="Device instances and their credentials (admin).", no_args_is_help=True)
sim_app = typer.Typer(help="Device simulators.", no_args_is_help=True)


def _print_connect(connect: dict) -> None:
    console.print("[bold yellow]credential (shown once, keep it now):[/]")
    console.print(f"  username: {connect['username']}\n  password: {connect['password']}")
    if connect.get("mqtt_port"):
        console.print(f"  MQTT: {connect['mqtt_host']}:{connect['mqtt_port']}   NATS: {connect.get('nats_url')}")
    for channel, topic in connect["topics"].items():
        console.print(f"  {channel:8} topic {topic}")


@location_app.command("add")
def add_location(
    name: str,
    kind: str = typer.Option("site", help="school, bank, junction, home, ..."),
    timezone: str = typer.Option("UTC", "--tz", help="IANA time zone, e.g. Asia/Kolkata"),
    address: str = "",
    parent: str | None = None,
    output: Output = OUTPUT,
) -> None:
    row = ApiClient().post(
        "/locations", json={"name": name, "kind": kind, "timezone": timezone, "address": address, "parent": parent}
    )
    if output != Output.table:
        emit(row, output)
        return
    console.print(f"location [bold]{row['name']}[/] ({row['id']}, {row['timezone']})")


@location_app.command("ls")
def ls_locations(output: Output = OUTPUT, as_json: bool = AS_JSON) -> None:
    emit(ApiClient().get("/locations"), output, ("id", "name", "kind", "timezone", "device_count"), as_json=as_json)


@location_app.command("show")
def show_location(ref: str, output: Output = OUTPUT) -> None:
    emit(ApiClient().get(f"/locations/{ref}"), output)


@location_app.command("grant")
def grant_location(location: str, user: str) -> None:
    """Give USER (an end user or developer) LOCATION and every location below it."""
    row = ApiClient().post(f"/locations/{location}/grants", json={"user": user})
    console.print(f"{row['user']} may now see and bind devices at [bold]{row['location']}[/] and below")


@location_app.command("revoke")
def revoke_location(location: str, user: str) -> None:
    """Take LOCATION back from USER; their instances there no longer start."""
    ApiClient().delete(f"/locations/{location}/grants/{user}")
    console.print(f"{user} no longer sees {location}")


@location_app.command("grants")
def ls_grants(
    location: str | None = typer.Argument(None, help="only this location's grants"),
    user: str | None = typer.Option(None, help="only this user's grants"),
    output: Output = OUTPUT,
    as_json: bool = AS_JSON,
) -> None:
    """Who was given which location (admins)."""
    client = ApiClient()
    if location:
        rows = [r for r in client.get(f"/locations/{location}/grants") if not user or user in (r["user"], r["user_id"])]
    else:
        rows = client.get("/location-grants", params={"user": user} if user else None)
    emit(rows, output, ("location", "user", "granted_at"), as_json=as_json)


@device_app.command("add")
def add_device(
    name: str,
    device_type: str = typer.Option(..., "--type"),
    location: str = typer.Option(..., "--location"),
    output: Output = OUTPUT,
) -> None:
    row = ApiClient().post("/devices", json={"name": name, "device_type": device_type, "location": location})
    if output != Output.table:  # the API's answer, the one-time password included
        emit(row, output)
        return
    console.print(f"device [bold]{row['name']}[/] ({row['device_type']}) at {row['location']}: {row['id']}")
    _print_connect(row["connect"])


@device_app.command("ls")
def ls_devices(location: str | None = None, output: Output = OUTPUT, as_json: bool = AS_JSON) -> None:
    rows = ApiClient().get("/devices", params={"location": location} if location else None)
    emit(rows, output, ("id", "name", "device_type", "kind", "location", "state", "credential"), as_json=as_json)


@device_app.command("rotate")
def rotate(device_id: str) -> None:
    _print_connect(ApiClient().post(f"/devices/{device_id}/credentials/rotate"))


@device_app.command("revoke")
def revoke(device_id: str) -> None:
    ApiClient().post(f"/devices/{device_id}/credentials/revoke")
    console.print(f"{device_id} revoked: disconnected and refused until rotated")


@device_app.command("disable")
def disable(device_id: str) -> None:
    ApiClient().patch(f"/devices/{device_id}", json={"state": "disabled"})
    console.print(f"{device_id} disabled")


@device_app.command("enable")
def enable(device_id: str) -> None:
    ApiClient().patch(f"/devices/{device_id}", json={"state": "enabled"})
    console.print(f"{device_id} enabled")


@device_app.command("latest")
def latest(device_id: str, output: Output = OUTPUT) -> None:
    emit(ApiClient().get(f"/devices/{device_id}/latest"), output)


def parse_since(text: str) -> str:
    """An ISO time, or a duration back from now: `90s`, `10m`, `2h`, `1d` -> ISO time (UTC)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text and text[-1] in units and text[:-1].replace(".", "", 1).isdigit():
        return (datetime.now(UTC) - timedelta(seconds=float(text[:-1]) * units[text[-1]])).isoformat()
    try:
        return datetime.fromisoformat(text).isoformat()
    except ValueError:
        raise CliError(
            f"--since {text!r}: give an ISO time (2026-12-03T10:00:00+00:00) or a duration like 90s, 10m, 2h, 1d"
        ) from None


@device_app.command("history")
def history(
    device_id: str,
    limit: int = typer.Option(100, min=1, max=1000),
    since: str | None = typer.Option(None, help="ISO time or a duration back from now: 10m, 2h, 1d"),
    output: Output = OUTPUT,
    csv_out: bool = typer.Option(False, "--csv", help="CSV for a spreadsheet"),
) -> None:
    """A device's stored readings (oldest first), e.g. `aiot device history thermo --since 1h --csv > t.csv`."""
    params: dict[str, object] = {"limit": limit}
    if since:
        params["since"] = parse_since(since)
    rows = ApiClient().get(f"/devices/{device_id}/history", params=params)
    if not csv_out:
        emit(
            rows,
            output,
            ("ts", "channel", "values"),
            table_rows=lambda d: [{**r, "values": json.dumps(r.get("values"))} for r in d],
        )
        return
    names = sorted({k for r in rows for k in (r.get("values") or {})})
    writer = csv.writer(sys.stdout)
    writer.writerow(["ts", "channel", *names])
    for r in rows:
        values = r.get("values") or {}
        writer.writerow([r.get("ts"), r.get("channel"), *(values.get(n, "") for n in names)])


@device_app.command("send")
def send(
    device_id: str,
    command: str,
    args: str = typer.Option("{}", help="JSON object of arguments"),
    output: Output = OUTPUT,
) -> None:
    try:
        parsed = json.loads(args)
    except ValueError as exc:
        raise CliError(f"--args must be a JSON object: {exc}") from exc
    emit(ApiClient().post(f"/devices/{device_id}/commands", json={"command": command, "args": parsed}), output)


@sim_app.command("run")
def sim_run(
    location: str = typer.Option(..., help="location name or id"),
    duration: float = typer.Option(0, help="seconds to run (0: until Ctrl+C)"),
    scene: str = typer.Option("mixed", help="camera scene: face, empty or mixed"),
) -> None:
    """Simulate every device at a location that has a simulator (camera, light, temperature, fan, display, ac,
    lamp, alarm). Each device's credential is rotated to get a password: real devices there would need the new
    one."""
    from aiot.devices.simulators.links import Connection
    from aiot.devices.simulators.runner import SIM_MODELS, SimDevice, run_simulators

    client = ApiClient()
    place = client.get(f"/locations/{location}")
    sims = []
    for device in place["devices"]:
        if device["device_type"] not in SIM_MODELS or device["state"] != "enabled":
            continue
        connect = client.post(f"/devices/{device['id']}/credentials/rotate")
        if not connect.get("nats_url"):
            raise CliError("the control plane did not say where NATS is; simulators need the NATS URL")
        options = {"scene": scene} if device["device_type"] == "camera" else {}
        sims.append(
            SimDevice(
                device_id=device["id"],
                model=device["device_type"],
                options=options,
                connection=Connection(
                    nats_url=connect["nats_url"], username=connect["username"], password=connect["password"]
                ),
            )
        )
    if not sims:
        raise CliError(f"no simulatable devices at {place['name']}")
    console.print(f"simulating {len(sims)} devices at {place['name']} ({place['timezone']}); Ctrl+C to stop")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_simulators(sims, tz=place["timezone"], duration=duration or None))
