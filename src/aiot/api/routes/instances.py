"""App instances (end users): bind an app at a location, run it now or by schedule, see status and address.

An end user binds only at locations an admin granted them (`aiot.devices.grants`); others answer 404."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Depends, Response, status
from pydantic import BaseModel, Field

from aiot.api.deps import Ctx, CurrentUser
from aiot.api.routes.devices import LocationOut, location_out
from aiot.api.schemas import OutModel, RolloutOut, Timestamp
from aiot.api.security import Allow, Principal
from aiot.apps import instances as instance_rules
from aiot.apps.bindings import locations_for_app
from aiot.apps.instances import create_instance, get_instance
from aiot.apps.service import DeployerInstanceController
from aiot.apps.upgrades import rollback_instance, upgrade_instance
from aiot.artifacts.repository import ArtifactRepository
from aiot.deployer.rollouts import history, rollout_out
from aiot.deployer.service import workloads_changed
from aiot.devices.grants import scope_for
from aiot.errors import NotFound
from aiot.secrets_store import platform_secret
from aiot.store.apps import AppInstance, InstanceState
from aiot.store.catalog import AppPackage
from aiot.store.models import Role
from aiot.store.rollouts import RolloutState
from aiot.store.runtime import Workload, WorkloadStatus
from aiot.timeutil import utcnow

router = APIRouter(tags=["instances"])
USERS = Allow(Role.end_user, Role.admin)


class InstanceIn(BaseModel):
    app: str = Field(description="app id, name or name:version")
    location: str = Field(description="location id or name")
    bindings: dict[str, list[str]] = Field(default_factory=dict, description="alias -> device ids, when ambiguous")
    settings: dict[str, Any] = Field(default_factory=dict)
    name: str = Field("", max_length=100)


class UpgradeIn(BaseModel):
    version: str = Field(min_length=1, max_length=60, description="the app version to move to, e.g. 1.2.0")


class RunIn(BaseModel):
    minutes: float | None = Field(None, gt=0, le=7 * 24 * 60, description="run length; none: until stopped")


class InstanceOut(OutModel):
    id: str
    name: str
    app_id: str
    app: str | None = Field(description="name:version of the app")
    kind: str | None = Field(description="the app's kind (web, background, ...)")
    models: dict[str, str] = Field(description="model alias -> pinned model package id")
    location_id: str
    owner_id: str
    bindings: dict[str, Any]
    settings: dict[str, Any]
    state: str
    workload_id: str | None
    workload_state: str | None
    workload_reason: str | None
    node_id: str | None
    address: str | None
    run_until: Timestamp | None
    current_occurrence_id: str | None
    created_at: Timestamp
    rollout: RolloutOut | None = Field(description="the version change in progress, if any")


def instance_out(session: Any, instance: AppInstance) -> dict[str, Any]:
    app = session.get(AppPackage, instance.app_id)
    workload = session.get(Workload, instance.workload_id) if instance.workload_id else None
    observed = session.get(WorkloadStatus, workload.id) if workload else None
    return {
        "id": instance.id,
        "name": instance.name,
        "app_id": instance.app_id,
        "app": f"{app.name}:{app.version}" if app else None,
        "kind": app.kind if app else None,
        "models": dict(instance.models or {}),
        "location_id": instance.location_id,
        "owner_id": instance.owner_id,
        "bindings": instance.bindings,
        "settings": instance.settings,
        "state": instance.state.value,
        "workload_id": instance.workload_id,
        "workload_state": observed.state if observed and instance.state == InstanceState.running else None,
        "workload_reason": observed.reason if observed and instance.state == InstanceState.running else None,
        "node_id": workload.node_id if workload and instance.state == InstanceState.running else None,
        "address": instance.address,
        "run_until": instance.run_until.isoformat() if instance.run_until else None,
        "current_occurrence_id": instance.current_occurrence_id,
        "created_at": instance.created_at.isoformat(),
        "rollout": next(
            (rollout_out(r) for r in history(session, instance.id) if r.state == RolloutState.rolling), None
        ),
    }


def _owned(session: Any, principal: Principal, instance_id: str) -> AppInstance:
    instance = get_instance(session, instance_id)
    if principal.role != Role.admin and instance.owner_id != principal.user.id:
        raise NotFound(f"no app instance {instance_id!r}", field="instance")  # others' instances are invisible
    return instance


@router.get("/apps/{ref}/locations", response_model=list[LocationOut])
def app_locations(ctx: Ctx, ref: str, principal: CurrentUser) -> list[dict]:
    """Locations the caller may see that have every device type the app needs (what a schedule form should
    offer)."""
    with ctx.db.session() as session:
        app = ArtifactRepository.resolve(session, AppPackage, ref)
        scope = scope_for(session, principal.user.id)
        return [location_out(loc) for loc in locations_for_app(session, app) if scope.allows(loc.id)]


@router.post("/instances", status_code=status.HTTP_201_CREATED, response_model=InstanceOut)
def add_instance(ctx: Ctx, body: InstanceIn, principal: Principal = Depends(USERS)) -> dict:
    with ctx.db.session() as session:
        instance = create_instance(
            session,
            app_ref=body.app,
            location_ref=body.location,
            owner_id=principal.user.id,
            bindings=body.bindings,
            settings=body.settings,
            name=body.name,
        )
        return instance_out(session, instance)


@router.get("/instances", response_model=list[InstanceOut])
def list_instances(ctx: Ctx, principal: Principal = Depends(USERS)) -> list[dict]:
    with ctx.db.session() as session:
        owner = None if principal.role == Role.admin else principal.user.id
        return [instance_out(session, i) for i in instance_rules.list_instances(session, owner)]


@router.get("/instances/{instance_id}", response_model=InstanceOut)
def show_instance(ctx: Ctx, instance_id: str, principal: Principal = Depends(USERS)) -> dict:
    with ctx.db.session() as session:
        return instance_out(session, _owned(session, principal, instance_id))


@router.post("/instances/{instance_id}/run", response_model=InstanceOut)
async def run_now(ctx: Ctx, instance_id: str, body: RunIn, principal: Principal = Depends(USERS)) -> dict:
    """Start the instance now (for `minutes`, or until stopped), outside any schedule."""
    with ctx.db.session() as session:
        _owned(session, principal, instance_id)
    until = utcnow() + timedelta(minutes=body.minutes) if body.minutes else None
    await DeployerInstanceController(ctx).start(instance_id, None, until)
    with ctx.db.session() as session:
        return instance_out(session, get_instance(session, instance_id))


@router.post("/instances/{instance_id}/stop", response_model=InstanceOut)
async def stop_now(ctx: Ctx, instance_id: str, principal: Principal = Depends(USERS)) -> dict:
    with ctx.db.session() as session:
        _owned(session, principal, instance_id)
    await DeployerInstanceController(ctx).stop(instance_id, None)
    with ctx.db.session() as session:
        return instance_out(session, get_instance(session, instance_id))


@router.post("/instances/{instance_id}/upgrade", response_model=RolloutOut)
async def upgrade(ctx: Ctx, instance_id: str, body: UpgradeIn, principal: Principal = Depends(USERS)) -> dict:
    """Move the instance to another version of its app (and the newest models that version accepts). A running
    instance restarts on it at once; if the new version crash-loops, is not running in time or degrades during
    the soak period, the platform rolls back by itself and mails the owner."""
    with ctx.db.session() as session:
        instance = _owned(session, principal, instance_id)
        rollout = rollout_out(
            upgrade_instance(session, platform_secret(ctx.settings), instance, body.version, by=principal.user.id)
        )
    await workloads_changed(ctx)
    return rollout


@router.post("/instances/{instance_id}/rollback", response_model=RolloutOut)
async def rollback(ctx: Ctx, instance_id: str, principal: Principal = Depends(USERS)) -> dict:
    """Back to the version the latest upgrade replaced (an upgrade still in progress is undone at once)."""
    with ctx.db.session() as session:
        instance = _owned(session, principal, instance_id)
        rollout = rollout_out(rollback_instance(session, platform_secret(ctx.settings), instance, by=principal.user.id))
    await workloads_changed(ctx)
    return rollout


@router.get("/instances/{instance_id}/history", response_model=list[RolloutOut])
def version_history(ctx: Ctx, instance_id: str, principal: Principal = Depends(USERS)) -> list[dict]:
    """Every version change of the instance, oldest first, with its outcome."""
    with ctx.db.session() as session:
        instance = _owned(session, principal, instance_id)
        return [rollout_out(r) for r in history(session, instance.id)]


@router.delete("/instances/{instance_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_instance(ctx: Ctx, instance_id: str, principal: Principal = Depends(USERS)) -> Response:
    with ctx.db.session() as session:
        _owned(session, principal, instance_id)
    await DeployerInstanceController(ctx).stop(instance_id, None)
    with ctx.db.session() as session:
        get_instance(session, instance_id).state = InstanceState.retired
    return Response(status_code=status.HTTP_204_NO_CONTENT)
