"""Live registry of model endpoints and the latest-value lookups workloads make (see service.py)."""

from aiot.registry.service import ENDPOINT_TTL, ENDPOINTS_BUCKET, RegistryService

__all__ = ["ENDPOINTS_BUCKET", "ENDPOINT_TTL", "RegistryService"]
