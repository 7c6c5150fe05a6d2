"""Liveness (/healthz, public) and platform status (/api/v1/status, any logged-in user)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import text

from aiot import __version__
from aiot.api.deps import Ctx
from aiot.api.schemas import StatusOut
from aiot.api.security import AnyUser, Principal
from aiot.services.contract import ServiceContext

health_router = APIRouter(tags=["system"])
router = APIRouter(tags=["system"])


def _database_status(ctx: ServiceContext) -> dict[str, Any]:
    try:
        with ctx.db.session() as session:
            session.execute(text("SELECT 1"))
        return {"ok": True, "backend": ctx.db.engine.dialect.name}
    except Exception as exc:  # noqa: BLE001 - reported, not raised: this is the health probe
        return {"ok": False, "backend": ctx.db.engine.dialect.name, "error": type(exc).__name__}


def _nats_status(ctx: ServiceContext) -> dict[str, Any]:
    bus = ctx.bus
    if bus is None:
        return {"ok": False, "detail": "not connected"}
    url = bus.nc.connected_url
    server = f"{url.hostname}:{url.port}" if url is not None else None
    return {"ok": bool(bus.is_connected), "server": server}


class HealthzOut(BaseModel):
    status: str = Field(description="ok, or unavailable (with 503) when the database does not answer")
    database: bool
    nats: bool


@health_router.get("/healthz", response_model=HealthzOut, responses={503: {"model": HealthzOut}})
def healthz(ctx: Ctx) -> JSONResponse:
    """Liveness and readiness: 200 `ok` when the database answers, 503 otherwise."""
    database = _database_status(ctx)
    nats = _nats_status(ctx)
    body = {"status": "ok" if database["ok"] else "unavailable", "database": database["ok"], "nats": nats["ok"]}
    return JSONResponse(body, status_code=200 if database["ok"] else 503)


@router.get("/status", response_model=StatusOut)
def status(ctx: Ctx, _: Principal = Depends(AnyUser)) -> StatusOut:
    services = {name: svc.health().to_dict() for name, svc in ctx.services.items()}
    return StatusOut(version=__version__, database=_database_status(ctx), nats=_nats_status(ctx), services=services)
