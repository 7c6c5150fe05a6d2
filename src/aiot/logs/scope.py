"""Whose logs a person may read (rules only, no HTTP).

Admins read everything, platform services included. Anyone else reads only workload output: their own
workloads, the workloads of their app instances, and those of the instances of apps whose name they own (an app's
developer debugs it where it runs). Asking for something outside that is a 403 naming the field, not an empty
answer, so a typo is not mistaken for silence.
"""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from aiot.accounts.caller import Caller
from aiot.artifacts.names import app_ids_owned_by
from aiot.errors import Forbidden, NotFound
from aiot.store.apps import AppInstance
from aiot.store.catalog import AppPackage
from aiot.store.runtime import Workload, WorkloadKind


def _allowed(session: Session, reader: Caller) -> set[str]:
    visible = or_(AppInstance.owner_id == reader.user_id, AppInstance.app_id.in_(app_ids_owned_by(reader.user_id)))
    mine = select(AppInstance.id).where(visible)
    allowed = set(
        session.scalars(
            select(Workload.id).where(or_(Workload.owner_id == reader.user_id, Workload.group_id.in_(mine)))
        )
    )
    allowed |= {w for w in session.scalars(select(AppInstance.workload_id).where(visible)) if w}
    return allowed


def readable_workloads(
    session: Session,
    reader: Caller,
    workload_id: str | None = None,
    app_instance_id: str | None = None,
    service: str | None = None,
) -> tuple[str, ...] | None:
    """The workload ids `reader` may read, narrowed to what they asked for; None: no restriction (admins)."""
    if not reader.is_admin and service and service != "workload":
        raise Forbidden(
            "platform service logs are for admins; filter by your workloads or app instances", field="service"
        )
    allowed = None if reader.is_admin else _allowed(session, reader)
    chosen: set[str] | None = allowed
    if app_instance_id:
        instance = session.get(AppInstance, app_instance_id)
        if instance is None:
            raise NotFound(f"no app instance {app_instance_id}", field="app_instance_id")
        if (
            not reader.is_admin
            and instance.owner_id != reader.user_id
            and not session.scalar(app_ids_owned_by(reader.user_id).where(AppPackage.id == instance.app_id))
        ):
            raise Forbidden(
                f"app instance {app_instance_id} is neither yours nor of an app you own", field="app_instance_id"
            )
        ids = set(session.scalars(select(Workload.id).where(Workload.group_id == app_instance_id)))
        ids |= {instance.workload_id} if instance.workload_id else set()
        chosen = ids if chosen is None else chosen & ids
    if workload_id:
        if allowed is not None and workload_id not in allowed:
            raise Forbidden(f"workload {workload_id} is not yours", field="workload_id")
        chosen = {workload_id} if chosen is None else chosen & {workload_id}
    return None if chosen is None else tuple(sorted(chosen))


def instances_of(session: Session, workload_ids: set[str]) -> dict[str, str]:
    """workload id -> app instance id of the app workloads among them."""
    rows = session.execute(
        select(Workload.id, Workload.group_id).where(Workload.id.in_(workload_ids), Workload.kind == WorkloadKind.app)
    )
    return {wid: group for wid, group in rows if group}
