"""End user's "my deployments": app instances with status, address, next runs, logs, run now and stop."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from aiot.web.apiclient import ApiError
from aiot.web.pages.store import runs_of
from aiot.web.render import fragment, redirect, render
from aiot.web.routing import WebRoute
from aiot.web.session import END_USER, WebUser, read_form

router = APIRouter(route_class=WebRoute, include_in_schema=False, prefix="/deployments")


async def _schedules(web: WebUser, instance_id: str) -> list[dict[str, Any]] | None:
    """The instance's schedules with their next runs; None when this server has no scheduler API."""
    try:
        out = await web.api.get("/schedules", app_instance_id=instance_id)
    except ApiError as exc:
        if exc.status in (403, 404, 405):
            return None
        raise
    rows = out if isinstance(out, list) else (out or {}).get("schedules", [])
    rows = [s for s in rows if s.get("app_instance_id", instance_id) == instance_id]
    for row in rows:
        row["runs"] = runs_of(row.get("next_runs") or row.get("occurrences") or row.get("next") or [])
    return rows


async def _instances(web: WebUser) -> list[dict[str, Any]]:
    instances, locations = await asyncio.gather(web.api.get("/instances"), web.api.get("/locations"))
    names = {loc["id"]: loc["name"] for loc in locations}
    schedules = await asyncio.gather(*(_schedules(web, i["id"]) for i in instances))
    for instance, rows in zip(instances, schedules, strict=True):
        instance["location"] = names.get(instance["location_id"], instance["location_id"])
        instance["schedules"] = rows
        instance["next_runs"] = sorted((r for s in rows or [] for r in s["runs"]), key=lambda r: str(r["start"]))[:3]
    return instances


@router.get("")
async def deployments(request: Request, web: WebUser = Depends(END_USER)) -> Response:
    return render(request, "store/deployments.html", web, title="My deployments", instances=await _instances(web))


@router.get("/live")
async def deployments_live(request: Request, web: WebUser = Depends(END_USER)) -> Response:
    return fragment(request, "store/_deployments.html", instances=await _instances(web))


async def _instance(web: WebUser, instance_id: str) -> dict[str, Any]:
    instance = await web.api.get(f"/instances/{instance_id}")
    location = await web.api.get_or({}, f"/locations/{instance['location_id']}")
    instance["location"] = location.get("name", instance["location_id"])
    instance["schedules"] = await _schedules(web, instance_id)
    return instance


async def _logs(web: WebUser, instance: dict[str, Any]) -> dict[str, Any]:
    """The latest log lines of the instance's workload; `available` is False without a logs API."""
    if not instance.get("workload_id"):
        return {"available": True, "records": [], "query": None}
    query = {"workload_id": instance["workload_id"], "limit": 100}
    try:
        out = await web.api.get("/logs", **query)
    except ApiError as exc:
        if exc.status in (403, 404, 405):
            return {"available": False, "records": [], "query": None}
        raise
    records = out if isinstance(out, list) else (out or {}).get("records", [])
    return {"available": True, "records": records, "query": query}


async def _versions(web: WebUser, instance: dict[str, Any]) -> dict[str, Any]:
    """The app's other active versions (what an upgrade may choose) and the instance's version history."""
    name, _, current = str(instance.get("app") or "").partition(":")
    releases, history = await asyncio.gather(
        web.api.get_or([], "/apps", name=name), web.api.get_or([], f"/instances/{instance['id']}/history")
    )
    others = [r["version"] for r in releases if r.get("name") == name and r.get("version") != current]
    return {"current": current, "others": others, "history": list(reversed(history))}


@router.get("/{instance_id}")
async def deployment(request: Request, instance_id: str, web: WebUser = Depends(END_USER)) -> Response:
    instance = await _instance(web, instance_id)
    return render(
        request,
        "store/deployment.html",
        web,
        title=instance["name"],
        i=instance,
        logs=await _logs(web, instance),
        versions=await _versions(web, instance),
    )


@router.get("/{instance_id}/live")
async def deployment_live(request: Request, instance_id: str, web: WebUser = Depends(END_USER)) -> Response:
    return fragment(request, "store/_instance.html", i=await _instance(web, instance_id))


@router.post("/{instance_id}/{action}")
async def act(request: Request, instance_id: str, action: str, web: WebUser = Depends(END_USER)) -> Response:
    """run (now, optionally for `minutes`), stop, upgrade (to `version`), rollback, or delete an instance."""
    form = await read_form(request)
    back = str(form.get("back", "")) or f"/deployments/{instance_id}"
    back = back if back.startswith("/deployments") else f"/deployments/{instance_id}"
    if action == "run":
        raw = str(form.get("minutes", "")).strip()
        minutes = float(raw) if raw.replace(".", "", 1).isdigit() else None
        row = await web.api.post(f"/instances/{instance_id}/run", {"minutes": minutes})
        return redirect(back, flash=f"{row['name']} is starting.")
    if action == "stop":
        row = await web.api.post(f"/instances/{instance_id}/stop")
        return redirect(back, flash=f"{row['name']} is stopping.")
    if action in ("upgrade", "rollback"):
        try:
            if action == "upgrade":
                change = await web.api.post(
                    f"/instances/{instance_id}/upgrade", {"version": str(form.get("version", ""))}
                )
            else:
                change = await web.api.post(f"/instances/{instance_id}/rollback")
        except ApiError as exc:
            return redirect(back, flash=f"Not changed: {exc.message}")
        target = change["from_version"] if change["state"] == "rolled_back" else change["to_version"]
        return redirect(back, flash=f"Moving to version {target}; the platform goes back by itself if it fails.")
    if action == "delete":
        await web.api.delete(f"/instances/{instance_id}")
        return redirect("/deployments", flash="Deployment deleted.")
    return redirect(back, flash=f"Unknown action {action!r}.")
