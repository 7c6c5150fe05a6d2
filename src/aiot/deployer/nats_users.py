"""NATS users for nodes and workloads: each may use only the subjects its job needs (see the contract doc)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from aiot.bus.auth import NatsUser
from aiot.devices.subjects import cmd_subject, readings_subject, state_subject
from aiot.logs.records import node_log_permission
from aiot.logs.records import workload_subject as workload_log_subject
from aiot.natsauth.sources import register_user_source
from aiot.registry.service import announce_subject
from aiot.store.runtime import DesiredState, Node, NodeStatus, Workload, WorkloadKind


def workload_permissions(workload: Workload) -> tuple[list[str], list[str]]:
    wid = workload.id
    publish = [workload_log_subject(wid), f"aiot.hb.{wid}"]
    subscribe = [f"_INBOX_{wid}.>"]
    config = workload.config or {}
    if workload.kind == WorkloadKind.model:
        publish.append(announce_subject(workload.package_id, wid))
    for binding in (config.get("models") or {}).values():
        publish.append(f"aiot.registry.resolve.{binding['model_id']}")
    for devices in (config.get("sensors") or {}).values():
        for device in devices:
            subscribe.append(readings_subject(device["device_id"]))
            publish.append(f"aiot.registry.latest.{device['device_id']}")
    for devices in (config.get("controllers") or {}).values():
        for device in devices:
            publish.append(cmd_subject(device["device_id"]))
            subscribe.append(state_subject(device["device_id"]))
    return sorted(set(publish)), sorted(set(subscribe))


@register_user_source
def workload_users(session: Session) -> list[NatsUser]:
    users = []
    for workload in session.scalars(
        select(Workload).where(Workload.desired == DesiredState.running, Workload.node_id.is_not(None))
    ):
        publish, subscribe = workload_permissions(workload)
        users.append(
            NatsUser(
                username=workload.id,
                password_hash=workload.nats_password_bcrypt,
                publish=publish,
                subscribe=subscribe,
                connection_types=["STANDARD"],
            )
        )
    return users


@register_user_source
def node_users(session: Session) -> list[NatsUser]:
    """A node publishes its workloads' output on its own log subjects only (fixed: placing a workload changes no
    node's permissions); the log relay checks each line's workload runs there (`aiot.logs.relay`)."""
    return [
        NatsUser(
            username=node.id,
            password_hash=node.nats_password_bcrypt,
            publish=[node_log_permission(node.id)],
            subscribe=[f"aiot.node.{node.id}.>"],
            connection_types=["STANDARD"],
        )
        for node in session.scalars(select(Node).where(Node.status != NodeStatus.removed))
    ]
