"""Model deployments and workloads: deploy a model with N replicas, see where each replica runs and why.

Developers see the workloads they own (an AI developer's model replicas, also those started for app
instances) and the workloads of the instances of apps whose name they own (to debug them); admins see all.
A replica's direct address is shown only to the model's owner and admins (everyone else sees the deployment's
state and replica count); calling it needs the model's token anyway, which the control plane adds for the
owner in `POST /models/{ref}/predict`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from aiot.api import model_gateway, oip
from aiot.api.deps import Ctx, CurrentUser
from aiot.api.schemas import LoadHistoryOut, OutModel, Timestamp
from aiot.api.security import Allow, Principal
from aiot.artifacts import names
from aiot.artifacts.repository import ArtifactRepository
from aiot.deployer import loadhistory, views
from aiot.deployer.service import wake_deployer, workloads_changed
from aiot.deployer.workloads import deploy_model
from aiot.errors import Forbidden, NotFound, ServiceUnavailable
from aiot.secrets_store import platform_secret
from aiot.store.catalog import ModelPackage
from aiot.store.models import Role
from aiot.store.runtime import (
    ModelDeployment,
    Workload,
    WorkloadStatus,
)

router = APIRouter(tags=["workloads"])
MODEL_WRITERS = Allow(Role.ai_developer, Role.admin)
OPERATORS = Allow(Role.admin, Role.ai_developer, Role.app_developer)


class DeployIn(BaseModel):
    replicas: int = Field(1, ge=1, le=32)


class WorkloadEventOut(OutModel):
    """A state change, restart or placement of a workload; kind-specific fields ride along."""

    model_config = ConfigDict(extra="allow")

    at: Timestamp
    kind: str
    node_id: str | None


class PlacementOut(OutModel):
    at: Timestamp
    node_id: str | None
    reason: str
    score: float | None
    scores: dict[str, Any] = Field(description="node -> its score, or why it was excluded")


class WorkloadOut(OutModel):
    id: str
    kind: str = Field(description="model or app")
    package_id: str
    package: str | None = Field(description="the package as people name it, name:version")
    node: str | None = Field(description="the name of the node it is placed on")
    group_id: str | None = Field(description="the deployment or app instance it belongs to")
    desired: str
    generation: int
    node_id: str | None
    resources: dict[str, Any]
    state: str
    reason: str
    restarts: int
    endpoint: str | None = Field(description="replica address; only for its owner and admins")
    last_heartbeat: Timestamp | None
    events: list[WorkloadEventOut] | None = Field(None, description="details only")
    placements: list[PlacementOut] | None = Field(None, description="details only")


class DeploymentOut(OutModel):
    id: str
    model_id: str
    model: str = Field(description="name:version")
    replicas: int
    running: int
    workloads: list[WorkloadOut]
    endpoints: list[str]
    created_at: Timestamp


def workload_out(session: Any, workload: Workload, detail: bool = False) -> dict[str, Any]:
    observed = session.get(WorkloadStatus, workload.id)
    package, node = views.workload_labels(session, workload)
    out: dict[str, Any] = {
        "id": workload.id,
        "kind": workload.kind.value,
        "package_id": workload.package_id,
        "package": package,
        "node": node,
        "group_id": workload.group_id,
        "desired": workload.desired.value,
        "generation": workload.generation,
        "node_id": workload.node_id,
        "resources": workload.resources,
        "state": observed.state if observed else "pending",
        "reason": observed.reason if observed else "",
        "restarts": observed.restarts if observed else 0,
        "endpoint": observed.endpoint if observed and observed.generation == workload.generation else None,
        "last_heartbeat": observed.last_heartbeat.isoformat() if observed and observed.last_heartbeat else None,
    }
    if detail:
        out["events"] = [
            {"at": e.at.isoformat(), "kind": e.kind, "node_id": e.node_id, **e.detail}
            for e in views.workload_events(session, workload.id)
        ]
        out["placements"] = [
            {"at": d.at.isoformat(), "node_id": d.node_id, "reason": d.reason, "score": d.score, "scores": d.scores}
            for d in views.placement_decisions(session, workload.id)
        ]
    return out


def may_see_endpoints(principal: Principal, model: ModelPackage, deployment: ModelDeployment) -> bool:
    """Replica addresses are for the model's owner (or whoever deployed it) and admins."""
    return principal.role == Role.admin or principal.user.id in (model.owner_id, deployment.owner_id)


def deployment_out(session: Any, deployment: ModelDeployment, principal: Principal) -> dict[str, Any]:
    model = session.get(ModelPackage, deployment.model_id)
    workloads = views.deployment_replicas(session, deployment)
    replicas = [workload_out(session, w) for w in workloads]
    endpoints = [r["endpoint"] for r in replicas if r["endpoint"] and r["state"] == "running"]
    running = sum(1 for r in replicas if r["state"] == "running")
    if not may_see_endpoints(principal, model, deployment):
        replicas = [{**r, "endpoint": None} for r in replicas]
        endpoints = []
    return {
        "id": deployment.id,
        "model_id": deployment.model_id,
        "model": f"{model.name}:{model.version}",
        "replicas": deployment.replicas,
        "running": running,
        "workloads": replicas,
        "endpoints": endpoints,
        "created_at": deployment.created_at.isoformat(),
    }


@router.post("/models/{ref}/deploy", status_code=status.HTTP_201_CREATED, response_model=DeploymentOut)
async def deploy(ctx: Ctx, ref: str, body: DeployIn, principal: Principal = Depends(MODEL_WRITERS)) -> dict:
    """Serve a model version as an HTTP endpoint with N replicas spread over nodes (idempotent; resizes)."""
    with ctx.db.session() as session:
        model = ArtifactRepository.resolve(session, ModelPackage, ref)
        names.check_may_change(session, names.kind_of(ModelPackage), model.name, principal.user, "deploy it")
        deployment = deploy_model(session, platform_secret(ctx.settings), model, body.replicas, principal.user.id)
        session.flush()
        out = deployment_out(session, deployment, principal)
    await wake_deployer(ctx)
    return out


@router.get("/deployments", response_model=list[DeploymentOut])
def list_deployments(ctx: Ctx, principal: CurrentUser) -> list[dict]:
    with ctx.db.session() as session:
        return [deployment_out(session, d, principal) for d in views.list_deployments(session)]


@router.get("/deployments/{ref}", response_model=DeploymentOut)
def show_deployment(ctx: Ctx, ref: str, principal: CurrentUser) -> dict:
    """`ref`: a deployment id, or the model (id, name, name:version)."""
    with ctx.db.session() as session:
        return deployment_out(session, views.find_deployment(session, ref), principal)


@router.delete("/deployments/{ref}", status_code=status.HTTP_204_NO_CONTENT)
async def undeploy(ctx: Ctx, ref: str, principal: Principal = Depends(MODEL_WRITERS)) -> Response:
    with ctx.db.session() as session:
        views.undeploy(session, principal.caller, views.find_deployment(session, ref))
    await workloads_changed(ctx)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/workloads", response_model=list[WorkloadOut])
def list_workloads(ctx: Ctx, include_stopped: bool = False, principal: Principal = Depends(OPERATORS)) -> list[dict]:
    """Admins see every workload; developers see their own and those of their apps' instances."""
    with ctx.db.session() as session:
        return [workload_out(session, w) for w in views.list_workloads(session, principal.caller, include_stopped)]


@router.get("/workloads/{workload_id}", response_model=WorkloadOut)
def show_workload(ctx: Ctx, workload_id: str, principal: Principal = Depends(OPERATORS)) -> dict:
    """A workload with its state history and every placement decision (each node's score or exclusion)."""
    with ctx.db.session() as session:
        return workload_out(session, views.get_workload(session, principal.caller, workload_id), detail=True)


@router.get("/workloads/{workload_id}/load", response_model=LoadHistoryOut)
async def workload_load(ctx: Ctx, workload_id: str, principal: Principal = Depends(OPERATORS)) -> dict:
    """The workload's recent CPU and resident memory, oldest first (who may see the workload may see this)."""
    with ctx.db.session() as session:
        views.get_workload(session, principal.caller, workload_id)
    if ctx.bus is None:
        raise ServiceUnavailable("the message bus is not connected")
    return {"samples": await loadhistory.series(ctx.bus, loadhistory.workload_key(workload_id))}


PREDICT_TIMEOUT = 30.0


@router.post("/models/{ref}/predict", response_model=oip.PredictOut)
async def predict(request: Request, ctx: Ctx, ref: str, principal: Principal = Depends(MODEL_WRITERS)) -> Response:
    """Call a running replica of the model for its owner (or an admin) through the model gateway (pooled,
    least-outstanding, retried on refusal): the body and content type go through unchanged (JSON
    `{"inputs": ...}` or multipart), and the replica's status and JSON answer come back unchanged (422 names
    the field). The try-it form of the web UI uses this route."""
    with ctx.db.session() as session:
        model = ArtifactRepository.resolve(session, ModelPackage, ref)
        deployment = views.deployment_of_model(session, model)
        if deployment is None:
            raise NotFound(f"model {model.name} {model.version} is not deployed", field="model")
        if not may_see_endpoints(principal, model, deployment):
            raise Forbidden(f"model {model.name} belongs to another user")
        name, version = model.name, model.version
    target = model_gateway.resolve(request, None, name, version)
    return await model_gateway.forward(
        request, target, "/v1/predict", await request.body(), request.headers.get("content-type", "application/json")
    )
