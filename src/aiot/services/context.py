"""What every service is handed: settings, the database and the bus connection of its process."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiot.settings import Settings
from aiot.store.engine import Database

if TYPE_CHECKING:
    from aiot.bus.client import Bus
    from aiot.bus.embedded import EmbeddedNats
    from aiot.deployer.providers import NodeProvider
    from aiot.services.base import PlatformService


@dataclass
class ServiceContext:
    settings: Settings
    db: Database
    bus: Bus | None = None
    embedded: EmbeddedNats | None = None  # set in the process that runs the embedded nats-server
    services: dict[str, PlatformService] = field(default_factory=dict)
    node_provider: NodeProvider | None = None  # set when this process may start/stop nodes (aiot up --nodes)
    instance_id: str = ""
