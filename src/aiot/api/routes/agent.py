"""The node agents' API: register with a join token, then poll assignments, fetch packages, report status."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask

from aiot.api.deps import Ctx
from aiot.api.schemas import ZIP_ANSWER, OutModel
from aiot.api.security import JoinAuth, NodeAuth, NodeReportAuth
from aiot.artifacts.repository import ArtifactRepository
from aiot.blobs.base import ARTIFACTS
from aiot.blobs.factory import open_blob_store
from aiot.deployer import loadhistory
from aiot.deployer import nodes as node_rules
from aiot.deployer.reports import PendingReport, report_writer
from aiot.deployer.workloads import assignment
from aiot.errors import NotFound, ServiceUnavailable
from aiot.secrets_store import platform_secret
from aiot.services.contract import ServiceContext
from aiot.store.runtime import Node

router = APIRouter(prefix="/agent", tags=["agent"])


class RegisterIn(BaseModel):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    address: str = Field("127.0.0.1", max_length=200)
    labels: dict[str, str] = Field(default_factory=dict)
    capacity: dict[str, Any]
    provider: str = Field("manual", max_length=40)
    registration_key: str | None = Field(
        None,
        min_length=32,
        max_length=100,
        description="A random key the agent sends on every retry of one registration: a retry whose answer was "
        "lost gets the node it registered back (with a new node token) instead of 'join token already used'.",
    )


class ReportIn(BaseModel):
    load: dict[str, Any] = Field(default_factory=dict)
    workloads: list[dict[str, Any]] = Field(default_factory=list)


def nats_servers(ctx: ServiceContext) -> list[str]:
    if ctx.embedded is not None:
        return [ctx.embedded.url]
    if ctx.settings.nats_url:
        return [u.strip() for u in ctx.settings.nats_url.split(",") if u.strip()]
    raise ServiceUnavailable("this control plane does not know the NATS address to give agents")


class NatsCredentials(OutModel):
    servers: list[str]
    user: str
    password: str


class RegisteredOut(OutModel):
    node_id: str
    node_token: str = Field(description="shown once; the agent keeps it in its identity file")
    nats: NatsCredentials


class AssignmentsOut(OutModel):
    node_id: str
    assignments: list[dict[str, Any]] = Field(description="what this node must run (`aiot.deployer.assignment`)")


class ReportAck(OutModel):
    status: str = Field(description="the node's status as the control plane sees it")


@router.post("/register", response_model=RegisteredOut)
def register(ctx: Ctx, body: RegisterIn, join_token_id: str = Depends(JoinAuth)) -> dict:
    """Join with a join token (each registration uses it up once); 409 when the name belongs to a node."""
    secret = platform_secret(ctx.settings)
    with ctx.db.session() as session:
        node, token = node_rules.register_node(
            session,
            secret,
            name=body.name,
            address=body.address,
            labels=body.labels,
            capacity=body.capacity,
            provider=body.provider,
            join_token_id=join_token_id,
            registration_key=body.registration_key,
        )
        node_id = node.id
    return {
        "node_id": node_id,
        "node_token": token,
        "nats": {
            "servers": nats_servers(ctx),
            "user": node_id,
            "password": node_rules.node_nats_password(secret, node_id),
        },
    }


@router.get("/assignments", response_model=AssignmentsOut)
def assignments(ctx: Ctx, node: Node = Depends(NodeAuth)) -> dict:
    secret = platform_secret(ctx.settings)
    servers = nats_servers(ctx)
    with ctx.db.session() as session:
        rows = node_rules.node_workloads(session, node)
        degraded_after = ctx.settings.degraded_after_failures
        return {"node_id": node.id, "assignments": [assignment(w, node, secret, servers, degraded_after) for w in rows]}


@router.get("/packages/{sha256}", response_class=FileResponse, responses=ZIP_ANSWER)
async def package(ctx: Ctx, sha256: str, node: Node = Depends(NodeAuth)) -> FileResponse:
    """The archive of a package this node is assigned (by content hash)."""
    with ctx.db.session() as session:
        allowed = node_rules.may_fetch_package(session, node, sha256)
    if not allowed:
        raise NotFound(f"no package {sha256[:12]}… assigned to this node", field="sha256")
    path = await ArtifactRepository(ctx.db, open_blob_store(ctx.settings, ctx.bus, ARTIFACTS)).download(sha256)
    return FileResponse(path, media_type="application/zip", background=BackgroundTask(path.unlink, missing_ok=True))


@router.post("/report", response_model=ReportAck)
async def report(ctx: Ctx, body: ReportIn, node_token: str = Depends(NodeReportAuth)) -> dict:
    """The node's load and its workloads' states (written together with other nodes' reports: group commit,
    which also checks the token); the load also goes into the load history (charts)."""
    recorded = await report_writer(ctx.db).submit(PendingReport(node_token, body.load, body.workloads))
    if recorded.reported_at is not None:
        await loadhistory.record(ctx.bus, recorded.node_id, recorded.reported_at, body.load, recorded.placed)
    return {"status": recorded.status}
