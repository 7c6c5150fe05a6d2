"""The service contract (`contract`: `PlatformService`, `ServiceContext`) and the loop base (`loop.LoopService`)."""

from aiot.services.contract import HealthState, PlatformService, ServiceContext, ServiceHealth

__all__ = ["HealthState", "PlatformService", "ServiceContext", "ServiceHealth"]
