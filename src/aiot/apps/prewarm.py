"""Models ready before a scheduled run starts, and gone again once no run needs them.

Without this, a scheduled app started at its time, then waited (readiness gate) while its model's environment was
built and the model loaded: the first minute of a 9:00 run was lost. Here the apps service looks `lead` seconds
ahead every pass: each occurrence about to start has the model versions its instance is pinned to deployed now
(as at an instance's start: one replica, the model owner's, `auto`). The other way, an `auto` deployment that no
running instance is pinned to and no run within `lead` needs is removed once it has been idle for `lead`
seconds too (a user's own `aiot model deploy` is never touched). Kubernetes' KEDA calls these "cron scalers";
here the schedule is already known, so nothing has to be configured.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from aiot.apps.instances import ensure_model_deployed, pinned_model
from aiot.deployer.workloads import stop_workload
from aiot.store.apps import AppInstance, InstanceState
from aiot.store.catalog import AppPackage, ModelPackage
from aiot.store.rollouts import Rollout, RolloutState, RolloutTarget
from aiot.store.runtime import DesiredState, ModelDeployment, Workload
from aiot.store.scheduling import Occurrence, OccurrenceState
from aiot.timeutil import utcnow

log = logging.getLogger(__name__)


def _instance_models(session: Session, instance: AppInstance) -> list[str]:
    """The model version ids `instance` runs with (pinning it now if it never ran)."""
    app = session.get(AppPackage, instance.app_id)
    if app is None:
        return []
    refs = ((app.manifest.get("context") or {}).get("models") or {}).items()
    return [pinned_model(session, instance, alias, ref).id for alias, ref in refs]


def _upcoming(session: Session, now: datetime, lead: timedelta) -> list[AppInstance]:
    occurrences = session.scalars(
        select(Occurrence).where(
            Occurrence.state == OccurrenceState.planned, Occurrence.start_at <= now + lead, Occurrence.end_at > now
        )
    )
    found: dict[str, AppInstance] = {}
    for occurrence in occurrences:
        instance = session.get(AppInstance, occurrence.app_instance_id)
        if instance is not None and instance.state != InstanceState.retired:
            found[instance.id] = instance
    return list(found.values())


def prewarm(session: Session, secret: bytes, lead: timedelta, now: datetime | None = None) -> list[str]:
    """Deploy what runs starting within `lead` need; the model ids newly deployed."""
    now = now or utcnow()
    started = []
    for instance in _upcoming(session, now, lead):
        try:
            model_ids = _instance_models(session, instance)
        except Exception as exc:  # noqa: BLE001 - a pin gone bad shows at the run's start, with its reason
            log.warning("pre-warm of instance %s skipped: %s", instance.id, exc)
            continue
        for model_id in model_ids:
            if session.scalar(select(ModelDeployment).where(ModelDeployment.model_id == model_id)) is None:
                model = session.get(ModelPackage, model_id)
                if model is not None:
                    ensure_model_deployed(session, secret, model)
                    log.info(
                        "pre-warming model %s %s for the run of instance %s", model.name, model.version, instance.id
                    )
                    started.append(model_id)
    return started


def needed_models(session: Session, lead: timedelta, now: datetime) -> set[str]:
    """Model ids that running instances are pinned to, upcoming runs need, or a rollout works with."""
    needed: set[str] = set()
    for instance in session.scalars(select(AppInstance).where(AppInstance.state == InstanceState.running)):
        needed.update((instance.models or {}).values())
    for instance in _upcoming(session, now, lead):
        needed.update((instance.models or {}).values())
    for rollout in session.scalars(
        select(Rollout).where(Rollout.state == RolloutState.rolling, Rollout.target == RolloutTarget.model)
    ):
        needed.update(i for i in (rollout.from_package_id, rollout.to_package_id) if i)
    return needed


class ScaleBack:
    """Removes `auto` deployments idle for `lead`; remembers since when each was idle (in memory: a restart
    only restarts the count)."""

    def __init__(self) -> None:
        self.idle_since: dict[str, datetime] = {}

    def run(self, session: Session, lead: timedelta, now: datetime | None = None) -> list[str]:
        """One pass; the model ids whose deployments were removed."""
        now = now or utcnow()
        needed = needed_models(session, lead, now)
        removed, idle = [], {}
        for deployment in session.scalars(select(ModelDeployment).where(ModelDeployment.auto.is_(True))).all():
            if deployment.model_id in needed:
                continue
            since = self.idle_since.get(deployment.id, now)
            idle[deployment.id] = since
            if now - since < lead:
                continue
            for workload in session.scalars(
                select(Workload).where(Workload.group_id == deployment.id, Workload.desired == DesiredState.running)
            ):
                stop_workload(session, workload, reason=f"no run needs it (idle {lead.total_seconds():g}s)")
            log.info("model deployment %s removed: no app run needs model %s", deployment.id, deployment.model_id)
            removed.append(deployment.model_id)
            session.delete(deployment)
            idle.pop(deployment.id)
        self.idle_since = idle
        return removed
