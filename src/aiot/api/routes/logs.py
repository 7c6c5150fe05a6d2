"""Central logs: query (newest first), live tail (server-sent events) and the daily archives.

Who may read what: admins read everything; other users read only the logs of workloads they own (an AI
developer's model deployments, including those started for app instances), of the workloads of app instances
they own, and - so app developers can debug their apps - of the instances of apps whose name they own. The
scope is applied as *subject* filters (`aiot.logs.<workload_id>`), which NATS permissions make trustworthy,
never as a filter on what a record's body claims.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Response
from fastapi.responses import StreamingResponse
from pydantic import Field

from aiot.api.deps import Ctx
from aiot.api.schemas import OutModel
from aiot.api.security import AdminOnly, AnyUser, Principal
from aiot.blobs.base import LOG_ARCHIVES, BlobNotFound, BlobStore
from aiot.blobs.factory import open_blob_store
from aiot.errors import NotFound, ServiceUnavailable, ValidationFailed
from aiot.logs import archive, scope
from aiot.logs.query import LogFilter, LogTail, query_logs
from aiot.logs.records import LogRecord, parse_level
from aiot.logs.stream import ensure_logs_stream
from aiot.services.contract import ServiceContext
from aiot.timeutil import utcnow

router = APIRouter(tags=["logs"])
HEARTBEAT_SECONDS = 15.0
MAX_LIMIT = 5000
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_when(value: str | None, field: str, now: datetime | None = None) -> datetime | None:
    """ISO time (naive = UTC) or a duration ago ('90s', '15m', '2h', '7d') -> aware UTC datetime."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    match = _RELATIVE.match(text)
    if match:
        return (now or utcnow()) - timedelta(**{_UNITS[match[2]]: float(match[1])})
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationFailed(
            f"{field}={value!r}: expected an ISO time (2024-05-01T08:00:00Z) or a duration ago such as 15m, 2h, 7d",
            field=field,
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _bus(ctx: ServiceContext) -> Any:
    bus = ctx.bus
    if bus is None:
        raise ServiceUnavailable("the message bus is not connected; logs are unavailable")
    return bus


def _scope(
    ctx: ServiceContext, principal: Principal, workload_id: str | None, app_instance_id: str | None, service: str | None
) -> tuple[str, ...] | None:
    """The workload ids the caller may read and asked for (None: no restriction, admins only)."""
    with ctx.db.session() as session:
        return scope.readable_workloads(session, principal.caller, workload_id, app_instance_id, service)


def _filter(
    ctx: ServiceContext,
    principal: Principal,
    service: str | None,
    workload_id: str | None,
    app_instance_id: str | None,
    level: str | None,
    since: str | None,
    until: str | None,
    text: str | None,
) -> LogFilter:
    try:
        min_level = parse_level(level) if level else None
    except ValueError as exc:
        raise ValidationFailed(str(exc), field="level") from None
    start, end = parse_when(since, "since"), parse_when(until, "until")
    if start and end and start > end:
        raise ValidationFailed("since is after until", field="since")
    workload_ids = _scope(ctx, principal, workload_id, app_instance_id, service)
    return LogFilter(
        service=service or None,
        workload_ids=workload_ids,
        min_level=min_level,
        since=start,
        until=end,
        text=text or None,
    )


def _instances_of(ctx: ServiceContext, workload_ids: set[str]) -> dict[str, str]:
    """workload id -> app instance id, to label stdout lines (the agent does not know the instance)."""
    if not workload_ids:
        return {}
    with ctx.db.session() as session:
        return scope.instances_of(session, workload_ids)


class LogPage(OutModel):
    records: list[LogRecord]
    count: int
    scanned: int = Field(description="stored records read to answer")
    truncated: bool = Field(description="more matched than `limit`, or the scan stopped early")


class ArchiveOut(OutModel):
    day: str
    name: str
    size: int
    records: int
    skipped: int = Field(description="messages of the day that were not log records")
    complete: bool
    archived_at: str
    sha256: str


@router.get("/logs", response_model=LogPage)
async def search_logs(
    ctx: Ctx,
    service: str | None = None,
    workload_id: str | None = None,
    app_instance_id: str | None = None,
    level: str | None = None,
    since: str | None = None,
    until: str | None = None,
    text: str | None = None,
    limit: int = 200,
    principal: Principal = Depends(AnyUser),
) -> dict:
    """Newest first. `level` is a minimum (WARNING shows ERROR too); `text` is a case-insensitive substring;
    `since`/`until` are ISO times or durations ago (15m, 2h, 7d)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationFailed(f"limit must be between 1 and {MAX_LIMIT}", field="limit")
    flt = _filter(ctx, principal, service, workload_id, app_instance_id, level, since, until, text)
    bus = _bus(ctx)
    await ensure_logs_stream(bus, ctx.settings)
    result = await query_logs(bus.js, flt, limit=limit)
    records = [found.to_json() for found in result.records]
    labels = _instances_of(ctx, {r["workload_id"] for r in records if r["workload_id"] and not r["app_instance_id"]})
    for record in records:
        if not record["app_instance_id"] and record["workload_id"] in labels:
            record["app_instance_id"] = labels[record["workload_id"]]
    return {"records": records, "count": len(records), "scanned": result.scanned, "truncated": result.truncated}


@router.get(
    "/logs/stream",
    response_class=StreamingResponse,
    responses={
        200: {"description": "server-sent events: `event: log`, data one record", "content": {"text/event-stream": {}}}
    },
)
async def tail_logs(
    ctx: Ctx,
    service: str | None = None,
    workload_id: str | None = None,
    app_instance_id: str | None = None,
    level: str | None = None,
    text: str | None = None,
    principal: Principal = Depends(AnyUser),
) -> StreamingResponse:
    """Server-sent events: `event: log` with one JSON record per new matching line; a comment every 15 s."""
    flt = _filter(ctx, principal, service, workload_id, app_instance_id, level, None, None, text)
    bus = _bus(ctx)
    labels = _instances_of(ctx, set(flt.workload_ids or ()))

    async def events() -> AsyncIterator[str]:
        async with LogTail(bus, flt) as tail:
            yield ": connected\n\n"
            while True:
                record = await tail.next(timeout=HEARTBEAT_SECONDS)
                if record is None:
                    yield ": heartbeat\n\n"
                    continue
                body = record.to_json()
                if not body["app_instance_id"] and body["workload_id"] in labels:
                    body["app_instance_id"] = labels[body["workload_id"]]
                yield f"event: log\ndata: {json.dumps(body)}\n\n"
                await asyncio.sleep(0)

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


def _archives(ctx: ServiceContext) -> BlobStore:
    return open_blob_store(ctx.settings, ctx.bus, LOG_ARCHIVES)


def _day(value: str) -> Any:
    try:
        return archive.parse_day(value)
    except ValueError as exc:
        raise ValidationFailed(str(exc), field="day") from None


@router.get("/logs/archives", response_model=list[ArchiveOut])
async def list_log_archives(ctx: Ctx, _: Principal = Depends(AdminOnly)) -> list[dict]:
    return [info.to_json() for info in await archive.list_archives(_archives(ctx))]


@router.get(
    "/logs/archives/{day}",
    response_class=Response,
    responses={200: {"description": "the day's records, gzipped JSON lines", "content": {"application/gzip": {}}}},
)
async def download_log_archive(ctx: Ctx, day: str, _: Principal = Depends(AdminOnly)) -> Response:
    """The day's gzipped JSON-lines archive (one record per line, stream order)."""
    when = _day(day)
    try:
        data = await archive.read_archive(_archives(ctx), when)
    except BlobNotFound:
        raise NotFound(f"no log archive for {when.isoformat()}", field="day") from None
    name = archive.archive_name(when)
    return Response(
        content=data, media_type="application/gzip", headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )
