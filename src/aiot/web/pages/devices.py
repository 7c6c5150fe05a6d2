"""A device's page: latest values (live), a chart of each numeric field over a chosen window, and for a
controller a form per command, built from its device type (ThingsBoard and Home Assistant chart by default).

Everything comes from the REST API as the signed-in user, so a device outside the user's locations is a 404
here exactly as it is there; sending commands is for admins (the API decides).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from aiot.web.apiclient import ApiError
from aiot.web.charts import series_chart
from aiot.web.render import fragment, redirect, render
from aiot.web.routing import WebRoute
from aiot.web.session import ANY, WebUser, read_form

router = APIRouter(route_class=WebRoute, include_in_schema=False, prefix="/devices")
WINDOWS = {"15m": timedelta(minutes=15), "1h": timedelta(hours=1), "6h": timedelta(hours=6), "24h": timedelta(hours=24)}
HISTORY_LIMIT = 1000


def numeric_series(records: list[dict[str, Any]], start: datetime) -> dict[str, list[tuple[datetime, float]]]:
    """field -> [(time, value)] of the numeric and boolean values in `records` since `start` (booleans as
    0/1: a switch's on/off over time is worth a chart too)."""
    series: dict[str, list[tuple[datetime, float]]] = {}
    for record in records:
        when = datetime.fromisoformat(record["ts"])
        if when < start:
            continue
        for name, value in (record.get("values") or {}).items():
            if isinstance(value, bool):
                series.setdefault(name, []).append((when, 1.0 if value else 0.0))
            elif isinstance(value, int | float):
                series.setdefault(name, []).append((when, float(value)))
    return series


def _units(definition: dict[str, Any]) -> dict[str, str]:
    fields = {**(definition.get("fields") or {}), **(definition.get("state") or {})}
    return {name: f" {spec['unit']}" for name, spec in fields.items() if isinstance(spec, dict) and spec.get("unit")}


async def _device(web: WebUser, device_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    device = await web.api.get(f"/devices/{device_id}")
    kind = await web.api.get_or({}, f"/device-types/{device['device_type']}")
    return device, kind.get("definition") or {}


async def _live(web: WebUser, device_id: str) -> dict[str, Any]:
    return await web.api.get_or({}, f"/devices/{device_id}/latest")


@router.get("/{device_id}")
async def device_page(request: Request, device_id: str, window: str = "1h", web: WebUser = Depends(ANY)) -> Response:
    if window not in WINDOWS:
        window = "1h"
    (device, definition), live, records = await asyncio.gather(
        _device(web, device_id),
        _live(web, device_id),
        web.api.get_or([], f"/devices/{device_id}/history", limit=HISTORY_LIMIT),
    )
    end = datetime.now(UTC)
    start = end - WINDOWS[window]
    units = _units(definition)
    charts = [
        {
            "field": name,
            "svg": series_chart(
                points,
                start=start,
                end=end,
                unit=units.get(name, ""),
                title=f"{device['name']} {name} over the last {window}",
            ),
        }
        for name, points in sorted(numeric_series(records, start).items())
    ]
    return render(
        request,
        "devices/device.html",
        web,
        title=device["name"],
        device=device,
        live=live,
        definition=definition,
        charts=charts,
        window=window,
        windows=list(WINDOWS),
        capped=len(records) >= HISTORY_LIMIT,
    )


@router.get("/{device_id}/live")
async def device_live(request: Request, device_id: str, web: WebUser = Depends(ANY)) -> Response:
    """The latest values (htmx polls this every 2 s)."""
    return fragment(request, "devices/_latest.html", live=await _live(web, device_id))


def command_args(spec: dict[str, Any], form: dict[str, Any]) -> dict[str, Any]:
    """The form's text fields as the types the command's args declare (the API validates ranges)."""
    args: dict[str, Any] = {}
    for name, arg in (spec.get("args") or {}).items():
        raw = str(form.get(f"arg-{name}", "")).strip()
        kind = arg.get("type") if isinstance(arg, dict) else None
        if kind == "boolean":
            args[name] = raw in ("on", "true", "1", "yes")
        elif raw == "":
            continue
        elif kind == "integer":
            args[name] = int(raw) if raw.lstrip("-").isdigit() else raw
        elif kind == "number":
            try:
                args[name] = float(raw)
            except ValueError:
                args[name] = raw
        else:
            args[name] = raw
    return args


@router.post("/{device_id}/commands/{command}")
async def send_command(request: Request, device_id: str, command: str, web: WebUser = Depends(ANY)) -> Response:
    form = await read_form(request)
    _device_row, definition = await _device(web, device_id)
    spec = (definition.get("commands") or {}).get(command)
    back = f"/devices/{device_id}"
    if spec is None:
        return redirect(back, flash=f"This device has no command {command!r}.")
    try:
        out = await web.api.post(
            f"/devices/{device_id}/commands", {"command": command, "args": command_args(spec, form)}
        )
    except ApiError as exc:
        return redirect(back, flash=f"{command}: {exc.message}")
    state = ", ".join(f"{k}={v}" for k, v in (out.get("state") or {}).items())
    return redirect(back, flash=f"{command}: acknowledged; state now {state or 'unchanged'}.")
