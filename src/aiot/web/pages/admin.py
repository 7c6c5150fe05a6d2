"""Admin pages: users and roles, device types, locations with their devices (live), credentials, nodes."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from aiot.store.models import Role
from aiot.web.apiclient import ApiError
from aiot.web.charts import load_chart
from aiot.web.forms import clean, form_errors, one_error
from aiot.web.render import fragment, redirect, render
from aiot.web.routing import WebRoute
from aiot.web.session import ADMIN, WebUser, read_form

router = APIRouter(route_class=WebRoute, include_in_schema=False, prefix="/admin")
ROLE_OPTIONS = [(r.value, r.value.replace("_", " ")) for r in Role]
USER_FIELDS = ["username", "email", "role", "password"]


# ---------------------------------------------------------------------- users


async def _users_page(request: Request, web: WebUser, **extra: Any) -> Response:
    users = await web.api.get("/users")
    return render(request, "admin/users.html", web, title="Users", users=users, roles=ROLE_OPTIONS, **extra)


@router.get("/users")
async def users(request: Request, web: WebUser = Depends(ADMIN)) -> Response:
    return await _users_page(request, web)


@router.post("/users")
async def create_user(request: Request, web: WebUser = Depends(ADMIN)) -> Response:
    form = await read_form(request)
    values = clean(form, USER_FIELDS)
    body = {**values, "email": values["email"] or None}
    try:
        user = await web.api.post("/users", body)
    except ApiError as exc:
        return await _users_page(request, web, errors=form_errors(exc, USER_FIELDS), values=values)
    return redirect("/admin/users", flash=f"User {user['username']} created as {user['role'].replace('_', ' ')}.")


@router.post("/users/{user_id}")
async def update_user(request: Request, user_id: str, web: WebUser = Depends(ADMIN)) -> Response:
    """One form per row: `action` is role (with `role`), disable, enable or password (with `password`)."""
    form = await read_form(request)
    action = str(form.get("action", ""))
    body: dict[str, Any] = (
        {"role": form.get("role")}
        if action == "role"
        else {"disabled": action == "disable"}
        if action in ("disable", "enable")
        else {"password": str(form.get("password", ""))}
        if action == "password"
        else {}
    )
    if not body:
        return redirect("/admin/users", flash="Nothing to change.")
    try:
        user = await web.api.patch(f"/users/{user_id}", body)
    except ApiError as exc:
        return await _users_page(request, web, row_errors={user_id: exc.message})
    what = {
        "role": f"is now {user['role'].replace('_', ' ')}",
        "disable": "is disabled (logged out everywhere)",
        "enable": "is enabled",
        "password": "has a new password",
    }[action]
    return redirect("/admin/users", flash=f"{user['username']} {what}.")


# ---------------------------------------------------------------------- device types


async def _types_page(request: Request, web: WebUser, **extra: Any) -> Response:
    types = await web.api.get("/device-types")
    return render(request, "admin/device_types.html", web, title="Device types", types=types, **extra)


@router.get("/device-types")
async def device_types(request: Request, web: WebUser = Depends(ADMIN)) -> Response:
    return await _types_page(request, web)


@router.post("/device-types")
async def add_device_type(request: Request, web: WebUser = Depends(ADMIN)) -> Response:
    form = await read_form(request)
    text = str(form.get("definition", ""))
    filename = "definition"
    upload = form.get("file")
    if upload is not None and not isinstance(upload, str) and upload.filename:
        data = await upload.read()
        filename = upload.filename
        text = data.decode("utf-8", errors="replace")
    else:
        data = text.encode()
    if not data.strip():
        return await _types_page(
            request,
            web,
            values={"definition": text},
            errors=one_error("definition", "paste a device type definition (JSON) or choose a .json file"),
        )
    try:
        row = await web.api.post(
            "/device-types", content=data, headers={"x-filename": filename, "content-type": "application/json"}
        )
    except ApiError as exc:
        errors = form_errors(exc, {"body": "definition"}, files=True)
        return await _types_page(request, web, errors=errors, values={"definition": text})
    return redirect("/admin/device-types", flash=f"Device type {row['name']} ({row['kind']}) registered.")


@router.post("/device-types/{ref}/delete")
async def delete_device_type(request: Request, ref: str, web: WebUser = Depends(ADMIN)) -> Response:
    await read_form(request)
    try:
        await web.api.delete(f"/device-types/{ref}")
    except ApiError as exc:
        return await _types_page(request, web, errors=one_error(None, exc.message))
    return redirect("/admin/device-types", flash="Device type deleted.")


# ---------------------------------------------------------------------- locations and devices


LOCATION_FIELDS = ["name", "kind", "address", "timezone", "parent"]
DEVICE_FIELDS = ["name", "device_type"]
GRANT_FIELDS = ["user"]


async def _locations_page(request: Request, web: WebUser, **extra: Any) -> Response:
    locations = await web.api.get("/locations")
    return render(request, "admin/locations.html", web, title="Locations", locations=locations, **extra)


@router.get("/locations")
async def locations(request: Request, web: WebUser = Depends(ADMIN)) -> Response:
    return await _locations_page(request, web)


@router.post("/locations")
async def add_location(request: Request, web: WebUser = Depends(ADMIN)) -> Response:
    form = await read_form(request)
    values = clean(form, LOCATION_FIELDS)
    body = {
        **values,
        "parent": values["parent"] or None,
        "timezone": values["timezone"] or "UTC",
        "kind": values["kind"] or "site",
    }
    try:
        row = await web.api.post("/locations", body)
    except ApiError as exc:
        return await _locations_page(request, web, errors=form_errors(exc, LOCATION_FIELDS), values=values)
    return redirect(f"/admin/locations/{row['id']}", flash=f"Location {row['name']} added.")


async def _location_page(request: Request, web: WebUser, ref: str, **extra: Any) -> Response:
    location, types, people = await asyncio.gather(
        web.api.get(f"/locations/{ref}"), web.api.get("/device-types"), web.api.get("/users")
    )
    devices, grants = await asyncio.gather(
        _devices_live(web, location["id"]), web.api.get(f"/locations/{location['id']}/grants")
    )
    options = [("", "— choose —")] + [(t["name"], f"{t['name']} ({t['kind']})") for t in types]
    granted = {g["user_id"] for g in grants}
    user_options = [("", "— choose a person —")] + [
        (u["username"], f"{u['username']} ({u['role'].replace('_', ' ')})")
        for u in people
        if u["role"] != "admin" and not u["disabled"] and u["id"] not in granted
    ]
    return render(
        request,
        "admin/location.html",
        web,
        title=location["name"],
        location=location,
        devices=devices,
        types=types,
        type_options=options,
        grants=grants,
        user_options=user_options,
        **extra,
    )


async def _devices_live(web: WebUser, location_id: str) -> list[dict[str, Any]]:
    """Devices with credential status, presence and latest value (one API call each, concurrently)."""
    devices = await web.api.get("/devices", location=location_id)

    async def latest(device: dict[str, Any]) -> dict[str, Any]:
        return await web.api.get_or({}, f"/devices/{device['id']}/latest")

    for device, live in zip(devices, await asyncio.gather(*(latest(d) for d in devices)), strict=True):
        device["presence"] = live.get("presence")
        device["latest"] = live.get("latest")
    return devices


@router.get("/locations/{ref}")
async def location(request: Request, ref: str, web: WebUser = Depends(ADMIN)) -> Response:
    return await _location_page(request, web, ref)


@router.get("/locations/{ref}/devices")
async def location_devices(request: Request, ref: str, web: WebUser = Depends(ADMIN)) -> Response:
    """The live part of a location page (htmx polls it every 2 s)."""
    location = await web.api.get(f"/locations/{ref}")
    return fragment(request, "admin/_devices.html", location=location, devices=await _devices_live(web, location["id"]))


@router.post("/locations/{ref}/devices")
async def add_device(request: Request, ref: str, web: WebUser = Depends(ADMIN)) -> Response:
    form = await read_form(request)
    values = clean(form, DEVICE_FIELDS)
    try:
        device = await web.api.post("/devices", {**values, "location": ref})
    except ApiError as exc:
        return await _location_page(request, web, ref, errors=form_errors(exc, DEVICE_FIELDS), values=values)
    return await _location_page(
        request, web, ref, issued={"device": device, "connect": device["connect"], "what": "registered"}
    )


@router.post("/locations/{ref}/grants")
async def grant_location(request: Request, ref: str, web: WebUser = Depends(ADMIN)) -> Response:
    """Give a person this location and every location below it (they see and bind only granted places)."""
    form = await read_form(request)
    values = clean(form, GRANT_FIELDS)
    try:
        row = await web.api.post(f"/locations/{ref}/grants", {"user": values["user"]})
    except ApiError as exc:
        return await _location_page(request, web, ref, errors=form_errors(exc, GRANT_FIELDS), grant_values=values)
    return redirect(
        f"/admin/locations/{row['location_id']}",
        flash=f"{row['user']} may now use {row['location']} and the locations below it.",
    )


@router.post("/locations/{ref}/grants/{user}/revoke")
async def revoke_location(request: Request, ref: str, user: str, web: WebUser = Depends(ADMIN)) -> Response:
    await read_form(request)
    try:
        await web.api.delete(f"/locations/{ref}/grants/{user}")
    except ApiError as exc:
        return await _location_page(request, web, ref, errors=one_error(None, exc.message))
    return redirect(f"/admin/locations/{ref}", flash=f"{user} no longer sees this location; their apps here stopped.")


@router.post("/devices/{device_id}/{action}")
async def device_action(request: Request, device_id: str, action: str, web: WebUser = Depends(ADMIN)) -> Response:
    """rotate (new password, shown once), revoke, enable, disable or delete a device."""
    form = await read_form(request)
    location_id = str(form.get("location", ""))
    back = f"/admin/locations/{location_id}"
    try:
        if action == "rotate":
            connect = await web.api.post(f"/devices/{device_id}/credentials/rotate")
            device = await web.api.get(f"/devices/{device_id}")
            return await _location_page(
                request, web, location_id, issued={"device": device, "connect": connect, "what": "rotated"}
            )
        if action == "revoke":
            await web.api.post(f"/devices/{device_id}/credentials/revoke")
            return redirect(back, flash=f"Credential of {device_id} revoked: it is disconnected.")
        if action in ("enable", "disable"):
            await web.api.patch(f"/devices/{device_id}", {"state": f"{action}d"})
            return redirect(back, flash=f"Device {device_id} {action}d.")
        if action == "delete":
            await web.api.delete(f"/devices/{device_id}")
            return redirect(back, flash=f"Device {device_id} deleted.")
    except ApiError as exc:
        return await _location_page(request, web, location_id, errors=one_error(None, exc.message))
    return redirect(back, flash=f"Unknown action {action!r}.")


# ---------------------------------------------------------------------- nodes


async def _nodes(web: WebUser) -> list[dict[str, Any]]:
    nodes = await web.api.get("/nodes")
    workloads = {w["id"]: w for w in await web.api.get_or([], "/workloads")}
    histories = await asyncio.gather(*(web.api.get_or({"samples": []}, f"/nodes/{n['id']}/load") for n in nodes))
    for node, history in zip(nodes, histories, strict=True):
        series = [(datetime.fromisoformat(s["at"]), s["cpu"], s.get("memory") or 0.0) for s in history["samples"]]
        load = node.get("load") or {}
        node["chart"] = load_chart(series, title=f"CPU and memory of {node['name']}")
        node["cpu"] = float(load.get("cpu_percent", 0.0) or 0.0)
        node["memory"] = float(load.get("memory_percent", 0.0) or 0.0)
        node["samples"] = len(series)
        node["sandboxed"] = load.get("sandboxed")  # None: the node has not said (an older agent)
        node["workload_rows"] = [workloads.get(w, {"id": w, "state": "?"}) for w in node.get("workloads", [])]
    return nodes


@router.get("/nodes")
async def nodes(request: Request, web: WebUser = Depends(ADMIN)) -> Response:
    return render(request, "admin/nodes.html", web, title="Nodes", nodes=await _nodes(web))


@router.get("/nodes/live")
async def nodes_live(request: Request, web: WebUser = Depends(ADMIN)) -> Response:
    return fragment(request, "admin/_nodes.html", nodes=await _nodes(web))


@router.post("/nodes/join-token")
async def join_token(request: Request, web: WebUser = Depends(ADMIN)) -> Response:
    await read_form(request)
    token = (await web.api.post("/nodes/join-tokens"))["token"]
    return render(
        request,
        "admin/nodes.html",
        web,
        title="Nodes",
        nodes=await _nodes(web),
        join_token=token,
        server=str(request.base_url).rstrip("/"),
    )


@router.post("/nodes/{ref}/drain")
async def drain(request: Request, ref: str, web: WebUser = Depends(ADMIN)) -> Response:
    await read_form(request)
    node = await web.api.post(f"/nodes/{ref}/drain")
    return redirect("/admin/nodes", flash=f"Node {node['name']} is draining: its workloads move elsewhere.")
