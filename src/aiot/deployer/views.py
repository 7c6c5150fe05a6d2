"""What people may see of the deployer's work, and the model deployments they manage (rules only, no HTTP).

Visibility is decided here once: admins see every workload; a developer sees their own workloads and those of the
instances of apps whose name they own (to debug their app where it runs), never another developer's models.
Anything outside answers 404 like a missing id.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.orm import Session

from aiot.accounts.caller import Caller
from aiot.artifacts import names
from aiot.artifacts.repository import ArtifactRepository
from aiot.deployer.workloads import stop_workload
from aiot.errors import Forbidden, NotFound
from aiot.store.apps import AppInstance
from aiot.store.catalog import AppPackage, ModelPackage
from aiot.store.runtime import (
    DesiredState,
    ModelDeployment,
    Node,
    PlacementDecision,
    Workload,
    WorkloadEvent,
    WorkloadKind,
)


def visible_to(viewer: Caller) -> ColumnElement[bool] | None:
    """The workloads `viewer` may see, as a filter (None: all, for admins)."""
    if viewer.is_admin:
        return None
    of_my_apps = select(AppInstance.id).where(AppInstance.app_id.in_(names.app_ids_owned_by(viewer.user_id)))
    return or_(
        Workload.owner_id == viewer.user_id,
        and_(Workload.kind == WorkloadKind.app, Workload.group_id.in_(of_my_apps)),
    )


def list_workloads(session: Session, viewer: Caller, include_stopped: bool = False) -> list[Workload]:
    """The workloads `viewer` may see, oldest first; stopped ones only when asked."""
    query = select(Workload).order_by(Workload.created_at)
    if not include_stopped:
        query = query.where(Workload.desired == DesiredState.running)
    scope = visible_to(viewer)
    if scope is not None:
        query = query.where(scope)
    return list(session.scalars(query))


def get_workload(session: Session, viewer: Caller, workload_id: str) -> Workload:
    query = select(Workload).where(Workload.id == workload_id)
    scope = visible_to(viewer)
    workload = session.scalar(query if scope is None else query.where(scope))
    if workload is None:
        raise NotFound(f"no workload {workload_id!r}", field="workload_id")
    return workload


def workload_events(session: Session, workload_id: str) -> list[WorkloadEvent]:
    """State changes, restarts and placements of a workload, in order."""
    return list(
        session.scalars(
            select(WorkloadEvent).where(WorkloadEvent.workload_id == workload_id).order_by(WorkloadEvent.id)
        )
    )


def placement_decisions(session: Session, workload_id: str) -> list[PlacementDecision]:
    """Every placement of a workload with each node's score or why it was excluded."""
    return list(
        session.scalars(
            select(PlacementDecision).where(PlacementDecision.workload_id == workload_id).order_by(PlacementDecision.id)
        )
    )


def workload_labels(session: Session, workload: Workload) -> tuple[str | None, str | None]:
    """What people call a workload's package and node: "name:version" and the node's name (None when gone)."""
    table = ModelPackage if workload.kind == WorkloadKind.model else AppPackage
    package = session.get(table, workload.package_id)
    node = session.get(Node, workload.node_id) if workload.node_id else None
    return (f"{package.name}:{package.version}" if package else None), (node.name if node else None)


def list_deployments(session: Session) -> list[ModelDeployment]:
    return list(session.scalars(select(ModelDeployment).order_by(ModelDeployment.created_at)))


def deployment_replicas(session: Session, deployment: ModelDeployment) -> list[Workload]:
    """The workloads that serve a deployment now."""
    return list(
        session.scalars(
            select(Workload).where(Workload.group_id == deployment.id, Workload.desired == DesiredState.running)
        )
    )


def deployment_of_model(session: Session, model: ModelPackage) -> ModelDeployment | None:
    return session.scalar(select(ModelDeployment).where(ModelDeployment.model_id == model.id))


def find_deployment(session: Session, ref: str) -> ModelDeployment:
    """A deployment by its id, or by its model (id, name, name:version); 404 when not deployed."""
    deployment = session.get(ModelDeployment, ref)
    if deployment is None:
        deployment = deployment_of_model(session, ArtifactRepository.resolve(session, ModelPackage, ref))
    if deployment is None:
        raise NotFound(f"{ref!r} is not deployed", field="deployment")
    return deployment


def undeploy(session: Session, viewer: Caller, deployment: ModelDeployment) -> None:
    """Stop every replica and forget the deployment; only whoever deployed it, or an admin."""
    if not viewer.is_admin and deployment.owner_id != viewer.user_id:
        raise Forbidden("this deployment belongs to another user")
    for workload in deployment_replicas(session, deployment):
        stop_workload(session, workload, reason="undeployed")
    session.delete(deployment)
