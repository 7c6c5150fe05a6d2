"""Watches running app instances: records their address once the workload runs, mails it to the end user,
and ends manual runs at their end time. Also the scheduler's `InstanceController` (start/stop by occurrence)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aiot.apps.instances import get_instance, start_instance, stop_instance
from aiot.apps.prewarm import ScaleBack, prewarm
from aiot.apps.upgrades import check_instance_rollouts
from aiot.deployer.rollouts import RolloutPolicy
from aiot.deployer.service import workloads_changed
from aiot.secrets_store import platform_secret
from aiot.services.contract import ServiceContext
from aiot.services.loop import LoopService
from aiot.store.apps import AppInstance, InstanceState
from aiot.store.catalog import AppPackage
from aiot.store.devices import Location
from aiot.store.models import User
from aiot.store.runtime import Workload, WorkloadStatus
from aiot.timeutil import utcnow

log = logging.getLogger(__name__)
INTERVAL = 1.0


def public_base(ctx: ServiceContext) -> str:
    if ctx.settings.public_url:
        return ctx.settings.public_url.rstrip("/")
    api = ctx.services.get("api")
    url = getattr(api, "url", "") if api is not None else ""
    return url or f"http://{ctx.settings.host}:{ctx.settings.port}"


def instance_address(ctx: ServiceContext, instance_id: str) -> str:
    return f"{public_base(ctx)}/apps/{instance_id}/"


def until_text(run_until: datetime | None, zone: str) -> str:
    """When the instance stops, in its location's local time first (what the end user plans by), UTC beside."""
    if run_until is None:
        return "It runs until you stop it."
    try:
        tz = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        tz, zone = ZoneInfo("UTC"), "UTC"
    local = run_until.astimezone(tz)
    utc = run_until.astimezone(UTC)
    return f"It runs until {local:%Y-%m-%d %H:%M} {zone} time ({local.tzname()}; {utc:%Y-%m-%d %H:%M} UTC)."


def _zone(session: Session, location_id: str | None) -> str:
    location = session.get(Location, location_id) if location_id else None
    return location.timezone if location is not None and location.timezone else "UTC"


class DeployerInstanceController:
    """Starts and stops app instances for the scheduler (and the API's "run now")."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    async def start(self, instance_id: str, occurrence_id: str | None, until: datetime | None) -> None:
        secret = platform_secret(self.ctx.settings)

        def run() -> None:
            with self.ctx.db.session() as session:
                start_instance(
                    session, secret, get_instance(session, instance_id), occurrence_id=occurrence_id, until=until
                )

        try:
            await asyncio.to_thread(run)
        except IntegrityError:
            # Another start deployed the same model for its instance between our check and our insert (the
            # multi-host test saw three instances of one app started at once fail this way): the deployment
            # exists now, so the same start, once more, uses it.
            await asyncio.to_thread(run)
        await workloads_changed(self.ctx)

    async def stop(self, instance_id: str, occurrence_id: str | None) -> None:
        def run() -> None:
            with self.ctx.db.session() as session:
                stop_instance(
                    session,
                    get_instance(session, instance_id),
                    occurrence_id=occurrence_id,
                    reason="occurrence ended" if occurrence_id else "stopped",
                )

        await asyncio.to_thread(run)
        await workloads_changed(self.ctx)


class AppsService(LoopService):
    name = "apps"
    interval = INTERVAL

    def __init__(self) -> None:
        super().__init__()
        self.mailed = 0
        self._scale_back = ScaleBack()

    async def run_pass(self) -> None:
        await self.check()

    async def check(self) -> None:
        ctx = self.ctx
        expired = await asyncio.to_thread(self._check_sync, ctx)
        for instance_id in expired:
            await DeployerInstanceController(ctx).stop(instance_id, None)
        rolled = await asyncio.to_thread(self._check_rollouts, ctx)
        if await asyncio.to_thread(self._prewarm, ctx) or rolled:
            await workloads_changed(ctx)

    def _prewarm(self, ctx: ServiceContext) -> bool:
        """Models ready before scheduled runs, and removed once no run needs them; True when any changed."""
        lead = timedelta(seconds=ctx.settings.prewarm_seconds)
        with ctx.db.session() as session:
            started = prewarm(session, platform_secret(ctx.settings), lead)
            removed = self._scale_back.run(session, lead)
        return bool(started or removed)

    def _check_rollouts(self, ctx: ServiceContext) -> list[str]:
        """Judge rolling upgrades (succeed after the soak, or roll back); the instances whose workloads changed."""
        with ctx.db.session() as session:
            return check_instance_rollouts(
                session, platform_secret(ctx.settings), RolloutPolicy.from_settings(ctx.settings)
            )

    def _check_sync(self, ctx: ServiceContext) -> list[str]:
        expired = []
        now = utcnow()
        with ctx.db.session() as session:
            for instance in session.scalars(select(AppInstance).where(AppInstance.state == InstanceState.running)):
                if (
                    instance.run_until is not None
                    and instance.run_until <= now
                    and instance.current_occurrence_id is None
                ):
                    expired.append(instance.id)
                    continue
                workload = session.get(Workload, instance.workload_id) if instance.workload_id else None
                status = session.get(WorkloadStatus, workload.id) if workload else None
                if (
                    workload is None
                    or status is None
                    or status.state not in ("running", "degraded")
                    or status.generation != workload.generation
                ):
                    continue
                address = instance_address(ctx, instance.id)
                instance.address = address
                if instance.notified_address == address:
                    continue
                owner = session.get(User, instance.owner_id)
                app = session.get(AppPackage, instance.app_id)
                if owner is not None and owner.email and app is not None:
                    from aiot.notify.outbox import enqueue

                    enqueue(
                        session,
                        owner.email,
                        f"Your app {app.name} is running",
                        f"Hello {owner.username},\n\nyour app instance {instance.name} ({instance.id}) is "
                        f"running.\n\nOpen it at: {address}\n\n"
                        f"{until_text(instance.run_until, _zone(session, instance.location_id))}\n\n"
                        "-- the AIoT platform\n",
                        kind="app_running",
                        user_id=owner.id,
                        dedupe_key=f"app_running:{instance.id}:{workload.id}:{workload.generation}",
                    )
                    self.mailed += 1
                instance.notified_address = address
        return expired

    def health_detail(self) -> str:
        return f"{self.mailed} address mails queued"
