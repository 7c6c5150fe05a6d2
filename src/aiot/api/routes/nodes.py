"""Cluster nodes (admins): join tokens, list, show with workloads and load, drain, revoke."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Body, Depends, status
from pydantic import BaseModel, Field

from aiot.api.deps import Ctx
from aiot.api.schemas import LoadHistoryOut, OutModel, Timestamp
from aiot.api.security import Allow, Principal
from aiot.deployer import loadhistory
from aiot.deployer import nodes as node_rules
from aiot.deployer.service import wake_deployer
from aiot.errors import ServiceUnavailable
from aiot.natsauth.sources import announce_auth_change
from aiot.secrets_store import platform_secret
from aiot.services.contract import ServiceContext
from aiot.store.models import Role
from aiot.store.runtime import Node, Workload
from aiot.timeutil import utcnow

router = APIRouter(prefix="/nodes", tags=["nodes"])
ADMIN = Allow(Role.admin)


class NodeOut(OutModel):
    id: str
    name: str
    address: str
    labels: dict[str, Any]
    capacity: dict[str, Any]
    status: str = Field(description="ready, draining, down, revoked or removed")
    load: dict[str, Any]
    provider: str | None
    registered_at: Timestamp
    revoked_at: Timestamp | None
    last_report_at: Timestamp | None
    report_age_s: float | None
    workloads: list[str] | None = Field(None, description="details only: ids of its workloads")
    workload_states: dict[str, str] | None = Field(None, description="details only: workload id -> state")
    moved_workloads: list[str] | None = Field(None, description="revoke/delete: workloads moved off it")


class JoinTokenOut(OutModel):
    token: str = Field(description="shown once; give it to `aiot node join --token-file`")
    uses: int
    expires_in_s: int


def node_out(node: Node, workloads: list[Workload] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": node.id,
        "name": node.name,
        "address": node.address,
        "labels": node.labels,
        "capacity": node.capacity,
        "status": node.status.value,
        "load": node.load,
        "provider": node.provider,
        "registered_at": node.registered_at.isoformat(),
        "revoked_at": node.revoked_at.isoformat() if node.revoked_at else None,
        "last_report_at": node.last_report_at.isoformat() if node.last_report_at else None,
        "report_age_s": round((utcnow() - node.last_report_at).total_seconds(), 1) if node.last_report_at else None,
    }
    if workloads is not None:
        out["workloads"] = [w.id for w in workloads]
    return out


class JoinTokenIn(BaseModel):
    uses: int = Field(1, ge=1, le=node_rules.MAX_JOIN_USES, description="Registrations the token allows.")
    ttl_minutes: float | None = Field(
        None,
        gt=0,
        le=node_rules.MAX_JOIN_TTL.total_seconds() / 60,
        description="Lifetime; default the join_token_ttl_minutes setting.",
    )


@router.post("/join-tokens", status_code=status.HTTP_201_CREATED, response_model=JoinTokenOut)
def create_join_token(ctx: Ctx, body: JoinTokenIn | None = Body(None), principal: Principal = Depends(ADMIN)) -> dict:
    """A join token for `aiot node join --token-file FILE` (or AIOT_JOIN_TOKEN), shown once: single-use and valid
    for `join_token_ttl_minutes` (1 h) unless `uses`/`ttl_minutes` ask otherwise."""
    body = body or JoinTokenIn()
    settings = ctx.settings
    ttl = timedelta(minutes=body.ttl_minutes or settings.join_token_ttl_minutes)
    with ctx.db.session() as session:
        token = node_rules.create_join_token(session, principal.user.id, ttl=ttl, uses=body.uses)
    return {"token": token, "uses": body.uses, "expires_in_s": round(ttl.total_seconds())}


@router.get("", response_model=list[NodeOut])
def list_nodes(ctx: Ctx, _: Principal = Depends(ADMIN)) -> list[dict]:
    with ctx.db.session() as session:
        return [node_out(node, node_rules.node_workloads(session, node)) for node in node_rules.live_nodes(session)]


@router.get("/{ref}", response_model=NodeOut)
def show_node(ctx: Ctx, ref: str, _: Principal = Depends(ADMIN)) -> dict:
    with ctx.db.session() as session:
        node = node_rules.find_node(session, ref)
        workloads = node_rules.node_workloads(session, node, running_only=False)
        return {**node_out(node, workloads), "workload_states": node_rules.workload_states(session, workloads)}


@router.get("/{ref}/load", response_model=LoadHistoryOut)
async def node_load(ctx: Ctx, ref: str, _: Principal = Depends(ADMIN)) -> dict:
    """The node's recent CPU and memory reports, oldest first, kept server-side for charts."""
    with ctx.db.session() as session:
        node_id = node_rules.find_node(session, ref).id
    if ctx.bus is None:
        raise ServiceUnavailable("the message bus is not connected")
    return {"samples": await loadhistory.series(ctx.bus, loadhistory.node_key(node_id))}


@router.post("/{ref}/drain", response_model=NodeOut)
async def drain_node(ctx: Ctx, ref: str, _: Principal = Depends(ADMIN)) -> dict:
    """Take no new work and move this node's workloads elsewhere."""
    with ctx.db.session() as session:
        node = node_rules.find_node(session, ref)
        node_rules.drain_node(session, node)
        out = node_out(node)
    await wake_deployer(ctx)
    return out


async def _revoke(ctx: ServiceContext, ref: str) -> dict:
    with ctx.db.session() as session:
        node = node_rules.find_node(session, ref)
        secret = platform_secret(ctx.settings)
        moved = node_rules.revoke_node(session, secret, node) if node.revoked_at is None else []
        out = {**node_out(node), "moved_workloads": moved}
    await announce_auth_change(ctx)  # its NATS user (and the moved workloads' old passwords) go now
    await wake_deployer(ctx)
    return out


@router.post("/{ref}/revoke", response_model=NodeOut)
async def revoke_node(ctx: Ctx, ref: str, _: Principal = Depends(ADMIN)) -> dict:
    """Cut a node off for good: its token gets 401, its NATS user is removed (connections closed), it is
    assigned nothing, its workloads move to other nodes with new credentials, and its join token is revoked."""
    return await _revoke(ctx, ref)


@router.delete("/{ref}", response_model=NodeOut)
async def delete_node(ctx: Ctx, ref: str, _: Principal = Depends(ADMIN)) -> dict:
    """The same as POST /nodes/{ref}/revoke."""
    return await _revoke(ctx, ref)
