"""Tables of the runtime: nodes, their join tokens, workloads (desired state) and what agents report (observed).

Desired state lives here and agents reconcile to it (design guide): a workload row says "run generation G of
package P with this config on node N"; the agent's reports fill `WorkloadStatus`. A lost message never loses a
deployment, because the next poll reads the same rows.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Enum, Float, ForeignKey, Integer, String, false
from sqlalchemy.orm import Mapped, mapped_column

from aiot.ids import new_id
from aiot.store.base import Base, UTCDateTime
from aiot.timeutil import utcnow


class NodeStatus(enum.StrEnum):
    ready = "ready"
    lost = "lost"  # stopped reporting for longer than the grace period; its workloads moved away
    draining = "draining"  # takes no new work; its workloads are moved, then it may be removed
    removed = "removed"


class WorkloadKind(enum.StrEnum):
    model = "model"
    app = "app"


class DesiredState(enum.StrEnum):
    running = "running"
    stopped = "stopped"


class NodeJoinToken(Base):
    __tablename__ = "node_join_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("njt"))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    max_uses: Mapped[int] = mapped_column(Integer, default=1, server_default="1")  # registrations it allows
    uses: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # registrations it made


class Node(Base):
    __tablename__ = "nodes"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("nod"))
    name: Mapped[str] = mapped_column(String(100), unique=True)
    address: Mapped[str] = mapped_column(String(200), default="127.0.0.1")
    labels: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    capacity: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # {"cpu": cores, "memory_mb": MiB}
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    nats_password_bcrypt: Mapped[str] = mapped_column(String(100))
    status: Mapped[NodeStatus] = mapped_column(Enum(NodeStatus, native_enum=False, length=16), default=NodeStatus.ready)
    load: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # the last report's load section
    provider: Mapped[str] = mapped_column(String(40), default="manual")  # who started it (manual, local, ...)
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_report_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    status_changed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)  # by an admin: refused
    join_token_id: Mapped[str | None] = mapped_column(String(32), nullable=True)  # the token it joined with
    # sha256 of the key its agent sent while registering: a retry of that registration gets this node back
    registration_key_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)


class Workload(Base):
    __tablename__ = "workloads"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("wl"))
    kind: Mapped[WorkloadKind] = mapped_column(Enum(WorkloadKind, native_enum=False, length=16))
    package_id: Mapped[str] = mapped_column(String(32), index=True)  # mdl_… or app_…
    package_sha256: Mapped[str] = mapped_column(String(64))
    owner_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    group_id: Mapped[str] = mapped_column(String(32), index=True)  # model deployment or app instance it serves
    desired: Mapped[DesiredState] = mapped_column(
        Enum(DesiredState, native_enum=False, length=16), default=DesiredState.running
    )
    generation: Mapped[int] = mapped_column(Integer, default=1)
    node_id: Mapped[str | None] = mapped_column(ForeignKey("nodes.id", ondelete="SET NULL"), nullable=True, index=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # config.json body minus secrets/paths
    resources: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # {"cpu", "memory_mb"}
    selector: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)  # node labels required
    nats_password_bcrypt: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class WorkloadStatus(Base):
    """The latest report about a workload from the node running it."""

    __tablename__ = "workload_status"

    workload_id: Mapped[str] = mapped_column(ForeignKey("workloads.id", ondelete="CASCADE"), primary_key=True)
    node_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    generation: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    reason: Mapped[str] = mapped_column(String(500), default="")
    restarts: Mapped[int] = mapped_column(Integer, default=0)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    endpoint: Mapped[str | None] = mapped_column(String(300), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_heartbeat: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class WorkloadEvent(Base):
    """State history of a workload (state changes, restarts, placements), for the health page and the API."""

    __tablename__ = "workload_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    workload_id: Mapped[str] = mapped_column(ForeignKey("workloads.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))  # placed, state, moved, stopped
    node_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class PlacementDecision(Base):
    __tablename__ = "placement_decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    workload_id: Mapped[str] = mapped_column(ForeignKey("workloads.id", ondelete="CASCADE"), index=True)
    node_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    reason: Mapped[str] = mapped_column(String(500))
    scores: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # node -> score and why excluded
    score: Mapped[float | None] = mapped_column(Float, nullable=True)


class ModelDeployment(Base):
    __tablename__ = "model_deployments"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("dep"))
    model_id: Mapped[str] = mapped_column(ForeignKey("model_packages.id", ondelete="RESTRICT"), unique=True)
    replicas: Mapped[int] = mapped_column(Integer, default=1)
    owner_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Started on behalf of app instances (at their start, or ahead of a scheduled run), not by `aiot model
    # deploy`: the platform also removes it once no run needs it. A user's deploy of the version adopts it.
    auto: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
