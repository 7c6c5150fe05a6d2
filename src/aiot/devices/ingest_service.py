"""Ingest as a platform service: device types come from the registry in the database."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from aiot.artifacts.manifests import DeviceTypeDefinition
from aiot.bus.client import Bus, connect_from_settings, other_servers_first
from aiot.devices.ingest import Ingest, IngestConfig
from aiot.services.contract import HealthState, PlatformService, ServiceContext, ServiceHealth
from aiot.store.catalog import DeviceType
from aiot.store.devices import Device, DeviceState
from aiot.store.engine import Database


class DatabaseDeviceDirectory:
    """Answers ingest's "what type is this device?"; None for unknown or disabled devices."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def _lookup(self, device_id: str) -> DeviceTypeDefinition | None:
        with self.db.session() as session:
            row = session.execute(
                select(DeviceType.definition)
                .join(Device, Device.type_id == DeviceType.id)
                .where(Device.id == device_id, Device.state == DeviceState.enabled)
            ).first()
        return DeviceTypeDefinition.model_validate(row[0]) if row else None

    async def lookup(self, device_id: str) -> DeviceTypeDefinition | None:
        return await asyncio.to_thread(self._lookup, device_id)


class IngestService(PlatformService):
    """Validates every device message and keeps latest values, presence and history (see `ingest.Ingest`).
    Replicas share the work through a NATS queue group, so `aiot service run ingest` scales it out.

    On a NATS cluster each replica also subscribes over a second connection that prefers another server: device
    messages reach only the queue group's live members, so when every ingest subscription sat on one server
    (two replicas on the same server, or one replica) its loss meant readings acknowledged to devices meanwhile
    went to no one until the replicas had reconnected (the multi-host test lost one or two each time)."""

    name = "ingest"

    def __init__(self) -> None:
        self.ingest: Ingest | None = None
        self._second: Bus | None = None

    async def start(self, ctx: ServiceContext) -> None:
        assert ctx.bus is not None, "ingest needs the message bus"
        config = IngestConfig(
            history_max_bytes=ctx.settings.history_max_mb * 1024**2, replicas=ctx.settings.jetstream_replicas
        )
        servers = ctx.settings.nats_url or ""
        if servers.count(",") >= 1:
            connected = ctx.bus.nc.connected_url
            order = other_servers_first(servers, connected.geturl() if connected else None)
            self._second = await connect_from_settings(
                ctx.settings, name="aiot-ingest-second", servers=order, in_order=True
            )
        self.ingest = Ingest(
            ctx.bus.nc,
            DatabaseDeviceDirectory(ctx.db),
            config,
            also_subscribe=[self._second.nc] if self._second else [],
        )
        await self.ingest.start()

    async def stop(self) -> None:
        if self.ingest is not None:
            await self.ingest.stop()
            self.ingest = None
        if self._second is not None:
            await self._second.close()
            self._second = None

    def health(self) -> ServiceHealth:
        if self.ingest is None:
            return ServiceHealth(HealthState.stopped)
        rejected = sum(self.ingest.rejected.values())
        return ServiceHealth(
            HealthState.ok,
            f"{self.ingest.accepted} accepted, {rejected} rejected",
            {"accepted": self.ingest.accepted, "rejected": dict(self.ingest.rejected)},
        )
