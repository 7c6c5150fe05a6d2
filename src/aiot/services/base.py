"""The one interface every platform service implements (API, scheduler, deployer, health monitor, ...).

Sharing it is what lets `aiot up` run them all in one process while `aiot service run NAME` runs any one alone
against the same database and NATS, so each can be replicated or moved (the seed's infra services could not).
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiot.services.context import ServiceContext


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
