"""Name -> factory of every platform service, for `aiot up` (all) and `aiot service run NAME` (one).

Later capabilities register their service here with one line; the order is the start order.
"""

from __future__ import annotations

from collections.abc import Callable

import aiot.deployer.nats_users  # noqa: F401 - registers node and workload users with the NATS auth service
import aiot.devices.nats_users  # noqa: F401 - registers device users with the NATS auth service
from aiot.apps.service import AppsService
from aiot.deployer.autoscale import AutoscaleService
from aiot.deployer.service import DeployerService
from aiot.devices.ingest_service import IngestService
from aiot.launch.api_service import ApiService
from aiot.logs.collector import LogCollectorService
from aiot.logs.relay import LogRelayService
from aiot.natsauth.service import NatsAuthService
from aiot.notify.service import NotifyService
from aiot.registry import RegistryService
from aiot.scheduler.service import SchedulerService
from aiot.services.contract import PlatformService

SERVICE_FACTORIES: dict[str, Callable[[], PlatformService]] = {
    "nats-auth": NatsAuthService,
    "ingest": IngestService,
    "registry": RegistryService,
    "deployer": DeployerService,
    "apps": AppsService,
    "scheduler": SchedulerService,
    "notify": NotifyService,
    "log-collector": LogCollectorService,
    "log-relay": LogRelayService,
    "api": ApiService,
    "autoscaler": AutoscaleService,
}


def unknown_services(names: list[str]) -> list[str]:
    """The names that are not platform services (the CLI refuses them before starting anything)."""
    return [n for n in names if n not in SERVICE_FACTORIES]


def build_services(names: list[str] | None = None, without: tuple[str, ...] = ()) -> list[PlatformService]:
    """Instances of the named services (all when `names` is None) less `without`; unknown names are a clear
    error."""
    unknown = unknown_services([*(names or []), *without])
    if unknown:
        raise KeyError(f"unknown service(s): {', '.join(unknown)}; known: {', '.join(SERVICE_FACTORIES)}")
    chosen = [n for n in (list(SERVICE_FACTORIES) if names is None else names) if n not in without]
    return [SERVICE_FACTORIES[name]() for name in chosen]
