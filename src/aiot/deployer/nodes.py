"""Nodes: join tokens, registration, node authentication and load/status reports (rules, no HTTP)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from aiot.bus.auth import hash_password
from aiot.bus.codec import parse_timestamp
from aiot.errors import Conflict, Unauthorized, ValidationFailed
from aiot.secrets_store import derive_password
from aiot.store.runtime import Node, NodeJoinToken, NodeStatus, Workload, WorkloadEvent, WorkloadStatus
from aiot.timeutil import utcnow

JOIN_PREFIX = "aiotjoin"
NODE_PREFIX = "aiotnode"
WORKLOAD_STATES = {"pending", "preparing", "starting", "running", "unhealthy", "restarting", "failed", "stopped"}


def _sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_join_token(session: Session, created_by: str | None, ttl: timedelta = timedelta(days=7)) -> str:
    secret = secrets.token_urlsafe(32)
    row = NodeJoinToken(secret_hash=_sha(secret), created_by=created_by, expires_at=utcnow() + ttl)
    session.add(row)
    session.flush()
    return f"{JOIN_PREFIX}.{row.id}.{secret}"


def check_join_token(session: Session, token: str) -> NodeJoinToken:
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != JOIN_PREFIX:
        raise Unauthorized("not a join token: expected 'aiotjoin.<id>.<secret>' (aiot node token create)")
    row = session.get(NodeJoinToken, parts[1])
    if row is None or not hmac.compare_digest(row.secret_hash, _sha(parts[2])):
        raise Unauthorized("unknown join token")
    if row.revoked_at is not None or row.expires_at <= utcnow():
        raise Unauthorized("join token expired or revoked; create a new one")
    return row


def node_nats_password(secret: bytes, node_id: str) -> str:
    return derive_password(secret, "node-nats", node_id)


def register_node(session: Session, secret: bytes, *, name: str, address: str, labels: dict[str, str],
                  capacity: dict[str, Any], provider: str = "manual") -> tuple[Node, str]:
    """Create (or take over, by name) a node record; returns it and its new API token."""
    cpu, memory = capacity.get("cpu"), capacity.get("memory_mb")
    if not isinstance(cpu, int | float) or cpu <= 0 or not isinstance(memory, int) or memory <= 0:
        raise ValidationFailed("capacity needs cpu > 0 (cores) and memory_mb > 0 (integer MiB)", field="capacity")
    token_secret = secrets.token_urlsafe(32)
    node = session.scalar(select(Node).where(Node.name == name))
    if node is not None and node.status == NodeStatus.ready and node.last_report_at is not None and \
            (utcnow() - node.last_report_at).total_seconds() < 5:
        raise Conflict(f"a live node named {name!r} is already registered; pick another name", field="name")
    if node is None:
        node = Node(name=name, token_hash="", nats_password_bcrypt="")
        session.add(node)
        session.flush()
    node.address, node.labels, node.capacity, node.provider = address, labels, dict(capacity), provider
    node.token_hash = _sha(token_secret)
    node.nats_password_bcrypt = hash_password(node_nats_password(secret, node.id))
    node.status, node.status_changed_at, node.last_report_at = NodeStatus.ready, utcnow(), utcnow()
    session.flush()
    return node, f"{NODE_PREFIX}.{node.id}.{token_secret}"


def is_node_token(token: str) -> bool:
    return token.startswith(NODE_PREFIX + ".")


def authenticate_node(session: Session, token: str) -> Node:
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != NODE_PREFIX:
        raise Unauthorized("not a node token")
    node = session.get(Node, parts[1])
    if node is None or not hmac.compare_digest(node.token_hash, _sha(parts[2])):
        raise Unauthorized("unknown node token; join again with a join token")
    if node.status == NodeStatus.removed:
        raise Unauthorized("this node was removed; join again with a join token")
    return node


def record_report(session: Session, node: Node, load: dict[str, Any], workloads: list[dict[str, Any]]) -> None:
    """Store a node's load and its workloads' observed states (only for workloads assigned to it)."""
    now = utcnow()
    node.load, node.last_report_at = load, now
    if node.status == NodeStatus.lost:
        node.status, node.status_changed_at = NodeStatus.ready, now
    assigned = {w.id: w for w in session.scalars(select(Workload).where(Workload.node_id == node.id))}
    for report in workloads:
        workload = assigned.get(str(report.get("workload_id")))
        if workload is None:
            continue  # a workload moved away while this node was out of touch: its report is stale
        state = str(report.get("state", "pending"))
        if state not in WORKLOAD_STATES:
            state = "failed"
        status = session.get(WorkloadStatus, workload.id)
        if status is None:
            status = WorkloadStatus(workload_id=workload.id)
            session.add(status)
        if status.state != state or status.generation != report.get("generation"):
            session.add(WorkloadEvent(workload_id=workload.id, kind="state", node_id=node.id,
                                      detail={"state": state, "reason": str(report.get("reason", ""))[:300],
                                              "generation": report.get("generation"),
                                              "restarts": report.get("restarts", 0)}))
        status.node_id, status.generation, status.state = node.id, int(report.get("generation") or 0), state
        status.reason = str(report.get("reason", ""))[:500]
        status.restarts = int(report.get("restarts") or 0)
        status.pid = report.get("pid")
        status.endpoint = report.get("endpoint")
        status.updated_at = now
        for key in ("started_at", "last_heartbeat"):
            value = report.get(key)
            if isinstance(value, str):
                with contextlib.suppress(ValueError):
                    setattr(status, key, parse_timestamp(value, field_name=key))
