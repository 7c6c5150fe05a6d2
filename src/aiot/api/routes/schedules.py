"""Schedules (end users for their own app instances, admins for any): create, list, show with the next runs in
UTC and local time, enable/disable, delete (stopping a running occurrence), the occurrence history, and a
preview of the runs a spec yields without storing anything (the schedule form uses it as the user types)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Response, status
from pydantic import BaseModel, Field, WithJsonSchema

from aiot.api.deps import Ctx
from aiot.api.schemas import OutModel, Timestamp
from aiot.api.security import Allow, AnyUser, Principal
from aiot.errors import ValidationFailed
from aiot.scheduler import ledger, schedules
from aiot.scheduler.rules import ScheduleSpec, SpecError, next_occurrences, parse_spec
from aiot.scheduler.service import controller_for
from aiot.services.contract import ServiceContext
from aiot.store.models import Role
from aiot.store.scheduling import Occurrence, OccurrenceState, OverlapPolicy, Schedule
from aiot.timeutil import utcnow

router = APIRouter(tags=["schedules"])
USERS = Allow(Role.end_user, Role.admin)
MAX_DEADLINE_S = 7 * 24 * 3600


def _inline_schema() -> dict[str, Any]:
    """ScheduleSpec's JSON Schema with its `$defs` inlined (a `#/$defs/...` ref would dangle inside OpenAPI)."""
    schema = ScheduleSpec.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items()}
        return [inline(v) for v in node] if isinstance(node, list) else node

    return inline(schema)


# Validated by hand (`parse_spec`), so the end date is checked against today and each error names its field.
SpecBody = Annotated[dict[str, Any], WithJsonSchema(_inline_schema())]


class PolicyIn(BaseModel):
    late_start_deadline_s: int = Field(
        300,
        ge=0,
        le=MAX_DEADLINE_S,
        description="a run missed while the platform was down starts late only "
        "within this many seconds, else it is skipped",
    )
    overlap: OverlapPolicy = Field(
        OverlapPolicy.forbid,
        description="forbid: skip a start while the instance still runs; replace: stop the old run",
    )


class ScheduleIn(BaseModel):
    app_instance_id: str
    spec: SpecBody
    policy: PolicyIn = Field(default_factory=PolicyIn)
    name: str = Field("", max_length=100)
    enabled: bool = True


class SchedulePatch(BaseModel):
    enabled: bool | None = None
    name: str | None = Field(None, max_length=100)
    policy: PolicyIn | None = None


class PreviewIn(BaseModel):
    spec: SpecBody
    count: int = Field(10, ge=1, le=100)
    after: datetime | None = Field(None, description="list runs starting at or after this instant (default now)")


# ---------------------------------------------------------------------- rendering


def _spec(data: dict[str, Any], now: datetime) -> ScheduleSpec:
    try:
        return parse_spec(data, now)
    except SpecError as exc:
        raise ValidationFailed(f"spec.{exc.field}: {exc.message}", field=f"spec.{exc.field}") from exc


class RunOut(OutModel):
    """One run in UTC and in the schedule's local time (with its offset, so DST is visible)."""

    start_utc: Timestamp
    end_utc: Timestamp
    start_local: Timestamp
    end_local: Timestamp


class OccurrenceOut(RunOut):
    id: str
    schedule_id: str
    app_instance_id: str
    state: str
    reason: str
    fired_by: str | None
    fired_at: Timestamp | None
    stopped_at: Timestamp | None


class SchedulePolicyOut(OutModel):
    late_start_deadline_s: float
    overlap: str


class ScheduleOut(OutModel):
    id: str
    name: str
    app_instance_id: str
    owner_id: str
    spec: dict[str, Any]
    timezone: str
    enabled: bool
    policy: SchedulePolicyOut
    created_at: Timestamp
    next: list[RunOut] = Field(description="the next runs (none while disabled)")
    running: OccurrenceOut | None = Field(None, description="details only: the run in progress, if any")


class PreviewOut(OutModel):
    timezone: str
    occurrences: list[RunOut]


def run_out(start: datetime, end: datetime, zone: str) -> dict[str, Any]:
    """One run in UTC and in the schedule's local time (with its offset, so DST is visible)."""
    tz = ZoneInfo(zone)
    return {
        "start_utc": start.isoformat(),
        "end_utc": end.isoformat(),
        "start_local": start.astimezone(tz).isoformat(),
        "end_local": end.astimezone(tz).isoformat(),
    }


def occurrence_out(row: Occurrence, zone: str) -> dict[str, Any]:
    return {
        "id": row.id,
        "schedule_id": row.schedule_id,
        "app_instance_id": row.app_instance_id,
        **run_out(row.start_at, row.end_at, zone),
        "state": row.state.value,
        "reason": row.reason,
        "fired_by": row.fired_by,
        "fired_at": row.fired_at.isoformat() if row.fired_at else None,
        "stopped_at": row.stopped_at.isoformat() if row.stopped_at else None,
    }


def schedule_out(row: Schedule) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "app_instance_id": row.app_instance_id,
        "owner_id": row.owner_id,
        "spec": row.spec,
        "timezone": row.timezone,
        "enabled": row.enabled,
        "policy": {"late_start_deadline_s": row.late_start_deadline_s, "overlap": row.overlap.value},
        "created_at": row.created_at.isoformat(),
    }


def _upcoming(row: Schedule, now: datetime, count: int) -> list[dict[str, Any]]:
    if not row.enabled:
        return []
    spec = ScheduleSpec.stored(row.spec)
    return [run_out(s, e, row.timezone) for s, e in next_occurrences(spec, now, count)]


def _policy(body: PolicyIn) -> schedules.Policy:
    return schedules.Policy(late_start_deadline_s=body.late_start_deadline_s, overlap=body.overlap)


def _wake(ctx: ServiceContext) -> None:
    service = ctx.services.get("scheduler")
    if service is not None and hasattr(service, "wake"):
        service.wake()


async def _stop_running(ctx: ServiceContext, schedule_id: str, reason: str) -> list[str]:
    running = await asyncio.to_thread(ledger.claim_running_for_schedule, ctx.db, schedule_id, utcnow(), reason)
    controller = controller_for(ctx)
    for instance_id, occurrence_id in running:
        await controller.stop(instance_id, occurrence_id)
    return [occurrence_id for _, occurrence_id in running]


# ---------------------------------------------------------------------- routes


@router.post("/schedules/preview", response_model=PreviewOut)
def preview(body: PreviewIn, _: Principal = Depends(AnyUser)) -> dict:
    """The next `count` runs a spec yields, in UTC and local time; nothing is stored."""
    now = utcnow()
    spec = _spec(body.spec, now)
    after = body.after or now
    if after.tzinfo is None:
        raise ValidationFailed("after must carry a time zone offset (e.g. 2026-03-08T00:00:00Z)", field="after")
    return {
        "timezone": spec.timezone,
        "occurrences": [run_out(s, e, spec.timezone) for s, e in next_occurrences(spec, after, body.count)],
    }


@router.post("/schedules", status_code=status.HTTP_201_CREATED, response_model=ScheduleOut)
def add_schedule(ctx: Ctx, body: ScheduleIn, principal: Principal = Depends(USERS)) -> dict:
    now = utcnow()
    spec = _spec(body.spec, now)
    with ctx.db.session() as session:
        row = schedules.create_schedule(
            session,
            principal.caller,
            app_instance_id=body.app_instance_id,
            spec=spec,
            policy=_policy(body.policy),
            name=body.name,
            enabled=body.enabled,
            now=now,
        )
        out = {**schedule_out(row), "next": _upcoming(row, now, 5)}
    _wake(ctx)
    return out


@router.get("/schedules", response_model=list[ScheduleOut])
def list_schedules(ctx: Ctx, app_instance_id: str | None = None, principal: Principal = Depends(USERS)) -> list[dict]:
    with ctx.db.session() as session:
        rows = schedules.list_schedules(session, principal.caller, app_instance_id)
        now = utcnow()  # each with its next runs: the end user's deployments page shows them
        return [{**schedule_out(row), "next": _upcoming(row, now, 3)} for row in rows]


@router.get("/schedules/{schedule_id}", response_model=ScheduleOut)
def show_schedule(ctx: Ctx, schedule_id: str, count: int = 5, principal: Principal = Depends(USERS)) -> dict:
    """The schedule with its next `count` runs, in UTC and in the schedule's local time."""
    if not 1 <= count <= 100:
        raise ValidationFailed("count must be between 1 and 100", field="count")
    with ctx.db.session() as session:
        row = schedules.get_owned(session, principal.caller, schedule_id)
        running = schedules.running_occurrence(session, row)
        return {
            **schedule_out(row),
            "next": _upcoming(row, utcnow(), count),
            "running": occurrence_out(running, row.timezone) if running else None,
        }


@router.patch("/schedules/{schedule_id}", response_model=ScheduleOut)
def update_schedule(ctx: Ctx, schedule_id: str, body: SchedulePatch, principal: Principal = Depends(USERS)) -> dict:
    """Enable or disable (a disabled schedule starts nothing new; a run in progress still ends at its time),
    rename, or change its policy."""
    now = utcnow()
    with ctx.db.session() as session:
        row = schedules.get_owned(session, principal.caller, schedule_id)
        schedules.change_schedule(
            session,
            row,
            now=now,
            name=body.name,
            policy=_policy(body.policy) if body.policy is not None else None,
            enabled=body.enabled,
        )
        out = {**schedule_out(row), "next": _upcoming(row, now, 5)}
    _wake(ctx)
    return out


@router.delete("/schedules/{schedule_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_schedule(ctx: Ctx, schedule_id: str, principal: Principal = Depends(USERS)) -> Response:
    """Delete the schedule and its history; a run in progress is stopped first."""
    with ctx.db.session() as session:
        schedules.get_owned(session, principal.caller, schedule_id)
        schedules.retire_schedule(session, schedule_id)
    await _stop_running(ctx, schedule_id, "the schedule was deleted")
    with ctx.db.session() as session:
        schedules.delete_schedule(session, schedule_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/schedules/{schedule_id}/occurrences", response_model=list[OccurrenceOut])
def list_occurrences(
    ctx: Ctx,
    schedule_id: str,
    state: OccurrenceState | None = None,
    limit: int = 100,
    principal: Principal = Depends(USERS),
) -> list[dict]:
    """Materialised runs (the next ~48 h and the history), newest first; `state` filters."""
    if not 1 <= limit <= 1000:
        raise ValidationFailed("limit must be between 1 and 1000", field="limit")
    with ctx.db.session() as session:
        row = schedules.get_owned(session, principal.caller, schedule_id)
        return [occurrence_out(o, row.timezone) for o in schedules.list_occurrences(session, row, state, limit)]
