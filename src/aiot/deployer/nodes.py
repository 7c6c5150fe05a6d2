"""Nodes: join tokens, registration, node authentication and load/status reports (rules, no HTTP)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from aiot.bus.auth import hash_password
from aiot.bus.codec import parse_timestamp
from aiot.deployer.workloads import bump_generation
from aiot.errors import Conflict, NotFound, Unauthorized, ValidationFailed
from aiot.ids import new_id
from aiot.secrets_store import derive_password
from aiot.store.catalog import AppPackage, ModelPackage
from aiot.store.runtime import (
    DesiredState,
    Node,
    NodeJoinToken,
    NodeStatus,
    Workload,
    WorkloadEvent,
    WorkloadStatus,
)
from aiot.timeutil import utcnow

JOIN_PREFIX = "aiotjoin"
NODE_PREFIX = "aiotnode"
JOIN_TOKEN_USED = "join token already used; an admin creates a new one with `aiot node token`"
WORKLOAD_STATES = {
    "pending",
    "preparing",
    "starting",
    "running",
    "degraded",
    "unhealthy",
    "restarting",
    "failed",
    "stopped",
}


def _sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


MAX_JOIN_USES = 1000
MAX_JOIN_TTL = timedelta(days=30)


def create_join_token(
    session: Session, created_by: str | None, ttl: timedelta = timedelta(hours=1), uses: int = 1
) -> str:
    """A join token for `uses` registrations within `ttl` (single-use and one hour by default).

    Short-lived and single-use because it is a bearer secret that may leak (a provisioning script, a shell
    history): a used or expired token is worth nothing to whoever finds it."""
    if not 1 <= uses <= MAX_JOIN_USES:
        raise ValidationFailed(f"uses must be between 1 and {MAX_JOIN_USES}", field="uses")
    if not timedelta(0) < ttl <= MAX_JOIN_TTL:
        raise ValidationFailed(f"ttl must be more than 0 and at most {MAX_JOIN_TTL.days} days", field="ttl_minutes")
    secret = secrets.token_urlsafe(32)
    row = NodeJoinToken(
        secret_hash=_sha(secret), created_by=created_by, expires_at=utcnow() + ttl, max_uses=uses, uses=0
    )
    session.add(row)
    session.flush()
    return f"{JOIN_PREFIX}.{row.id}.{secret}"


def check_join_token(session: Session, token: str, *, used_up_ok: bool = False) -> NodeJoinToken:
    """The join token row if it may still register a node (known, not revoked, not expired, uses left; with
    `used_up_ok` a used-up token passes: `register_node` then only resumes the registration it made)."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != JOIN_PREFIX:
        raise Unauthorized("not a join token: expected 'aiotjoin.<id>.<secret>' (aiot node token)")
    row = session.get(NodeJoinToken, parts[1])
    if row is None or not hmac.compare_digest(row.secret_hash, _sha(parts[2])):
        raise Unauthorized("unknown join token")
    if row.revoked_at is not None or row.expires_at <= utcnow():
        raise Unauthorized("join token expired or revoked; an admin creates a new one with `aiot node token`")
    if row.uses >= row.max_uses and not used_up_ok:
        raise Unauthorized(JOIN_TOKEN_USED)
    return row


def _use_join_token(session: Session, token_id: str) -> None:
    """Count one registration against the token, atomically: two agents racing with a single-use token cannot
    both register (the conditional UPDATE matches for one of them only)."""
    changed = session.execute(
        update(NodeJoinToken)
        .where(
            NodeJoinToken.id == token_id,
            NodeJoinToken.uses < NodeJoinToken.max_uses,
            NodeJoinToken.revoked_at.is_(None),
            NodeJoinToken.expires_at > utcnow(),
        )
        .values(uses=NodeJoinToken.uses + 1)
    ).rowcount
    if not changed:
        raise Unauthorized(JOIN_TOKEN_USED)


def node_nats_password(secret: bytes, node_id: str) -> str:
    return derive_password(secret, "node-nats", node_id)


def register_node(
    session: Session,
    secret: bytes,
    *,
    name: str,
    address: str,
    labels: dict[str, str],
    capacity: dict[str, Any],
    provider: str = "manual",
    join_token_id: str | None = None,
    registration_key: str | None = None,
) -> tuple[Node, str]:
    """Create a node record (using one registration of the join token); returns it and its new API token.

    A name is never taken over: whatever its silence, a registered node keeps its identity (node id, token,
    NATS user, assignments), and a second registration under its name gets 409. The name of a node that was
    removed (the autoscaler retired it after draining) or revoked by an admin may be used again, by a new node
    with a new id (so a new NATS user and password): the old row keeps its history under a tombstone name.

    A retry of a registration whose answer was lost (same join token, same `registration_key`, which only the
    agent that sent it knows) gets its node back with a fresh token, even though the token is used up."""
    cpu, memory = capacity.get("cpu"), capacity.get("memory_mb")
    if not isinstance(cpu, int | float) or cpu <= 0 or not isinstance(memory, int) or memory <= 0:
        raise ValidationFailed("capacity needs cpu > 0 (cores) and memory_mb > 0 (integer MiB)", field="capacity")
    node = session.scalar(select(Node).where(Node.name == name))
    if node is not None and _same_registration(node, join_token_id, registration_key):
        return node, _new_node_token(node)  # a retry whose answer was lost: the same node, a fresh token
    if join_token_id is not None:
        _use_join_token(session, join_token_id)  # 401 when used up; undone with the rest on a 409 below
    if node is not None and node.status != NodeStatus.removed:
        raise Conflict(
            f"a node named {name!r} is already registered ({node.id}, {node.status.value}); a name is "
            "never taken over: join under another name, or have an admin revoke that node first "
            "(`aiot node revoke`)",
            field="name",
        )
    if node is not None:  # removed or revoked: its row keeps its history, its id is never given to another node
        node.name = f"{name[: 100 - len(node.id) - 1]}~{node.id}"  # '~' is not allowed in a registered name
        session.flush()
    token_secret, node_id, now = secrets.token_urlsafe(32), new_id("nod"), utcnow()
    node = Node(
        id=node_id,
        name=name,
        address=address,
        labels=labels,
        capacity=dict(capacity),
        provider=provider,
        token_hash=_sha(token_secret),
        registration_key_hash=_sha(registration_key) if registration_key else None,
        nats_password_bcrypt=hash_password(node_nats_password(secret, node_id)),
        status=NodeStatus.ready,
        status_changed_at=now,
        last_report_at=now,
        join_token_id=join_token_id,
        load={},
    )
    session.add(node)
    session.flush()
    return node, f"{NODE_PREFIX}.{node.id}.{token_secret}"


def _same_registration(node: Node, join_token_id: str | None, registration_key: str | None) -> bool:
    """This registration is a retry of the one that made `node`: same join token, same agent-held key, and the
    node is still in service (a revoked or removed node is never handed back)."""
    return (
        join_token_id is not None
        and registration_key is not None
        and node.join_token_id == join_token_id
        and node.registration_key_hash is not None
        and hmac.compare_digest(node.registration_key_hash, _sha(registration_key))
        and node.revoked_at is None
        and node.status != NodeStatus.removed
    )


def _new_node_token(node: Node) -> str:
    """Rotate the node's API token (the lost answer's token is never usable) and return the new one."""
    token_secret = secrets.token_urlsafe(32)
    node.token_hash = _sha(token_secret)
    return f"{NODE_PREFIX}.{node.id}.{token_secret}"


def revoke_node(session: Session, secret: bytes, node: Node) -> list[str]:
    """Cut a node off: its token and NATS user stop working, its workloads move to other nodes with new
    credentials (the revoked node knew the old ones), and the join token it used cannot register again.

    Returns the ids of the moved workloads. The caller announces the NATS user change and wakes the deployer."""
    now = utcnow()
    node.status, node.status_changed_at, node.revoked_at = NodeStatus.removed, now, now
    node.nats_password_bcrypt = hash_password(secrets.token_urlsafe(32))
    if node.join_token_id is not None:
        token = session.get(NodeJoinToken, node.join_token_id)
        if token is not None and token.revoked_at is None:
            token.revoked_at = now
    moved = []
    for workload in session.scalars(select(Workload).where(Workload.node_id == node.id)):
        bump_generation(
            session, secret, workload, reason=f"node {node.name} revoked by an admin", node_id=node.id, unassign=True
        )
        moved.append(workload.id)
    session.flush()
    return moved


def is_node_token(token: str) -> bool:
    return token.startswith(NODE_PREFIX + ".")


def authenticate_node(session: Session, token: str) -> Node:
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != NODE_PREFIX:
        raise Unauthorized("not a node token")
    node = session.get(Node, parts[1])
    if node is None or not hmac.compare_digest(node.token_hash, _sha(parts[2])):
        raise Unauthorized("unknown node token; join again with a join token")
    if node.revoked_at is not None:
        raise Unauthorized("this node was revoked by an admin")
    if node.status == NodeStatus.removed:
        raise Unauthorized("this node was removed; join again with a join token")
    return node


def record_report(
    session: Session,
    node: Node,
    load: dict[str, Any],
    workloads: list[dict[str, Any]],
    placed: list[Workload] | None = None,
) -> set[str]:
    """Store a node's load and its workloads' observed states (only for workloads assigned to it); the ids of the
    workloads placed on it, the only ones it may speak for. `placed`: those workloads when the caller already
    read them (a batch of reports reads every node's in one query)."""
    now = utcnow()
    node.load, node.last_report_at = load, now
    if node.status == NodeStatus.lost:
        node.status, node.status_changed_at = NodeStatus.ready, now
    if placed is None:
        placed = list(session.scalars(select(Workload).where(Workload.node_id == node.id)))
    assigned = {w.id: w for w in placed}
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
            session.add(
                WorkloadEvent(
                    workload_id=workload.id,
                    kind="state",
                    node_id=node.id,
                    detail={
                        "state": state,
                        "reason": str(report.get("reason", ""))[:300],
                        "generation": report.get("generation"),
                        "restarts": report.get("restarts", 0),
                    },
                )
            )
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
    return set(assigned)


# ---------------------------------------------------------------------- what the admin and the agent API read


def find_node(session: Session, ref: str) -> Node:
    """A node by id or name (404 naming `node` otherwise)."""
    node = session.get(Node, ref) or session.scalar(select(Node).where(Node.name == ref))
    if node is None:
        raise NotFound(f"no node {ref!r}", field="node")
    return node


def node_workloads(session: Session, node: Node, running_only: bool = True) -> list[Workload]:
    """The workloads placed on a node (by default only those meant to run), oldest first."""
    query = select(Workload).where(Workload.node_id == node.id)
    if running_only:
        query = query.where(Workload.desired == DesiredState.running)
    return list(session.scalars(query.order_by(Workload.created_at)))


def live_nodes(session: Session) -> list[Node]:
    """Every node not removed, by name."""
    return list(session.scalars(select(Node).where(Node.status != NodeStatus.removed).order_by(Node.name)))


def workload_states(session: Session, workloads: list[Workload]) -> dict[str, str]:
    """Workload id -> its last reported state ("pending" before any report)."""
    return {w.id: (s.state if (s := session.get(WorkloadStatus, w.id)) else "pending") for w in workloads}


def drain_node(session: Session, node: Node) -> None:
    """Take no new work; the deployer moves its workloads elsewhere. A revoked or removed node has nothing to
    drain (409)."""
    if node.revoked_at is not None or node.status == NodeStatus.removed:
        raise Conflict(
            f"node {node.name} is {'revoked' if node.revoked_at else 'removed'}; nothing to drain", field="node"
        )
    node.status, node.status_changed_at = NodeStatus.draining, utcnow()


def may_fetch_package(session: Session, node: Node, sha256: str) -> bool:
    """A node may download a package archive only while one of its workloads runs that package."""
    assigned = session.scalar(
        select(Workload.id).where(Workload.node_id == node.id, Workload.package_sha256 == sha256).limit(1)
    )
    known = any(session.scalar(select(t.id).where(t.sha256 == sha256).limit(1)) for t in (ModelPackage, AppPackage))
    return bool(assigned) and known
