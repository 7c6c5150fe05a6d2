"""Workload specs: creating model replicas, bumping generations, and the assignment an agent receives."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from aiot.bus.auth import hash_password
from aiot.deployer.endpoint_tokens import gateway_token, model_token
from aiot.errors import Conflict, ValidationFailed
from aiot.secrets_store import derive_password
from aiot.store.catalog import ModelPackage, PackageStatus
from aiot.store.runtime import (
    DesiredState,
    ModelDeployment,
    Node,
    Workload,
    WorkloadEvent,
    WorkloadKind,
    WorkloadStatus,
)
from aiot.timeutil import utcnow

HEARTBEAT_INTERVAL = 1.0
COMMANDS = {
    WorkloadKind.model: ["python", "-m", "platform_sdk.serving"],
    WorkloadKind.app: ["python", "-m", "platform_sdk.app_runner"],
}


def workload_password(secret: bytes, workload_id: str, generation: int) -> str:
    return derive_password(secret, "workload-nats", workload_id, generation)


def new_workload(
    session: Session,
    secret: bytes,
    *,
    kind: WorkloadKind,
    package_id: str,
    sha256: str,
    owner_id: str | None,
    group_id: str,
    config: dict[str, Any],
    resources: dict[str, Any],
    selector: dict[str, str] | None = None,
) -> Workload:
    workload = Workload(
        kind=kind,
        package_id=package_id,
        package_sha256=sha256,
        owner_id=owner_id,
        group_id=group_id,
        config=config,
        resources=resources,
        selector=selector or {},
        nats_password_bcrypt="",
    )
    session.add(workload)
    session.flush()
    workload.nats_password_bcrypt = hash_password(workload_password(secret, workload.id, workload.generation))
    session.add(WorkloadStatus(workload_id=workload.id))
    return workload


def bump_generation(
    session: Session, secret: bytes, workload: Workload, *, reason: str, node_id: str | None, unassign: bool
) -> None:
    """New generation = new credentials; with `unassign` the workload waits to be placed again."""
    workload.generation += 1
    workload.nats_password_bcrypt = hash_password(workload_password(secret, workload.id, workload.generation))
    workload.updated_at = utcnow()
    if unassign:
        workload.node_id = None
    # What was observed belongs to the old generation (on a lost node it may still run, out of reach): until a
    # node reports the new one, the workload is pending, not "running" where nothing has started yet.
    status = session.get(WorkloadStatus, workload.id)
    if status is not None:
        status.state, status.reason, status.pid, status.endpoint = "pending", reason[:500], None, None
        status.updated_at = utcnow()
    session.add(
        WorkloadEvent(
            workload_id=workload.id,
            kind="moved" if unassign else "respec",
            node_id=node_id,
            detail={"reason": reason, "generation": workload.generation},
        )
    )


def deploy_model(
    session: Session,
    secret: bytes,
    model: ModelPackage,
    replicas: int,
    owner_id: str | None,
    *,
    allow_deprecated: bool = False,
    auto: bool = False,
) -> ModelDeployment:
    """Create (or resize) the deployment of one model version; each replica is a workload.

    `allow_deprecated`: for app instances pinned to a version that was deprecated since (deprecated versions
    still run for whoever already uses them; only new deployments are refused). `auto`: started for app
    instances, removed again when no run needs it; any other deploy of the version makes it a user's."""
    if not 1 <= replicas <= 32:
        raise ValidationFailed("replicas must be between 1 and 32", field="replicas")
    if model.status != PackageStatus.active and not allow_deprecated:
        raise Conflict(f"model {model.name} {model.version} is deprecated; deploy an active version", field="model")
    deployment = session.scalar(select(ModelDeployment).where(ModelDeployment.model_id == model.id))
    if deployment is None:
        deployment = ModelDeployment(model_id=model.id, replicas=replicas, owner_id=owner_id, auto=auto)
        session.add(deployment)
        session.flush()
    elif not auto:
        deployment.auto = False
    deployment.replicas = replicas
    current = list(
        session.scalars(
            select(Workload).where(Workload.group_id == deployment.id, Workload.desired == DesiredState.running)
        )
    )
    hints = model.manifest.get("resources") or {}
    resources = {"cpu": float(hints.get("cpu", 0.5)), "memory_mb": int(hints.get("memory_mb", 512))}
    for _ in range(replicas - len(current)):
        config = {
            "kind": "model",
            "package": {"id": model.id, "name": model.name, "version": model.version, "manifest": model.manifest},
            "heartbeat": {"interval": HEARTBEAT_INTERVAL},
            "serve": {"port": 0},
        }
        new_workload(
            session,
            secret,
            kind=WorkloadKind.model,
            package_id=model.id,
            sha256=model.sha256,
            owner_id=owner_id,
            group_id=deployment.id,
            config=config,
            resources=resources,
        )
    for extra in sorted(current, key=lambda w: w.created_at)[replicas:]:
        stop_workload(session, extra, reason="scaled down")
    return deployment


def stop_workload(session: Session, workload: Workload, reason: str) -> None:
    workload.desired = DesiredState.stopped
    workload.node_id = None
    workload.updated_at = utcnow()
    session.add(WorkloadEvent(workload_id=workload.id, kind="stopped", detail={"reason": reason}))


def port_token(workload: Workload, config: dict[str, Any], secret: bytes) -> str | None:
    """The token callers of this workload's port must present: its model's, or its web-app instance's."""
    if workload.kind == WorkloadKind.model:
        return model_token(secret, workload.package_id)
    instance_id = config.get("app_instance_id")
    return gateway_token(secret, str(instance_id)) if instance_id else None


def assignment(
    workload: Workload, node: Node, secret: bytes, nats_servers: list[str], degraded_after: int = 5
) -> dict[str, Any]:
    """What the agent on `node` needs to run `workload` (the contract in docs/workload-contract.md);
    `degraded_after`: the platform's degraded_after_failures setting, applied by the agent."""
    config = dict(workload.config)
    config.update(
        workload_id=workload.id,
        generation=workload.generation,
        node_id=node.id,
        nats={
            "servers": nats_servers,
            "user": workload.id,
            "password": workload_password(secret, workload.id, workload.generation),
        },
        log_subject=f"aiot.logs.{workload.id}",
    )
    heartbeat = dict(config.get("heartbeat") or {})
    heartbeat.setdefault("interval", HEARTBEAT_INTERVAL)
    heartbeat["subject"] = f"aiot.hb.{workload.id}"
    heartbeat["degraded_after"] = degraded_after
    config["heartbeat"] = heartbeat
    if "serve" in config:
        config["serve"] = {"host": node.address, "port": int((config.get("serve") or {}).get("port") or 0)}
        token = port_token(workload, config, secret)
        if token:
            config["serve"]["token"] = token
    if config.get("models"):
        bindings = {alias: b if isinstance(b, dict) else {"model_id": str(b)} for alias, b in config["models"].items()}
        config["models"] = {
            alias: {**b, "token": model_token(secret, str(b.get("model_id")))} for alias, b in bindings.items()
        }
    package = config.get("package") or {}
    return {
        "workload_id": workload.id,
        "generation": workload.generation,
        "kind": workload.kind.value,
        "package": {
            "id": workload.package_id,
            "name": package.get("name"),
            "version": package.get("version"),
            "sha256": workload.package_sha256,
        },
        "config": config,
        "resources": workload.resources,
        "command": COMMANDS[workload.kind],
    }
