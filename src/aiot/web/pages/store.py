"""End user pages: the app catalogue and the schedule form (locations offered are only those having every
device type the app needs; the time zone defaults to the browser's)."""

from __future__ import annotations

import asyncio
import html
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from packaging.version import InvalidVersion, Version

from aiot.web.apiclient import ApiError
from aiot.web.forms import FormErrors, clean, form_errors, one_error
from aiot.web.render import fragment, redirect, render
from aiot.web.routing import WebRoute
from aiot.web.session import END_USER, WebUser, read_form

router = APIRouter(route_class=WebRoute, include_in_schema=False, prefix="/store")

WEEKDAYS = [
    ("mon", "Mon"),
    ("tue", "Tue"),
    ("wed", "Wed"),
    ("thu", "Thu"),
    ("fri", "Fri"),
    ("sat", "Sat"),
    ("sun", "Sun"),
]
FORM_FIELDS = [
    "name",
    "location",
    "timezone",
    "start_date",
    "end_date",
    "times",
    "duration_minutes",
    "until",
    "repeat",
    "policy",
    "run_minutes",
]
# API field (instances and schedules routes) -> the form input that shows its message.
ALIASES = {
    "name": "name",
    "location": "location",
    "bindings": "location",
    "app": "location",
    "spec.timezone": "timezone",
    "spec.start_date": "start_date",
    "spec.end_date": "end_date",
    "spec.times": "times",
    "spec.every_day": "times",
    "spec.duration_minutes": "duration_minutes",
    "spec.until": "until",
    "spec.weekdays": "weekdays",
    "spec": "times",
    "policy": "policy",
    "timezone": "timezone",
    "start_date": "start_date",
    "end_date": "end_date",
    "times": "times",
    "duration_minutes": "duration_minutes",
    "until": "until",
    "weekdays": "weekdays",
    "minutes": "run_minutes",
    "settings": "settings",
}


def _needs(app: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    context = app["manifest"].get("context") or {}
    return {
        section: [(alias, ref["device_type"]) for alias, ref in (context.get(section) or {}).items()]
        for section in ("sensors", "controllers")
    }


def _zones_attr(locations: list[dict[str, Any]]) -> str:
    """`data-location-zones="{id: zone}"` for the location select: app.js puts the chosen location's zone in the
    form (schedules run in the location's time). Built here as plain, escaped text: joined to the other attributes
    in the template as markup, Jinja would escape their quotes."""
    zones = {loc["id"]: loc.get("timezone") or "UTC" for loc in locations}
    return f'data-location-zones="{html.escape(json.dumps(zones), quote=True)}"'


@router.get("")
async def store(request: Request, web: WebUser = Depends(END_USER)) -> Response:
    apps = newest_versions(await web.api.get("/apps"))
    for app in apps:
        app["needs"] = _needs(app)
    return render(request, "store/list.html", web, title="App store", apps=apps)


def newest_versions(apps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One card per app name: its newest active version, with the others listed under it (an app with two
    uploaded versions showed as two cards that looked alike)."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for app in apps:
        by_name.setdefault(app["name"], []).append(app)
    cards = []
    for name in sorted(by_name):
        versions = sorted(by_name[name], key=lambda a: _version_key(a["version"]), reverse=True)
        cards.append({**versions[0], "older": versions[1:]})
    return cards


def _version_key(version: str) -> Any:
    try:
        return (1, Version(version))
    except InvalidVersion:
        return (0, version)


def schedule_spec(values: dict[str, str], weekdays: list[str]) -> dict[str, Any]:
    """The schedule spec the API takes (`aiot.scheduler.rules.ScheduleSpec`), from the form.

    Dates left empty mean "from today (in the schedule's time zone) for a year"; "all day, every day" is one run
    a day from 00:00 to 23:59 local time. Anything the user typed is passed on as typed, so the API's errors name
    the field and the problem."""
    tz_name = values["timezone"] or "UTC"
    spec: dict[str, Any] = {"timezone": tz_name}
    try:
        today = datetime.now(ZoneInfo(tz_name)).date()
    except (ZoneInfoNotFoundError, ValueError):
        today = datetime.now(UTC).date()
    spec["start_date"] = values["start_date"] or today.isoformat()
    spec["end_date"] = values["end_date"] or (today + timedelta(days=365)).isoformat()
    if values["repeat"] == "every_day":
        spec["times"] = ["00:00"]
        if not values["until"] and not values["duration_minutes"]:
            spec["until"] = "23:59"
    else:
        spec["times"] = [t.strip() for t in values["times"].replace(";", ",").split(",") if t.strip()]
    if values["until"]:
        spec["until"] = values["until"]
    elif values["duration_minutes"]:
        try:
            spec["duration_minutes"] = int(float(values["duration_minutes"]))
        except ValueError:
            spec["duration_minutes"] = values["duration_minutes"]  # the API names the field and the problem
    if weekdays:
        spec["weekdays"] = weekdays
    return spec


def _settings(app: dict[str, Any], form: Any) -> tuple[dict[str, Any], FormErrors]:
    declared = (app["manifest"].get("context") or {}).get("settings") or {}
    out: dict[str, Any] = {}
    errors = FormErrors()
    for name, spec in declared.items():
        raw = str(form.get(f"setting_{name}", "")).strip()
        if raw == "":
            continue
        kind = spec.get("type")
        try:
            out[name] = (
                float(raw)
                if kind == "number"
                else int(raw)
                if kind == "integer"
                else raw.lower() in ("1", "true", "yes", "on")
                if kind == "boolean"
                else raw
            )
        except ValueError:
            errors.add(f"setting_{name}", f"{raw!r} is not a valid {kind}")
    return out, errors


def _bindings(form: Any) -> dict[str, list[str]]:
    return {key[len("bind_") :]: [str(v)] for key, v in form.items() if key.startswith("bind_") and v}


async def _app_page(request: Request, web: WebUser, ref: str, **extra: Any) -> Response:
    app = await web.api.get(f"/apps/{ref}")
    locations = await web.api.get(f"/apps/{app['id']}/locations")
    extra.setdefault(
        "values", {"repeat": "times", "times": "08:00", "duration_minutes": "60", "policy": "", "name": ""}
    )
    return render(
        request,
        "store/app.html",
        web,
        title=app["name"],
        app=app,
        needs=_needs(app),
        locations=locations,
        weekdays=WEEKDAYS,
        location_options=[("", "— choose a location —")] + [(loc["id"], loc["name"]) for loc in locations],
        zones_attr=_zones_attr(locations),
        **extra,
    )


@router.get("/{ref}")
async def app_page(request: Request, ref: str, web: WebUser = Depends(END_USER)) -> Response:
    return await _app_page(request, web, ref)


@router.get("/{ref}/bindings")
async def bindings(request: Request, ref: str, location: str = "", web: WebUser = Depends(END_USER)) -> Response:
    """Device choices for the aliases that several devices at the chosen location could serve (htmx)."""
    app = await web.api.get(f"/apps/{ref}")
    choices = []
    if location:
        for section, items in _needs(app).items():
            for alias, type_name in items:
                devices = await web.api.get_or([], "/devices", location=location, device_type=type_name)
                devices = [d for d in devices if d["state"] == "enabled"]
                if len(devices) > 1:
                    choices.append({"alias": alias, "type": type_name, "section": section, "devices": devices})
    return fragment(request, "store/_bindings.html", choices=choices)


@router.post("/{ref}/preview")
async def preview(request: Request, ref: str, web: WebUser = Depends(END_USER)) -> Response:
    """Next runs of the schedule being filled in, as the scheduler would compute them (htmx)."""
    form = await read_form(request)
    values = clean(form, FORM_FIELDS)
    spec = schedule_spec(values, [str(d) for d in form.getlist("weekdays")])
    try:
        out = await web.api.post("/schedules/preview", {"spec": spec, "count": 5})
    except ApiError as exc:
        if exc.missing_route:
            return fragment(request, "store/_preview.html", unavailable=True)
        return fragment(request, "store/_preview.html", errors=form_errors(exc, ALIASES))
    return fragment(request, "store/_preview.html", runs=runs_of(out), timezone=spec["timezone"])


def runs_of(out: Any) -> list[dict[str, Any]]:
    """Occurrences from a preview or schedule answer, whichever shape: a list, or under runs/occurrences."""
    items = out
    if isinstance(out, dict):
        items = next((out[k] for k in ("runs", "occurrences", "next_runs", "next") if isinstance(out.get(k), list)), [])
    runs = []
    for item in items or []:
        if isinstance(item, str):
            runs.append({"start": item, "end": None})
        elif isinstance(item, dict):
            runs.append(
                {
                    "start": item.get("start") or item.get("starts_at") or item.get("start_at"),
                    "end": item.get("end") or item.get("ends_at") or item.get("end_at"),
                    "local": item.get("local_start") or item.get("start_local"),
                }
            )
    return runs


@router.post("/{ref}")
async def submit(request: Request, ref: str, web: WebUser = Depends(END_USER)) -> Response:
    """Create the instance at the chosen location, then its schedule (or run it now). A schedule the API
    refuses leaves no instance behind."""
    form = await read_form(request)
    app = await web.api.get(f"/apps/{ref}")
    values = clean(form, FORM_FIELDS)
    weekdays = [str(d) for d in form.getlist("weekdays")]
    action = str(form.get("action", "schedule"))

    async def again(errors: FormErrors) -> Response:
        return await _app_page(
            request,
            web,
            ref,
            errors=errors,
            values={**values, "weekdays": weekdays, **{k: str(v) for k, v in form.items()}},
        )

    if not values["location"]:
        return await again(one_error("location", "choose where the app runs"))
    settings, errors = _settings(app, form)
    if errors:
        return await again(errors)
    spec = schedule_spec(values, weekdays)
    schedules_available = True
    if action == "schedule":
        try:
            await web.api.post("/schedules/preview", {"spec": spec, "count": 1})
        except ApiError as exc:
            if not exc.missing_route:
                return await again(form_errors(exc, ALIASES))
            schedules_available = False
    try:
        instance = await web.api.post(
            "/instances",
            {
                "app": app["id"],
                "location": values["location"],
                "name": values["name"],
                "settings": settings,
                "bindings": _bindings(form),
            },
        )
    except ApiError as exc:
        return await again(form_errors(exc, ALIASES))
    if action == "now" or not schedules_available:
        minutes = None
        if values["run_minutes"]:
            try:
                minutes = float(values["run_minutes"])
            except ValueError:
                minutes = None
        try:
            await web.api.post(f"/instances/{instance['id']}/run", {"minutes": minutes})
        except ApiError as exc:
            return redirect(f"/deployments/{instance['id']}", flash=f"Created, but it could not start: {exc.message}")
        note = "" if schedules_available else " (scheduling is not available on this server yet)"
        return redirect(f"/deployments/{instance['id']}", flash=f"{instance['name']} is starting{note}.")
    try:
        body: dict[str, Any] = {"app_instance_id": instance["id"], "spec": spec}
        if values["policy"]:
            body["policy"] = values["policy"]
        await web.api.post("/schedules", body)
    except ApiError as exc:
        await asyncio.shield(web.api.delete(f"/instances/{instance['id']}"))
        return await again(form_errors(exc, ALIASES))
    return redirect(f"/deployments/{instance['id']}", flash=f"{instance['name']} is scheduled.")
