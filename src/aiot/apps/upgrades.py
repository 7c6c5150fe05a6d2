"""Upgrading an app instance to another version, watching the new version, and rolling back when it fails.

An upgrade is a `Rollout` row: the versions before and after. The instance is repinned at once (so its next
start, manual or scheduled, runs the new version) and, when it runs now, restarted on the new version, either
stop-first (the default: never two copies acting on the same devices) or start-first (the manifest's `upgrade`;
the old copy keeps serving until the new one runs). `check_instance_rollouts`, called every second by the apps
service, then judges the new version by what its node reports:

* a crash loop (`rollout_max_restarts` restarts), `failed`, or `degraded` -> rolled back;
* not running `rollout_ready_deadline_seconds` after its start -> rolled back;
* running, without a restart, for `rollout_soak_seconds` -> succeeded (start-first: the old copy stops now).

A rollback repins the old versions, restarts the instance on them, and says so: an event on the workload, the
rollout's reason, and an e-mail to the instance's owner. An idle instance's rollout stays `rolling` until its
next run proves the version, because only a run can. A rollback by hand (`rollback_instance`) is itself a
rollout, back to the version the last one replaced, watched the same way.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from aiot.apps.instances import repin, start_instance
from aiot.artifacts.repository import ArtifactRepository
from aiot.deployer.rollouts import RolloutPolicy, history, replica_failure, rolling
from aiot.deployer.workloads import stop_workload
from aiot.errors import Conflict, NotFound, ValidationFailed
from aiot.store.apps import AppInstance, InstanceState
from aiot.store.catalog import AppPackage, PackageStatus
from aiot.store.models import User
from aiot.store.rollouts import Rollout, RolloutState, RolloutTarget
from aiot.store.runtime import DesiredState, Workload, WorkloadEvent, WorkloadStatus
from aiot.timeutil import utcnow

log = logging.getLogger(__name__)


def _restart(session: Session, secret: bytes, instance: AppInstance, reason: str) -> Workload | None:
    """Stop the instance's workload and start its (repinned) versions in a new one; None when idle.
    The address stays the same, so the "your app is running" mail is not sent again."""
    if instance.state != InstanceState.running:
        return None
    notified = instance.notified_address
    old = session.get(Workload, instance.workload_id) if instance.workload_id else None
    if old is not None and old.desired == DesiredState.running:
        stop_workload(session, old, reason=reason)
    instance.workload_id = None
    workload = start_instance(
        session, secret, instance, occurrence_id=instance.current_occurrence_id, until=instance.run_until
    )
    instance.notified_address = notified
    return workload


def _start_beside(session: Session, secret: bytes, instance: AppInstance) -> Workload | None:
    """Start-first: a second workload on the new version; the instance keeps pointing at the old one."""
    if instance.state != InstanceState.running:
        return None
    keep = (instance.workload_id, instance.address, instance.notified_address)
    instance.workload_id = None
    workload = start_instance(
        session, secret, instance, occurrence_id=instance.current_occurrence_id, until=instance.run_until
    )
    instance.workload_id, instance.address, instance.notified_address = keep
    return workload


def upgrade_instance(
    session: Session,
    secret: bytes,
    instance: AppInstance,
    version_ref: str,
    *,
    by: str | None,
    manual_rollback: bool = False,
) -> Rollout:
    """Move `instance` to another version of its app (`version_ref`: a version like "1.2.0" or a package id)."""
    current = session.get(AppPackage, instance.app_id)
    assert current is not None
    ref = version_ref if version_ref.startswith("app_") else f"{current.name}:{version_ref}"
    try:
        target = ArtifactRepository.resolve(session, AppPackage, ref)
    except NotFound as exc:
        raise NotFound(f"app {current.name} has no version {version_ref!r}", field="version") from exc
    if target.name != current.name:
        raise ValidationFailed(f"{target.name} is another app than the instance's {current.name}", field="version")
    if target.status != PackageStatus.active and not manual_rollback:
        raise Conflict(f"{target.name} {target.version} is deprecated; upgrade to an active version", field="version")
    if target.id == current.id and not manual_rollback:
        raise Conflict(f"instance {instance.id} already runs {current.name} {current.version}", field="version")
    previous = rolling(session, instance.id)
    if previous is not None:  # the in-flight change is replaced; its "from" stays the last proven version
        previous.state, previous.finished_at = RolloutState.superseded, utcnow()
        previous.reason = f"superseded by an upgrade to {target.version}"
        previous_workload = previous.detail.get("workload_id")
        if previous.detail.get("start_first") and previous_workload and previous_workload != instance.workload_id:
            _stop(session, previous_workload, "superseded by another upgrade")
    from_models = dict(instance.models or {})
    repin(session, instance, target)
    rollout = Rollout(
        target=RolloutTarget.instance,
        target_id=instance.id,
        from_package_id=current.id,
        to_package_id=target.id,
        from_version=current.version,
        to_version=target.version,
        manual_rollback=manual_rollback,
        requested_by=by,
        detail={"from_models": from_models, "to_models": dict(instance.models or {})},
    )
    start_first = target.manifest.get("upgrade") == "start-first"
    if start_first:
        workload = _start_beside(session, secret, instance)
    else:
        workload = _restart(session, secret, instance, f"upgrade to {target.version}")
    rollout.detail = {
        **rollout.detail,
        "start_first": start_first,
        "workload_id": workload.id if workload is not None else None,
    }
    session.add(rollout)
    session.flush()
    log.info(
        "instance %s: %s %s -> %s (%s)",
        instance.id,
        current.name,
        current.version,
        target.version,
        "rollback by hand" if manual_rollback else "upgrade",
    )
    return rollout


def rollback_instance(session: Session, secret: bytes, instance: AppInstance, *, by: str | None) -> Rollout:
    """Back to the version the latest change replaced (a rolling change is undone at once)."""
    rollouts = [r for r in history(session, instance.id) if r.state in (RolloutState.rolling, RolloutState.succeeded)]
    if not rollouts:
        raise Conflict(f"instance {instance.id} has no earlier version to roll back to", field="instance")
    last = rollouts[-1]
    if last.state == RolloutState.rolling:
        _roll_back(session, secret, instance, last, "rolled back by hand")
        last.manual_rollback = True
        return last
    assert last.from_package_id is not None
    rollout = upgrade_instance(session, secret, instance, last.from_package_id, by=by, manual_rollback=True)
    instance.models = dict(last.detail.get("from_models") or instance.models)  # exactly the old pins
    return rollout


def _stop(session: Session, workload_id: str, reason: str) -> None:
    workload = session.get(Workload, workload_id)
    if workload is not None and workload.desired == DesiredState.running:
        stop_workload(session, workload, reason=reason)


def _roll_back(session: Session, secret: bytes, instance: AppInstance, rollout: Rollout, why: str) -> None:
    """Repin the versions `rollout` replaced and run them again; record and announce why."""
    old = session.get(AppPackage, rollout.from_package_id) if rollout.from_package_id else None
    if old is None:
        rollout.state, rollout.reason = RolloutState.rolled_back, f"{why}; the old version is gone"[:500]
        rollout.finished_at = utcnow()
        return
    new_workload = rollout.detail.get("workload_id")
    instance.app_id = old.id
    instance.models = dict(rollout.detail.get("from_models") or {})
    if rollout.detail.get("start_first"):
        if new_workload:
            _stop(session, new_workload, f"rolled back: {why}")  # the old copy never stopped
    else:
        _restart(session, secret, instance, f"rolled back: {why}")
    rollout.state, rollout.finished_at = RolloutState.rolled_back, utcnow()
    rollout.reason = why[:500]
    if new_workload:
        session.add(
            WorkloadEvent(
                workload_id=new_workload, kind="rolled_back", detail={"reason": why, "to_version": old.version}
            )
        )
    _mail_owner(session, instance, rollout, old)
    log.warning("instance %s: %s %s rolled back to %s: %s", instance.id, old.name, rollout.to_version, old.version, why)


def _mail_owner(session: Session, instance: AppInstance, rollout: Rollout, old: AppPackage) -> None:
    owner = session.get(User, instance.owner_id)
    if owner is None or not owner.email:
        return
    from aiot.notify.outbox import enqueue

    enqueue(
        session,
        owner.email,
        f"{old.name} {rollout.to_version} was rolled back to {old.version}",
        f"Hello {owner.username},\n\nthe upgrade of your app instance {instance.name} ({instance.id}) to "
        f"{old.name} {rollout.to_version} failed: {rollout.reason}.\n\nThe platform went back to version "
        f"{old.version}, which runs again.\n\n-- the AIoT platform\n",
        kind="rollback",
        user_id=owner.id,
        dedupe_key=f"rollback:{rollout.id}",
    )


def _new_workload(session: Session, instance: AppInstance, rollout: Rollout) -> Workload | None:
    """The workload running the new version: the one the upgrade started, or a later run's (scheduled).
    A start-first copy outlives nothing: when its instance stopped meanwhile, it stops too."""
    if rollout.detail.get("workload_id"):
        workload = session.get(Workload, rollout.detail["workload_id"])
        if workload is not None and workload.desired == DesiredState.running:
            if instance.state == InstanceState.running:
                return workload
            _stop(session, workload.id, "its instance stopped during the upgrade")
    if instance.state == InstanceState.running and instance.workload_id:
        workload = session.get(Workload, instance.workload_id)
        if (
            workload is not None
            and workload.package_id == rollout.to_package_id
            and workload.desired == DesiredState.running
        ):
            rollout.detail = {**rollout.detail, "workload_id": workload.id, "start_first": False}
            return workload
    return None


def check_instance_rollouts(
    session: Session, secret: bytes, policy: RolloutPolicy, now: datetime | None = None
) -> list[str]:
    """One pass over the rolling instance upgrades; returns the ids of the instances whose workloads changed."""
    now = now or utcnow()
    changed = []
    for rollout in session.scalars(
        select(Rollout).where(Rollout.target == RolloutTarget.instance, Rollout.state == RolloutState.rolling)
    ).all():
        instance = session.get(AppInstance, rollout.target_id)
        if instance is None or instance.state == InstanceState.retired:
            rollout.state, rollout.finished_at, rollout.reason = RolloutState.superseded, now, "instance deleted"
            continue
        workload = _new_workload(session, instance, rollout)
        if workload is None:
            continue  # idle: the next run proves the version
        status = session.get(WorkloadStatus, workload.id)
        failure = replica_failure(workload, status, policy, now)
        if failure is not None:
            _roll_back(session, secret, instance, rollout, failure)
            changed.append(instance.id)
            continue
        healthy = status is not None and status.generation == workload.generation and status.state == "running"
        if not healthy:
            rollout.healthy_since = None
        elif rollout.healthy_since is None:
            rollout.healthy_since = now
        elif now - rollout.healthy_since >= timedelta(seconds=policy.soak_seconds):
            _succeed(session, instance, rollout, workload, now)
            changed.append(instance.id)
    return changed


def _succeed(session: Session, instance: AppInstance, rollout: Rollout, workload: Workload, now: datetime) -> None:
    if rollout.detail.get("start_first") and instance.workload_id != workload.id:
        if instance.workload_id:
            _stop(session, instance.workload_id, f"replaced by version {rollout.to_version}")
        instance.workload_id = workload.id
    rollout.state, rollout.finished_at = RolloutState.succeeded, now
    rollout.reason = f"ran {(now - (rollout.healthy_since or now)).total_seconds():.0f}s without a restart"
