"""One reconcile pass of the deployer: mark silent nodes lost (moving their work), place unassigned workloads.

Safe to run again and again, from several control plane replicas at once: every change is a small transaction
that re-reads what it changes, and a placement only assigns a workload that is still unassigned.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from aiot.deployer.readiness import hold, unready_models
from aiot.deployer.workloads import bump_generation
from aiot.placement import NodeView, Placer, Request
from aiot.store.runtime import (
    DesiredState,
    Node,
    NodeStatus,
    PlacementDecision,
    Workload,
    WorkloadEvent,
)
from aiot.timeutil import utcnow

log = logging.getLogger(__name__)


@dataclass
class PassResult:
    lost_nodes: list[str] = field(default_factory=list)
    placed: dict[str, str] = field(default_factory=dict)  # workload -> node
    unplaceable: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # apps held until their models have a ready replica
    touched_nodes: set[str] = field(default_factory=set)  # nodes whose assignments changed (wake them)


def mark_lost_nodes(session: Session, secret: bytes, grace: float, result: PassResult) -> None:
    cutoff = utcnow() - timedelta(seconds=grace)
    # Only the silent nodes are read (the database filters): this runs every second, and reading every node to
    # compare in Python cost a pass over all of them (1,000 ORM objects a second at 1,000 nodes).
    silent = select(Node).where(
        Node.status.in_([NodeStatus.ready, NodeStatus.draining]),
        or_(Node.last_report_at.is_(None), Node.last_report_at < cutoff),
    )
    for node in session.scalars(silent):
        node.status, node.status_changed_at = NodeStatus.lost, utcnow()
        result.lost_nodes.append(node.id)
        log.warning("node %s (%s) silent for more than %.0fs: lost; moving its workloads", node.name, node.id, grace)
        for workload in session.scalars(select(Workload).where(Workload.node_id == node.id)):
            bump_generation(session, secret, workload, reason=f"node {node.name} lost", node_id=node.id, unassign=True)


def move_off_draining(session: Session, secret: bytes, result: PassResult) -> None:
    for node in session.scalars(select(Node).where(Node.status == NodeStatus.draining)):
        for workload in session.scalars(
            select(Workload).where(Workload.node_id == node.id, Workload.desired == DesiredState.running)
        ):
            bump_generation(
                session, secret, workload, reason=f"node {node.name} draining", node_id=node.id, unassign=True
            )
            result.touched_nodes.add(node.id)


def node_views(session: Session) -> list[NodeView]:
    """Every ready node with what its running workloads reserve: two queries, whatever the number of nodes (one
    query per node made a pass over 5,000 nodes take seconds; bench/placement.py)."""
    placed: dict[str, list[Workload]] = {}
    for workload in session.scalars(
        select(Workload).where(Workload.node_id.is_not(None), Workload.desired == DesiredState.running)
    ):
        placed.setdefault(str(workload.node_id), []).append(workload)
    views = []
    for node in session.scalars(select(Node).where(Node.status == NodeStatus.ready).order_by(Node.name)):
        load = node.load or {}
        view = NodeView(
            node_id=node.id,
            name=node.name,
            labels=dict(node.labels or {}),
            capacity_cpu=float(node.capacity.get("cpu", 1)),
            capacity_memory_mb=int(node.capacity.get("memory_mb", 1024)),
            observed_cpu_percent=float(load.get("cpu_percent", 0.0)),
            observed_memory_percent=float(load.get("memory_percent", 0.0)),
            max_workloads=int(node.capacity.get("max_workloads", 50)),
        )
        for workload in placed.get(node.id, []):
            view.reserve(_request(workload))
        views.append(view)
    return views


def _request(workload: Workload) -> Request:
    return Request(
        workload_id=workload.id,
        cpu=float(workload.resources.get("cpu", 0.5)),
        memory_mb=int(workload.resources.get("memory_mb", 512)),
        group_id=workload.group_id,
        selector=dict(workload.selector or {}),
    )


def place_pending(session: Session, result: PassResult, ready_deadline: float = 300.0) -> None:
    pending = list(
        session.scalars(
            select(Workload)
            .where(Workload.desired == DesiredState.running, Workload.node_id.is_(None))
            .order_by(Workload.created_at)
        )
    )
    if not pending:
        return
    placer = Placer(node_views(session))
    for workload in pending:
        reasons = unready_models(session, workload)
        if reasons:  # readiness gate: an app starts only once its models can answer
            hold(session, workload, reasons, ready_deadline)
            result.waiting.append(workload.id)
            continue
        request = _request(workload)
        decision = placer.choose(request)
        session.add(
            PlacementDecision(
                workload_id=workload.id,
                node_id=decision.node_id,
                reason=decision.reason,
                scores=decision.scores,
                score=decision.score,
            )
        )
        if decision.node_id is None:
            result.unplaceable.append(workload.id)
            continue
        # Assign only if still unassigned: another replica of the control plane may have been quicker.
        # synchronize_session=False: the default walks every object in the session per UPDATE (quadratic in a
        # pass placing thousands); the one object this changes is set by hand, without marking it dirty.
        now = utcnow()
        changed = session.execute(
            update(Workload)
            .where(Workload.id == workload.id, Workload.node_id.is_(None))
            .values(node_id=decision.node_id, updated_at=now)
            .execution_options(synchronize_session=False)
        ).rowcount
        if not changed:
            continue
        set_committed_value(workload, "node_id", decision.node_id)
        set_committed_value(workload, "updated_at", now)
        session.add(
            WorkloadEvent(
                workload_id=workload.id,
                kind="placed",
                node_id=decision.node_id,
                detail={"reason": decision.reason, "generation": workload.generation},
            )
        )
        placer.reserve(decision.node_id, request)
        result.placed[workload.id] = decision.node_id
        result.touched_nodes.add(decision.node_id)


def reconcile_once(session: Session, secret: bytes, grace: float, ready_deadline: float = 300.0) -> PassResult:
    result = PassResult()
    mark_lost_nodes(session, secret, grace, result)
    move_off_draining(session, secret, result)
    session.flush()
    place_pending(session, result, ready_deadline)
    return result
