"""Creating app instances and starting/stopping them as workloads (rules; the scheduler and API call these).

An instance is pinned: `app_id` is one app version and `models` maps each model alias to one model version,
both chosen when the instance is created. Starting it (now, or by schedule, any number of times) runs exactly
those, so a new upload never changes what an existing instance runs. Moving an instance to newer versions is an
explicit step: `repin` (the upgrade flow of the deployment-lifecycle issue builds on it).

Models deployed on an instance's behalf belong to the model's owner, not to the end user who started the
instance: its author sees and manages it, and its logs are the author's, not the end user's.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from aiot.apps.bindings import resolve_devices, resolve_model
from aiot.artifacts.repository import ArtifactRepository
from aiot.deployer.workloads import HEARTBEAT_INTERVAL, deploy_model, new_workload, stop_workload
from aiot.devices.grants import scope_for, visible_location
from aiot.errors import Conflict, Forbidden, NotFound, ValidationFailed
from aiot.store.apps import AppInstance, InstanceState
from aiot.store.catalog import AppPackage, ModelPackage, PackageStatus
from aiot.store.devices import Device
from aiot.store.runtime import DesiredState, ModelDeployment, Workload, WorkloadKind

log = logging.getLogger(__name__)
APP_RESOURCES = {"cpu": 0.25, "memory_mb": 256}


def _settings(app: AppPackage, given: dict[str, Any]) -> dict[str, Any]:
    declared = (app.manifest.get("context") or {}).get("settings") or {}
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise ValidationFailed(
            f"the app declares no setting(s) {', '.join(unknown)}; known: {', '.join(sorted(declared)) or 'none'}",
            field=f"settings.{unknown[0]}",
        )
    return {name: given.get(name, spec.get("default")) for name, spec in declared.items()}


def pin_models(session: Session, app: AppPackage) -> dict[str, str]:
    """alias -> model id: the newest active version of each model the app names, within the app's range."""
    pins = {}
    for alias, ref in ((app.manifest.get("context") or {}).get("models") or {}).items():
        try:
            pins[alias] = resolve_model(session, ref["name"], ref.get("version", "")).id
        except ValidationFailed as exc:
            raise ValidationFailed(f"model '{alias}': {exc.message}", field=f"models.{alias}") from exc
    return pins


def repin(session: Session, instance: AppInstance, app: AppPackage) -> None:
    """Move `instance` to app version `app` and the newest matching model versions (takes effect at its next
    start). The one way an instance's versions change: the explicit upgrade flow calls this; uploads never do."""
    current = session.get(AppPackage, instance.app_id)
    if current is not None and current.name != app.name:
        raise ValidationFailed(f"{app.name} is another app than the instance's {current.name}", field="app")
    instance.models = pin_models(session, app)
    instance.app_id = app.id


def create_instance(
    session: Session,
    *,
    app_ref: str,
    location_ref: str,
    owner_id: str,
    bindings: dict[str, list[str]] | None = None,
    settings: dict[str, Any] | None = None,
    name: str = "",
) -> AppInstance:
    """A new idle instance of the app at a location the owner was granted (404 for any other, as if missing):
    its devices are resolved there, so an instance can only ever bind devices its owner may see."""
    app = ArtifactRepository.resolve(session, AppPackage, app_ref)
    if app.status != PackageStatus.active:
        raise Conflict(f"app {app.name} {app.version} is deprecated", field="app")
    location = visible_location(session, scope_for(session, owner_id), location_ref)
    bound = resolve_devices(session, app, location, bindings)
    instance = AppInstance(
        app_id=app.id,
        location_id=location.id,
        owner_id=owner_id,
        bindings=bound,
        models=pin_models(session, app),
        settings=_settings(app, settings or {}),
        name=name or f"{app.name} at {location.name}",
    )
    session.add(instance)
    session.flush()
    return instance


def list_instances(session: Session, owner_id: str | None) -> list[AppInstance]:
    """Live (not retired) instances, oldest first: one owner's, or everyone's (`owner_id` None, admins)."""
    query = select(AppInstance).where(AppInstance.state != InstanceState.retired).order_by(AppInstance.created_at)
    if owner_id is not None:
        query = query.where(AppInstance.owner_id == owner_id)
    return list(session.scalars(query))


def instances_of_app(session: Session, app_name: str) -> list[AppInstance]:
    """Live instances of every version of the app named `app_name`, oldest first."""
    query = (
        select(AppInstance)
        .join(AppPackage, AppPackage.id == AppInstance.app_id)
        .where(AppPackage.name == app_name, AppInstance.state != InstanceState.retired)
        .order_by(AppInstance.created_at)
    )
    return list(session.scalars(query))


def get_instance(session: Session, instance_id: str) -> AppInstance:
    instance = session.get(AppInstance, instance_id)
    if instance is None or instance.state == InstanceState.retired:
        raise NotFound(f"no app instance {instance_id!r}", field="instance")
    return instance


def _device_binding(session: Session, device_ids: list[str]) -> list[dict[str, Any]]:
    out = []
    for device_id in device_ids:
        device = session.get(Device, device_id)
        if device is not None:
            out.append({"device_id": device.id, "name": device.name, "device_type": device.device_type.definition})
    return out


def pinned_model(session: Session, instance: AppInstance, alias: str, ref: dict[str, Any]) -> ModelPackage:
    """The model version `instance` is pinned to for `alias`. An instance created before pinning existed is
    pinned here, at its first start, and keeps that version from then on."""
    model_id = (instance.models or {}).get(alias)
    model = session.get(ModelPackage, model_id) if model_id else None
    if model is None:
        if model_id:
            raise Conflict(
                f"model '{alias}' of instance {instance.id}: pinned version {model_id} no longer "
                "exists; upgrade the instance",
                field=f"models.{alias}",
            )
        try:
            model = resolve_model(session, ref["name"], ref.get("version", ""))
        except ValidationFailed as exc:
            raise ValidationFailed(f"model '{alias}': {exc.message}", field=f"models.{alias}") from exc
        instance.models = {**(instance.models or {}), alias: model.id}
    return model


def ensure_model_deployed(session: Session, secret: bytes, model: ModelPackage) -> dict:
    """Deploy the pinned version if nothing serves it yet: one replica, owned by the model's owner (the end
    user starting the instance must not own, manage or read the logs of another user's model), marked `auto`
    (removed again when no run needs it, `aiot.apps.prewarm`)."""
    if session.scalar(select(ModelDeployment).where(ModelDeployment.model_id == model.id)) is None:
        log.info("deploying model %s %s for an app instance (1 replica)", model.name, model.version)
        deploy_model(session, secret, model, 1, model.owner_id, allow_deprecated=True, auto=True)
    return {"model_id": model.id, "name": model.name, "version": model.version}


def start_instance(
    session: Session, secret: bytes, instance: AppInstance, *, occurrence_id: str | None, until: datetime | None
) -> Workload:
    """Make the instance run (idempotent: an already running instance just takes the new end time).

    Refused (403) when the owner no longer holds a grant on the instance's location: a revoked grant must also
    stop the scheduler from starting the instance there again."""
    app = session.get(AppPackage, instance.app_id)
    assert app is not None
    if not scope_for(session, instance.owner_id).allows(instance.location_id):
        raise Forbidden(
            f"the owner of instance {instance.id} no longer has access to its location "
            f"{instance.location_id}; an admin must grant it again",
            field="location",
        )
    if instance.workload_id:
        current = session.get(Workload, instance.workload_id)
        if current is not None and current.desired == DesiredState.running:
            instance.current_occurrence_id, instance.run_until = occurrence_id, until
            return current
    context = app.manifest.get("context") or {}
    models = {
        alias: ensure_model_deployed(session, secret, pinned_model(session, instance, alias, ref))
        for alias, ref in (context.get("models") or {}).items()
    }
    config: dict[str, Any] = {
        "kind": "app",
        "app_instance_id": instance.id,
        "package": {"id": app.id, "name": app.name, "version": app.version, "manifest": app.manifest},
        "models": models,
        "sensors": {a: _device_binding(session, ids) for a, ids in (instance.bindings.get("sensors") or {}).items()},
        "controllers": {
            a: _device_binding(session, ids) for a, ids in (instance.bindings.get("controllers") or {}).items()
        },
        "settings": dict(instance.settings),
        "heartbeat": {"interval": HEARTBEAT_INTERVAL},
    }
    if app.kind == "web":
        config["serve"] = {"port": 0}
    workload = new_workload(
        session,
        secret,
        kind=WorkloadKind.app,
        package_id=app.id,
        sha256=app.sha256,
        owner_id=instance.owner_id,
        group_id=instance.id,
        config=config,
        resources=dict(APP_RESOURCES),
    )
    instance.workload_id, instance.state = workload.id, InstanceState.running
    instance.current_occurrence_id, instance.run_until = occurrence_id, until
    instance.address = instance.notified_address = None
    return workload


def stop_instance(session: Session, instance: AppInstance, *, occurrence_id: str | None, reason: str) -> bool:
    """Stop the instance's run; a stop for an occurrence other than the current one is ignored (stale)."""
    if occurrence_id is not None and instance.current_occurrence_id not in (None, occurrence_id):
        return False
    if instance.workload_id:
        workload = session.get(Workload, instance.workload_id)
        if workload is not None and workload.desired == DesiredState.running:
            stop_workload(session, workload, reason=reason)
    instance.state = InstanceState.idle if instance.state != InstanceState.retired else instance.state
    instance.current_occurrence_id = instance.run_until = None
    instance.address = None
    return True
