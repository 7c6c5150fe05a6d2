"""The service contract: the one interface every platform service implements and what each is handed.

Sharing it is what lets `aiot up` run them all in one process while `aiot service run NAME` runs any one alone
against the same database and NATS, so each can be replicated or moved (the seed's infra services could not).
It sits below every component and imports only settings, the store and (for types) the bus, so any package may
implement it without an import cycle; the catalogue that imports every service lives above, in `aiot.launch`.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from aiot.settings import Settings
from aiot.store.engine import Database

if TYPE_CHECKING:
    from aiot.bus.client import Bus
    from aiot.bus.embedded import EmbeddedNats


class HealthState(enum.StrEnum):
    starting = "starting"
    ok = "ok"
    degraded = "degraded"
    stopped = "stopped"


@dataclass
class ServiceHealth:
    state: HealthState
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state.value, "detail": self.detail, **self.extra}


class NodeProvider(Protocol):
    """Starts and stops nodes for the autoscaler (`aiot up --nodes`: local agent processes). Part of the contract
    because the process that owns the nodes hands one to its services through the context."""

    name: str

    def add_node(self) -> str:
        """Start a new node; returns its name (it appears in the API once its agent registers)."""
        ...

    def remove_node(self, node_name: str) -> None:
        """Stop a node this provider started (call after it was drained)."""
        ...

    def managed(self) -> list[str]:
        """Names of the nodes this provider started and that still run."""
        ...


@dataclass
class ServiceContext:
    """What every service is handed: settings, the database and the bus connection of its process."""

    settings: Settings
    db: Database
    bus: Bus | None = None
    embedded: EmbeddedNats | None = None  # set in the process that runs the embedded nats-server
    services: dict[str, PlatformService] = field(default_factory=dict)
    node_provider: NodeProvider | None = None  # set when this process may start/stop nodes (aiot up --nodes)
    instance_id: str = ""


class PlatformService(ABC):
    """A long-running part of the platform. `start` returns once the service is serving (its work goes on in
    tasks it owns); `stop` ends those tasks and is safe to call twice."""

    name: str = "service"

    @abstractmethod
    async def start(self, ctx: ServiceContext) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    @abstractmethod
    def health(self) -> ServiceHealth: ...
