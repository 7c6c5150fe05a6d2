"""Readiness gates: an app workload is placed only once every model it is bound to has a ready replica.

Without the gate an app started before its model (the usual order when an instance auto-deploys its model) called
a model with no replica, exited with ModelUnavailable and crash-looped until the model came up. Kubernetes solves
this with init containers and readiness probes; here the deployer simply holds the app unplaced and says why
(state `waiting`, reason "model comfort: 0 of 1 replicas ready"). A replica is ready when its node reports it
`running` for the current generation, which for a model server means its `/healthz` answered after the model
loaded (agent supervisor). Past the deadline the state becomes `failed` with the same reason, and the app still
starts as soon as its model is ready (nothing to re-submit).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from aiot.store.runtime import DesiredState, Workload, WorkloadEvent, WorkloadKind, WorkloadStatus
from aiot.timeutil import utcnow


def bound_model_ids(workload: Workload) -> dict[str, str]:
    """{model_id: label} of the models an app workload's config binds (empty for models and unbound apps)."""
    if workload.kind != WorkloadKind.app:
        return {}
    models = (workload.config or {}).get("models") or {}
    out: dict[str, str] = {}
    for alias, ref in models.items():
        if isinstance(ref, dict) and ref.get("model_id"):
            out[str(ref["model_id"])] = str(ref.get("name") or alias)
    return out


def unready_models(session: Session, workload: Workload) -> list[str]:
    """One reason per bound model without a ready replica, e.g. "model comfort: 0 of 1 replicas ready"."""
    reasons = []
    for model_id, label in bound_model_ids(workload).items():
        replicas = list(
            session.scalars(
                select(Workload).where(
                    Workload.kind == WorkloadKind.model,
                    Workload.package_id == model_id,
                    Workload.desired == DesiredState.running,
                )
            )
        )
        ready = 0
        for replica in replicas:
            status = session.get(WorkloadStatus, replica.id)
            if status is not None and status.state == "running" and status.generation == replica.generation:
                ready += 1
        if not ready:
            reasons.append(f"model {label}: 0 of {len(replicas)} replicas ready")
    return reasons


def hold(
    session: Session, workload: Workload, reasons: list[str], deadline_s: float, now: datetime | None = None
) -> str:
    """Record why `workload` waits (`waiting`, then `failed` past the deadline); returns the state written."""
    now = now or utcnow()
    late = now - workload.created_at > timedelta(seconds=deadline_s)
    state = "failed" if late else "waiting"
    reason = "; ".join(reasons) + (f" (still not ready after {deadline_s:g}s)" if late else "")
    status = session.get(WorkloadStatus, workload.id)
    if status is None:
        status = WorkloadStatus(workload_id=workload.id)
        session.add(status)
    if (status.state, status.reason) != (state, reason[:500]):
        if status.state != state:  # the transition, with its reason, in the workload's history
            session.add(
                WorkloadEvent(
                    workload_id=workload.id,
                    kind="state",
                    detail={"state": state, "reason": reason[:300], "generation": workload.generation},
                )
            )
        status.state, status.reason, status.generation = state, reason[:500], workload.generation
        status.updated_at = now
    return state
