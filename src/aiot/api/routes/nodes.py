"""Cluster nodes (admins): join tokens, list, show with workloads and load, drain."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, status
from sqlalchemy import select

from aiot.api.security import Allow, Principal
from aiot.deployer import nodes as node_rules
from aiot.deployer.service import wake_deployer
from aiot.errors import NotFound
from aiot.store.models import Role
from aiot.store.runtime import DesiredState, Node, NodeStatus, Workload, WorkloadStatus
from aiot.timeutil import utcnow

router = APIRouter(prefix="/nodes", tags=["nodes"])
ADMIN = Allow(Role.admin)


def node_out(node: Node, workloads: list[Workload] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": node.id, "name": node.name, "address": node.address, "labels": node.labels,
        "capacity": node.capacity, "status": node.status.value, "load": node.load, "provider": node.provider,
        "registered_at": node.registered_at.isoformat(),
        "last_report_at": node.last_report_at.isoformat() if node.last_report_at else None,
        "report_age_s": round((utcnow() - node.last_report_at).total_seconds(), 1) if node.last_report_at else None,
    }
    if workloads is not None:
        out["workloads"] = [w.id for w in workloads]
    return out


@router.post("/join-tokens", status_code=status.HTTP_201_CREATED)
def create_join_token(request: Request, principal: Principal = Depends(ADMIN)) -> dict:
    """A token for `aiot node join --token ...` (valid 7 days, shown once)."""
    with request.app.state.ctx.db.session() as session:
        return {"token": node_rules.create_join_token(session, principal.user.id)}


@router.get("")
def list_nodes(request: Request, _: Principal = Depends(ADMIN)) -> list[dict]:
    with request.app.state.ctx.db.session() as session:
        out = []
        for node in session.scalars(select(Node).where(Node.status != NodeStatus.removed).order_by(Node.name)):
            workloads = list(session.scalars(select(Workload).where(Workload.node_id == node.id,
                                                                    Workload.desired == DesiredState.running)))
            out.append(node_out(node, workloads))
        return out


def _node(session: Any, ref: str) -> Node:
    node = session.get(Node, ref) or session.scalar(select(Node).where(Node.name == ref))
    if node is None:
        raise NotFound(f"no node {ref!r}", field="node")
    return node


@router.get("/{ref}")
def show_node(request: Request, ref: str, _: Principal = Depends(ADMIN)) -> dict:
    with request.app.state.ctx.db.session() as session:
        node = _node(session, ref)
        workloads = list(session.scalars(select(Workload).where(Workload.node_id == node.id)))
        out = node_out(node, workloads)
        out["workload_states"] = {w.id: (s.state if (s := session.get(WorkloadStatus, w.id)) else "pending")
                                  for w in workloads}
        return out


@router.post("/{ref}/drain")
async def drain_node(request: Request, ref: str, _: Principal = Depends(ADMIN)) -> dict:
    """Take no new work and move this node's workloads elsewhere."""
    ctx = request.app.state.ctx
    with ctx.db.session() as session:
        node = _node(session, ref)
        node.status, node.status_changed_at = NodeStatus.draining, utcnow()
        out = node_out(node)
    await wake_deployer(ctx)
    return out
