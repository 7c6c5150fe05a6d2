"""Platform services: the shared interface, the catalogue of services, and the process supervisor."""

from aiot.services.base import HealthState, PlatformService, ServiceHealth
from aiot.services.context import ServiceContext

__all__ = ["HealthState", "PlatformService", "ServiceContext", "ServiceHealth"]
