"""`open_blob_store(settings, bus, container)`: the configured backend for one container.

`AIOT_ARTIFACT_STORE` picks it: `nats` (default, the bus's object store) or `azure` (needs
`AIOT_AZURE_STORAGE_CONNECTION_STRING`). Stores are cheap to make; callers make one where they need it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiot.blobs.base import CONTAINERS, BlobStore
from aiot.errors import ServiceUnavailable

if TYPE_CHECKING:
    from aiot.bus.client import Bus
    from aiot.settings import Settings


class BlobStoreUnavailable(ServiceUnavailable):
    """The configured backend cannot be used (no bus for `nats`, no connection string for `azure`)."""


def open_blob_store(settings: Settings, bus: Bus | None, container: str, backend: str | None = None) -> BlobStore:
    """The store of `container` on `backend` (default: the configured `artifact_store`)."""
    if container not in CONTAINERS:
        raise ValueError(f"unknown blob container {container!r}; expected one of {', '.join(CONTAINERS)}")
    backend = backend or settings.artifact_store
    if backend == "azure":
        secret = settings.azure_storage_connection_string
        if secret is None or not secret.get_secret_value():
            raise BlobStoreUnavailable(
                "AIOT_ARTIFACT_STORE=azure needs AIOT_AZURE_STORAGE_CONNECTION_STRING (the storage account's "
                "connection string)"
            )
        try:
            import aiohttp  # noqa: F401 - the async Azure client's transport
            import azure.storage.blob.aio  # noqa: F401
        except ImportError:
            raise BlobStoreUnavailable(
                "AIOT_ARTIFACT_STORE=azure needs the Azure client: pip install 'aiot[azure]'"
            ) from None
        from aiot.blobs.azure_store import AzureBlobStore

        return AzureBlobStore(secret.get_secret_value(), settings.azure_container_prefix, container)
    if backend == "nats":
        if bus is None:
            raise BlobStoreUnavailable("the message bus is not connected; the NATS object store cannot be reached")
        from aiot.blobs.nats_store import NatsBlobStore

        return NatsBlobStore(bus, container)
    raise BlobStoreUnavailable(f"unknown artifact store {backend!r}; expected nats or azure")
