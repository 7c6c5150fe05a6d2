"""Rolling a model name from one deployed version to another, one replica at a time, with automatic rollback.

`aiot model rollout NAME --version V` starts V beside the version the gateway serves now (the "old" one, with
N replicas) and walks, one step per deployer pass, towards N replicas of V and none of the old:

    V has fewer ready replicas than asked  -> wait (or roll back: crash loop, failed, not ready in time)
    all of V's replicas ready, old > keep  -> retire one old replica (capacity never drops below N)
    V has fewer than N replicas            -> ask for one more (a surge of one)
    V at N, old at keep                    -> soak; healthy for `rollout_soak_seconds` -> succeeded

The gateway sends a name's traffic to its highest version with a running replica and re-resolves when a cached
replica set stops answering, so a steady client sees no error while replicas come and go. `keep` is 1 while a
running app instance is pinned to the old version (pinned instances keep the model they were tested with),
else 0 (the old deployment is removed). A rollback stops V's replicas, restores the old deployment to N, and
mails the model's owner.

The `Rollout` helpers every target shares (`RolloutPolicy`, `history`, `rollout_out`) live here, below both
the deployer and the apps package that upgrades instances.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from packaging.version import Version
from sqlalchemy import select
from sqlalchemy.orm import Session

from aiot.deployer.workloads import deploy_model, stop_workload
from aiot.errors import Conflict, NotFound
from aiot.store.apps import AppInstance, InstanceState
from aiot.store.catalog import ModelPackage, PackageStatus
from aiot.store.models import User
from aiot.store.rollouts import Rollout, RolloutState, RolloutTarget
from aiot.store.runtime import DesiredState, ModelDeployment, Workload, WorkloadEvent, WorkloadStatus
from aiot.timeutil import utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RolloutPolicy:
    """When a new version counts as good or failed (from settings; tests shorten them)."""

    soak_seconds: float = 30.0
    ready_deadline_seconds: float = 240.0
    max_restarts: int = 2

    @classmethod
    def from_settings(cls, settings: Any) -> RolloutPolicy:
        return cls(
            soak_seconds=settings.rollout_soak_seconds,
            ready_deadline_seconds=settings.rollout_ready_deadline_seconds,
            max_restarts=settings.rollout_max_restarts,
        )


def history(session: Session, target_id: str) -> list[Rollout]:
    """Every rollout of one instance (or model name), oldest first."""
    return list(
        session.scalars(select(Rollout).where(Rollout.target_id == target_id).order_by(Rollout.started_at, Rollout.id))
    )


def rolling(session: Session, target_id: str) -> Rollout | None:
    return session.scalar(select(Rollout).where(Rollout.target_id == target_id, Rollout.state == RolloutState.rolling))


def rollout_out(rollout: Rollout) -> dict[str, Any]:
    """The API's view of one rollout."""
    return {
        "id": rollout.id,
        "target": rollout.target.value,
        "target_id": rollout.target_id,
        "from_version": rollout.from_version,
        "to_version": rollout.to_version,
        "from_package_id": rollout.from_package_id,
        "to_package_id": rollout.to_package_id,
        "state": rollout.state.value,
        "reason": rollout.reason,
        "manual_rollback": rollout.manual_rollback,
        "detail": {k: v for k, v in rollout.detail.items() if k in ("replicas", "step")},
        "started_at": rollout.started_at.isoformat(),
        "finished_at": rollout.finished_at.isoformat() if rollout.finished_at else None,
    }


def replica_failure(
    workload: Workload, status: WorkloadStatus | None, policy: RolloutPolicy, now: datetime
) -> str | None:
    """Why a workload of a new version failed (crash loop, failed, degraded, not running in time), or None."""
    observed = None if status is None or status.generation != workload.generation else status
    if observed is not None:
        if observed.restarts >= policy.max_restarts:
            return f"crash loop: {observed.restarts} restarts; {observed.reason}"
        if observed.state in ("failed", "degraded"):
            return f"{observed.state}: {observed.reason}"
    running = observed is not None and observed.state == "running"
    if not running and now - workload.created_at > timedelta(seconds=policy.ready_deadline_seconds):
        return f"not running {policy.ready_deadline_seconds:g}s after its start"
    return None


# --------------------------------------------------------------------------- model rollouts


def _replicas(session: Session, deployment: ModelDeployment) -> list[Workload]:
    return list(
        session.scalars(
            select(Workload)
            .where(Workload.group_id == deployment.id, Workload.desired == DesiredState.running)
            .order_by(Workload.created_at)
        )
    )


def _ready(session: Session, workload: Workload) -> bool:
    status = session.get(WorkloadStatus, workload.id)
    return status is not None and status.state == "running" and status.generation == workload.generation


def _deployment_of(session: Session, model_id: str | None) -> ModelDeployment | None:
    if model_id is None:
        return None
    return session.scalar(select(ModelDeployment).where(ModelDeployment.model_id == model_id))


def _serving(session: Session, name: str, besides: str) -> tuple[ModelPackage, ModelDeployment] | None:
    """The deployed version of `name` the gateway serves now (highest with a ready replica), except `besides`."""
    rows = list(
        session.execute(
            select(ModelPackage, ModelDeployment)
            .join(ModelDeployment, ModelDeployment.model_id == ModelPackage.id)
            .where(ModelPackage.name == name, ModelPackage.id != besides)
        )
    )
    if not rows:
        return None
    rows.sort(
        key=lambda r: (any(_ready(session, w) for w in _replicas(session, r[1])), Version(r[0].version)), reverse=True
    )
    return rows[0][0], rows[0][1]


def _pinned_by_running_instances(session: Session, model_id: str) -> bool:
    return any(
        model_id in (instance.models or {}).values()
        for instance in session.scalars(select(AppInstance).where(AppInstance.state == InstanceState.running))
    )


def start_model_rollout(
    session: Session, secret: bytes, model: ModelPackage, *, by: str | None, manual_rollback: bool = False
) -> Rollout:
    """Begin moving `model.name` to `model` (a version already uploaded)."""
    if model.status != PackageStatus.active and not manual_rollback:
        raise Conflict(f"model {model.name} {model.version} is deprecated; roll out an active version", field="version")
    current = rolling(session, model.name)
    if current is not None:
        raise Conflict(
            f"model {model.name} is already rolling out to {current.to_version} ({current.id}); "
            "wait for it, or `aiot model rollback` it",
            field="version",
        )
    serving = _serving(session, model.name, besides=model.id)
    if serving is None:
        raise Conflict(
            f"model {model.name} has no other deployed version to roll from; deploy it "
            f"(aiot model deploy {model.name}:{model.version})",
            field="version",
        )
    old_model, old = serving
    target_replicas = old.replicas
    existing = _deployment_of(session, model.id)
    deploy_model(session, secret, model, existing.replicas if existing else 1, by, allow_deprecated=True)
    rollout = Rollout(
        target=RolloutTarget.model,
        target_id=model.name,
        from_package_id=old_model.id,
        to_package_id=model.id,
        from_version=old_model.version,
        to_version=model.version,
        manual_rollback=manual_rollback,
        requested_by=by,
        detail={
            "replicas": target_replicas,
            "new_deployment_existed": existing is not None,
            "new_replicas_before": existing.replicas if existing else 0,
            "old_owner_id": old.owner_id,
            "step": f"starting {model.version} replica 1",
        },
    )
    session.add(rollout)
    session.flush()
    log.info(
        "model %s: rolling out %s -> %s (%d replicas)", model.name, old_model.version, model.version, target_replicas
    )
    return rollout


def rollback_model(session: Session, secret: bytes, name: str, *, by: str | None) -> Rollout:
    """Undo the rolling rollout of `name` at once, or roll back to the version the last finished one replaced."""
    current = rolling(session, name)
    if current is not None:
        _roll_back(session, secret, current, "rolled back by hand")
        current.manual_rollback = True
        return current
    done = [r for r in history(session, name) if r.state == RolloutState.succeeded]
    if not done or done[-1].from_package_id is None:
        raise Conflict(f"model {name} has no earlier version to roll back to", field="model")
    previous = session.get(ModelPackage, done[-1].from_package_id)
    if previous is None:
        raise NotFound(f"model {name} {done[-1].from_version} no longer exists", field="model")
    return start_model_rollout(session, secret, previous, by=by, manual_rollback=True)


def _retire_one(session: Session, deployment: ModelDeployment, keep: int, why: str) -> None:
    """One replica fewer (the oldest); at 0 the deployment goes (keep 1 for pinned instances)."""
    if deployment.replicas > keep:
        deployment.replicas -= 1
        replicas = _replicas(session, deployment)
        if replicas:
            stop_workload(session, replicas[0], reason=why)
    if deployment.replicas == 0:
        session.delete(deployment)


def _roll_back(session: Session, secret: bytes, rollout: Rollout, why: str) -> None:
    old_model = session.get(ModelPackage, rollout.from_package_id) if rollout.from_package_id else None
    new = _deployment_of(session, rollout.to_package_id)
    replicas = int(rollout.detail.get("replicas") or 1)
    if old_model is not None:  # back to full strength first, then the new version goes
        owner = rollout.detail.get("old_owner_id") or old_model.owner_id
        deploy_model(session, secret, old_model, replicas, owner, allow_deprecated=True)
    if new is not None:
        before = int(rollout.detail.get("new_replicas_before") or 0)
        for workload in _replicas(session, new)[before:]:
            stop_workload(session, workload, reason=f"rolled back: {why}")
            session.add(
                WorkloadEvent(
                    workload_id=workload.id,
                    kind="rolled_back",
                    detail={"reason": why, "to_version": rollout.from_version},
                )
            )
        if before:
            new.replicas = before
        else:
            session.delete(new)
    rollout.state, rollout.finished_at, rollout.reason = RolloutState.rolled_back, utcnow(), why[:500]
    _mail_owner(session, rollout)
    log.warning("model %s: %s rolled back to %s: %s", rollout.target_id, rollout.to_version, rollout.from_version, why)


def _mail_owner(session: Session, rollout: Rollout) -> None:
    model = session.get(ModelPackage, rollout.to_package_id)
    owner = session.get(User, model.owner_id) if model is not None and model.owner_id else None
    if owner is None or not owner.email:
        return
    from aiot.notify.outbox import enqueue

    enqueue(
        session,
        owner.email,
        f"model {rollout.target_id} {rollout.to_version} was rolled back to {rollout.from_version}",
        f"Hello {owner.username},\n\nthe rollout of model {rollout.target_id} {rollout.to_version} failed: "
        f"{rollout.reason}.\n\nVersion {rollout.from_version} serves the model's address again.\n\n"
        "-- the AIoT platform\n",
        kind="rollback",
        user_id=owner.id,
        dedupe_key=f"rollback:{rollout.id}",
    )


def _step(session: Session, secret: bytes, rollout: Rollout, policy: RolloutPolicy, now: datetime) -> bool:
    """Advance one rollout by at most one step; True when workloads changed."""
    new_model = session.get(ModelPackage, rollout.to_package_id)
    new = _deployment_of(session, rollout.to_package_id)
    if new_model is None or new is None:
        rollout.state, rollout.finished_at = RolloutState.superseded, now
        rollout.reason = "the new version was undeployed or deleted during the rollout"
        return False
    replicas = _replicas(session, new)
    for workload in replicas:
        failure = replica_failure(workload, session.get(WorkloadStatus, workload.id), policy, now)
        if failure is not None:
            _roll_back(session, secret, rollout, f"{rollout.to_version} replica {workload.id}: {failure}")
            return True
    target = int(rollout.detail.get("replicas") or 1)
    old = _deployment_of(session, rollout.from_package_id)
    if len(replicas) < new.replicas or not all(_ready(session, w) for w in replicas):
        rollout.healthy_since = None
        return False
    keep = 1 if old is not None and _pinned_by_running_instances(session, old.model_id) else 0
    if old is not None and old.replicas > keep and len(replicas) + old.replicas > target:
        _retire_one(session, old, keep, f"replaced by {rollout.to_version} (rollout {rollout.id})")
        rollout.detail = {**rollout.detail, "step": f"retired a {rollout.from_version} replica"}
        return True
    if new.replicas < target:
        deploy_model(session, secret, new_model, new.replicas + 1, new.owner_id, allow_deprecated=True)
        rollout.detail = {**rollout.detail, "step": f"starting {rollout.to_version} replica {new.replicas}"}
        return True
    if rollout.healthy_since is None:
        rollout.healthy_since = now
        rollout.detail = {**rollout.detail, "step": "soaking"}
    elif now - rollout.healthy_since >= timedelta(seconds=policy.soak_seconds):
        rollout.state, rollout.finished_at = RolloutState.succeeded, now
        kept = f"; {keep} replica of {rollout.from_version} kept for pinned app instances" if keep else ""
        rollout.reason = f"{target} replica(s) of {rollout.to_version} healthy for {policy.soak_seconds:g}s{kept}"
    return False


def check_model_rollouts(session: Session, secret: bytes, policy: RolloutPolicy, now: datetime | None = None) -> bool:
    """One step of every rolling model rollout (the deployer's pass calls this); True when workloads changed."""
    now = now or utcnow()
    changed = False
    for rollout in session.scalars(
        select(Rollout).where(Rollout.target == RolloutTarget.model, Rollout.state == RolloutState.rolling)
    ).all():
        changed = _step(session, secret, rollout, policy, now) or changed
        session.flush()
    return changed
