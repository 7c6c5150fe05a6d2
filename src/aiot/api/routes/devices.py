"""Locations and devices (admins register), location grants, credentials, readings, commands.

Who sees what (`aiot.devices.grants`): admins every location and device; everyone else only the locations an
admin granted them (with their subtrees) and the devices there. Anything outside answers 404 like a missing id.
Credential changes are announced on the bus so the NATS auth service applies them within seconds.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Response, status
from pydantic import BaseModel, Field

from aiot.accounts.users import get_user
from aiot.api.deps import Ctx, CurrentUser
from aiot.api.schemas import OutModel, Timestamp
from aiot.api.security import Allow, AnyUser, Principal
from aiot.apps.service import DeployerInstanceController
from aiot.artifacts.manifests import DeviceTypeDefinition
from aiot.bus import codec
from aiot.devices import grants, inventory, subjects
from aiot.devices.ingest import LATEST_BUCKET, PRESENCE_BUCKET, StoredRecord, decode_record, read_history
from aiot.errors import Conflict, ServiceUnavailable, ValidationFailed
from aiot.ids import new_id
from aiot.natsauth.sources import announce_auth_change
from aiot.services.contract import ServiceContext
from aiot.store.devices import Device, DeviceState, Location, LocationGrant
from aiot.store.models import Role

router = APIRouter(tags=["devices"])
ADMIN = Allow(Role.admin)
COMMAND_SENDERS = Allow(Role.admin)


class LocationIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    kind: str = Field("site", max_length=40, description="school, bank, junction, home, ...")
    address: str = Field("", max_length=300)
    timezone: str = Field("UTC", max_length=64, description="IANA time zone, e.g. Asia/Kolkata")
    parent: str | None = Field(None, description="id or name of the enclosing location")


class DeviceIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    device_type: str = Field(description="device type name or id")
    location: str = Field(description="location name or id")


class GrantIn(BaseModel):
    user: str = Field(min_length=1, max_length=64, description="user id or username (not an admin)")


class DevicePatch(BaseModel):
    state: DeviceState


class CommandIn(BaseModel):
    command: str = Field(min_length=1, max_length=64)
    args: dict[str, Any] = Field(default_factory=dict)
    timeout: float = Field(5.0, gt=0, le=60, description="seconds to wait for the controller's acknowledgement")


class LocationOut(OutModel):
    id: str
    name: str
    kind: str
    address: str
    timezone: str = Field(description="IANA time zone")
    parent_id: str | None
    created_at: Timestamp
    device_count: int | None = Field(None, description="enabled devices here (lists and details only)")


class GrantOut(OutModel):
    location_id: str
    location: str
    user_id: str
    user: str
    granted_by: str | None
    granted_at: Timestamp


class DeviceOut(OutModel):
    id: str
    name: str
    device_type: str
    kind: str = Field(description="sensor or controller")
    location_id: str
    location: str
    state: DeviceState
    created_at: Timestamp
    credential: str | None = Field(None, description="active, revoked or none")


class ConnectInfo(OutModel):
    """Where and as whom the device connects; the password is shown once."""

    username: str
    password: str
    topics: dict[str, str] = Field(description="MQTT topic per channel")
    subjects: dict[str, str] = Field(description="NATS subject per channel")
    nats_url: str | None = None
    mqtt_host: str | None = None
    mqtt_port: int | None = None


class RegisteredDeviceOut(DeviceOut):
    connect: ConnectInfo


class DeviceDetailOut(DeviceOut):
    definition: dict[str, Any] = Field(description="the device type's definition (channels, commands)")


class LocationDetailOut(LocationOut):
    devices: list[DeviceOut]


class FrameOut(OutModel):
    encoding: str
    bytes: int
    width: int | None
    height: int | None


class RecordOut(OutModel):
    device_id: str
    channel: str
    ts: Timestamp
    values: dict[str, Any]
    frame: FrameOut | None = None
    cmd_id: str | None = None
    seq: int | None = None


class LatestOut(OutModel):
    device_id: str
    latest: RecordOut | None
    presence: dict[str, Any] | None


class CommandOut(OutModel):
    cmd_id: str
    state: dict[str, Any] = Field(description="the controller's acknowledged new state")
    ts: Timestamp


def location_out(row: Location, device_count: int | None = None) -> dict[str, Any]:
    out = {
        "id": row.id,
        "name": row.name,
        "kind": row.kind,
        "address": row.address,
        "timezone": row.timezone,
        "parent_id": row.parent_id,
        "created_at": row.created_at.isoformat(),
    }
    if device_count is not None:
        out["device_count"] = device_count
    return out


def grant_out(row: LocationGrant, location: Location, username: str) -> dict[str, Any]:
    return {
        "location_id": location.id,
        "location": location.name,
        "user_id": row.user_id,
        "user": username,
        "granted_by": row.granted_by,
        "granted_at": row.granted_at.isoformat(),
    }


def device_out(row: Device, credential: str | None = None) -> dict[str, Any]:
    out = {
        "id": row.id,
        "name": row.name,
        "device_type": row.device_type.name,
        "kind": row.device_type.kind.value,
        "location_id": row.location_id,
        "location": row.location.name,
        "state": row.state.value,
        "created_at": row.created_at.isoformat(),
    }
    if credential is not None:
        out["credential"] = credential
    return out


def _connect_info(ctx: ServiceContext, device_id: str, password: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "username": device_id,
        "password": password,
        "topics": {ch: subjects.mqtt_topic(device_id, ch) for ch in subjects.CHANNELS},
        "subjects": {ch: subjects.device_subject(device_id, ch) for ch in subjects.CHANNELS},
    }
    if ctx.embedded is not None:
        info.update(nats_url=ctx.embedded.url, mqtt_host=ctx.embedded._connect_host, mqtt_port=ctx.embedded.mqtt_port)
    elif ctx.settings.nats_url:
        info.update(nats_url=ctx.settings.nats_url.split(",")[0])
    return info


# ---------------------------------------------------------------------- locations


@router.post("/locations", status_code=status.HTTP_201_CREATED, response_model=LocationOut)
def add_location(ctx: Ctx, body: LocationIn, _: Principal = Depends(ADMIN)) -> dict:
    with ctx.db.session() as session:
        row = inventory.create_location(
            session, name=body.name, kind=body.kind, address=body.address, timezone=body.timezone, parent=body.parent
        )
        return location_out(row)


@router.get("/locations", response_model=list[LocationOut])
def list_locations(ctx: Ctx, device_type: str | None = None, principal: Principal = Depends(AnyUser)) -> list[dict]:
    """The locations the caller may see with their device counts; `device_type` keeps only locations having
    that type."""
    with ctx.db.session() as session:
        scope = grants.scope_for(session, principal.user.id)
        return [location_out(loc, count) for loc, count in grants.visible_locations(session, scope, device_type)]


@router.get("/locations/{ref}", response_model=LocationDetailOut)
def show_location(ctx: Ctx, ref: str, principal: CurrentUser) -> dict:
    with ctx.db.session() as session:
        loc = grants.visible_location(session, grants.scope_for(session, principal.user.id), ref)
        devices = grants.location_devices(session, loc)
        return {**location_out(loc, len(devices)), "devices": [device_out(d) for d in devices]}


@router.delete("/locations/{ref}", status_code=status.HTTP_204_NO_CONTENT)
def delete_location(ctx: Ctx, ref: str, _: Principal = Depends(ADMIN)) -> Response:
    with ctx.db.session() as session:
        inventory.delete_location(session, inventory.get_location(session, ref))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# ---------------------------------------------------------------------- grants


@router.post("/locations/{ref}/grants", status_code=status.HTTP_201_CREATED, response_model=GrantOut)
def grant_location(
    ctx: Ctx, ref: str, body: GrantIn, response: Response, principal: Principal = Depends(ADMIN)
) -> dict:
    """Give a user this location and every location below it (201 new, 200 when they already had it)."""
    with ctx.db.session() as session:
        loc = inventory.get_location(session, ref)
        user = get_user(session, body.user)
        if user.role == Role.admin:
            raise ValidationFailed(f"{user.username} is an admin and already sees every location", field="user")
        row, created = grants.grant(session, loc, user, principal.user.id)
        if not created:
            response.status_code = status.HTTP_200_OK
        return grant_out(row, loc, user.username)


@router.get("/locations/{ref}/grants", response_model=list[GrantOut])
def list_location_grants(ctx: Ctx, ref: str, _: Principal = Depends(ADMIN)) -> list[dict]:
    with ctx.db.session() as session:
        loc = inventory.get_location(session, ref)
        return [
            grant_out(g, loc, get_user(session, g.user_id).username)
            for g in grants.list_grants(session, location_id=loc.id)
        ]


@router.delete("/locations/{ref}/grants/{user}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_location(ctx: Ctx, ref: str, user: str, _: Principal = Depends(ADMIN)) -> Response:
    """Take a grant back: the user no longer sees the subtree, their running instances there are stopped (they
    would otherwise keep reading and driving its devices) and none of them starts again."""
    with ctx.db.session() as session:
        person = get_user(session, user)
        grants.revoke(session, inventory.get_location(session, ref), person)
    with ctx.db.session() as session:
        stranded = grants.instances_outside_scope(session, person.id)
    for instance_id in stranded:
        await DeployerInstanceController(ctx).stop(instance_id, None)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/location-grants", response_model=list[GrantOut])
def list_all_grants(ctx: Ctx, user: str | None = None, _: Principal = Depends(ADMIN)) -> list[dict]:
    """Every grant, or one user's (`user`: id or username)."""
    with ctx.db.session() as session:
        user_id = get_user(session, user).id if user else None
        return [
            grant_out(g, session.get(Location, g.location_id), get_user(session, g.user_id).username)
            for g in grants.list_grants(session, user_id=user_id)
        ]


# ---------------------------------------------------------------------- devices


@router.post("/devices", status_code=status.HTTP_201_CREATED, response_model=RegisteredDeviceOut)
async def add_device(ctx: Ctx, body: DeviceIn, _: Principal = Depends(ADMIN)) -> dict:
    """Register a device; the answer holds its credential and where to connect. The password is shown once."""
    with ctx.db.session() as session:
        device, issued = inventory.create_device(
            session, name=body.name, device_type=body.device_type, location=body.location
        )
        out = device_out(device, "active")
    await announce_auth_change(ctx)
    return {**out, "connect": _connect_info(ctx, issued.username, issued.password)}


@router.get("/devices", response_model=list[DeviceOut])
def list_devices(
    ctx: Ctx, location: str | None = None, device_type: str | None = None, principal: Principal = Depends(AnyUser)
) -> list[dict]:
    """The devices the caller may see (admins: all), optionally of one location and/or device type."""
    with ctx.db.session() as session:
        scope = grants.scope_for(session, principal.user.id)
        rows = grants.visible_devices(session, scope, location, device_type)
        credentials = inventory.credential_statuses(session, [d.id for d in rows])  # one query, not one per row
        return [device_out(d, credentials.get(d.id, "none")) for d in rows]


@router.get("/devices/{device_id}", response_model=DeviceDetailOut)
def show_device(ctx: Ctx, device_id: str, principal: CurrentUser) -> dict:
    with ctx.db.session() as session:
        row = grants.visible_device(session, grants.scope_for(session, principal.user.id), device_id)
        return {**device_out(row, inventory.credential_status(session, row)), "definition": row.device_type.definition}


@router.patch("/devices/{device_id}", response_model=DeviceOut)
async def update_device(ctx: Ctx, device_id: str, body: DevicePatch, _: Principal = Depends(ADMIN)) -> dict:
    """Enable or disable a device; a disabled device is disconnected and its messages are dropped."""
    with ctx.db.session() as session:
        row = inventory.get_device(session, device_id)
        inventory.set_state(session, row, body.state)
        out = device_out(row, inventory.credential_status(session, row))
    await announce_auth_change(ctx)
    return out


@router.delete("/devices/{device_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_device(ctx: Ctx, device_id: str, _: Principal = Depends(ADMIN)) -> Response:
    with ctx.db.session() as session:
        inventory.delete_device(session, device_id)
    await announce_auth_change(ctx)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/devices/{device_id}/credentials/rotate", response_model=ConnectInfo)
async def rotate_credential(ctx: Ctx, device_id: str, _: Principal = Depends(ADMIN)) -> dict:
    """Issue a new password (shown once); the old one stops working within seconds."""
    with ctx.db.session() as session:
        issued = inventory.issue_credential(session, inventory.get_device(session, device_id))
    await announce_auth_change(ctx)
    return _connect_info(ctx, issued.username, issued.password)


@router.post("/devices/{device_id}/credentials/revoke", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_credential(ctx: Ctx, device_id: str, _: Principal = Depends(ADMIN)) -> Response:
    """Cut the device off: its connections are closed and it cannot reconnect until rotated."""
    with ctx.db.session() as session:
        inventory.revoke_credential(session, inventory.get_device(session, device_id))
    await announce_auth_change(ctx)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# ---------------------------------------------------------------------- readings and commands


def record_out(record: StoredRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "device_id": record.device_id,
        "channel": record.channel,
        "ts": record.ts.isoformat(),
        "values": record.values,
    }
    if record.frame is not None:
        out.update(
            frame={
                "encoding": record.frame.encoding,
                "bytes": len(record.frame.data),
                "width": record.frame.width,
                "height": record.frame.height,
            }
        )
    if record.cmd_id:
        out["cmd_id"] = record.cmd_id
    if record.seq is not None:
        out["seq"] = record.seq
    return out


def _bus(ctx: ServiceContext) -> Any:
    bus = ctx.bus
    if bus is None:
        raise ServiceUnavailable("the message bus is not connected")
    return bus


def _visible_device(ctx: ServiceContext, principal: Principal, device_id: str) -> Device:
    """The device if the caller may see it (404 otherwise, like a missing one)."""
    with ctx.db.session() as session:
        return grants.visible_device(session, grants.scope_for(session, principal.user.id), device_id)


@router.get("/devices/{device_id}/latest", response_model=LatestOut)
async def latest_reading(ctx: Ctx, device_id: str, principal: CurrentUser) -> dict:
    """The latest validated reading (or controller state) and the device's presence."""
    _visible_device(ctx, principal, device_id)
    bus = _bus(ctx)
    result: dict[str, Any] = {"device_id": device_id, "latest": None, "presence": None}
    for bucket, key in ((LATEST_BUCKET, "latest"), (PRESENCE_BUCKET, "presence")):
        try:
            entry = await (await bus.kv(bucket)).get(device_id)
        except Exception:  # noqa: BLE001 - nats-py raises KeyNotFoundError when the device never reported
            continue
        if entry.value:
            result[key] = (
                record_out(decode_record(entry.value, device_id, entry.revision))
                if key == "latest"
                else json.loads(entry.value)
            )
    return result


@router.get("/devices/{device_id}/history", response_model=list[RecordOut])
async def reading_history(
    ctx: Ctx, device_id: str, since: datetime | None = None, limit: int = 100, principal: Principal = Depends(AnyUser)
) -> list[dict]:
    if not 1 <= limit <= 1000:
        raise ValidationFailed("limit must be between 1 and 1000", field="limit")
    _visible_device(ctx, principal, device_id)
    records = await read_history(_bus(ctx).js, device_id, since=since, limit=limit)
    return [record_out(r) for r in records]


@router.post("/devices/{device_id}/commands", response_model=CommandOut)
async def send_command(
    ctx: Ctx, device_id: str, body: CommandIn, principal: Principal = Depends(COMMAND_SENDERS)
) -> dict:
    """Send a command to a controller and wait for its acknowledged new state."""
    device = _visible_device(ctx, principal, device_id)
    if device.device_type.kind.value != "controller":
        raise ValidationFailed(
            f"device {device_id} is a {device.device_type.kind.value}, not a controller", field="device_id"
        )
    if device.state != DeviceState.enabled:
        raise Conflict(f"device {device_id} is disabled", field="device_id")
    type_def = DeviceTypeDefinition.model_validate(device.device_type.definition)
    cmd_id = new_id("cmd")
    try:
        payload = codec.encode_command(cmd_id, body.command, body.args, type_def=type_def)
    except codec.PayloadError as exc:
        raise ValidationFailed(exc.message, field=f"args.{exc.field}" if exc.field else "command") from exc
    bus = _bus(ctx)
    acked: asyncio.Future[codec.StateReport] = asyncio.get_running_loop().create_future()

    async def on_state(msg: Any) -> None:
        try:
            report = codec.decode_state(msg.data)
        except codec.PayloadError:
            return
        if report.cmd_id == cmd_id and not acked.done():
            acked.set_result(report)

    sub = await bus.subscribe(subjects.state_subject(device_id), on_state)
    try:
        await bus.publish(subjects.cmd_subject(device_id), payload)
        try:
            report = await asyncio.wait_for(acked, timeout=body.timeout)
        except TimeoutError as exc:
            raise ServiceUnavailable(
                f"controller {device_id} did not acknowledge {body.command!r} within {body.timeout:g} s "
                "(is it online?)",
                field="device_id",
                details={"cmd_id": cmd_id},
            ) from exc
    finally:
        await sub.unsubscribe()
    if report.error:
        raise Conflict(
            f"controller {device_id} refused {body.command!r}: {report.error}",
            field="command",
            details={"cmd_id": cmd_id},
        )
    return {"cmd_id": cmd_id, "state": report.state, "ts": report.ts.isoformat()}
