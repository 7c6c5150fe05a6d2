"""`AzureBlobStore`: a blob container in Azure Blob storage (`AIOT_ARTIFACT_STORE=azure`), as the original
platform kept its packages and logs.

Each operation opens its own client from the connection string and closes it: operations are rare (an upload,
a node fetching a package, one archive a day), and no client outlives the event loop that made it. Uploads go
through `upload_blob`, which stages blocks and commits the block list last (or puts a small blob in one
request), so an upload killed half-way leaves no blob under the name. Metadata keys must be identifiers
(Azure's rule); the platform's keys are.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, BinaryIO

from aiot.blobs.base import BlobInfo, BlobNotFound

if TYPE_CHECKING:
    from azure.storage.blob.aio import ContainerClient


_CREATED: set[tuple[str, str]] = set()
"""(connection string hash, container) this process has made sure exist: stores are made per request, and the
container's creation is one round trip better not repeated on each."""


def container_name(prefix: str, container: str) -> str:
    """Azure container names: 3-63 lowercase letters, digits and hyphens."""
    return f"{prefix}-{container}".lower()


class AzureBlobStore:
    backend = "azure"

    def __init__(self, connection_string: str, prefix: str, container: str) -> None:
        self._connection_string = connection_string
        self.container = container
        self.name = container_name(prefix, container)
        self._account = hashlib.sha256(connection_string.encode()).hexdigest()

    @asynccontextmanager
    async def _client(self) -> AsyncIterator[ContainerClient]:
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.blob.aio import ContainerClient

        async with ContainerClient.from_connection_string(self._connection_string, self.name) as client:
            if (self._account, self.name) not in _CREATED:
                with suppress(ResourceExistsError):
                    await client.create_container()
                _CREATED.add((self._account, self.name))
            yield client

    async def put(self, name: str, source: BinaryIO, metadata: dict[str, str] | None = None) -> BlobInfo:
        async with self._client() as client:
            await client.upload_blob(name, source, overwrite=True, metadata=metadata or {})
            props = await client.get_blob_client(name).get_blob_properties()
        return BlobInfo(name=name, size=props.size, metadata=dict(props.metadata or {}))

    async def get_into(self, name: str, sink: BinaryIO) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        async with self._client() as client:
            try:
                downloader = await client.download_blob(name)
            except ResourceNotFoundError:
                raise BlobNotFound(f"{self.name}/{name}") from None
            async for chunk in downloader.chunks():
                sink.write(chunk)

    async def info(self, name: str) -> BlobInfo | None:
        from azure.core.exceptions import ResourceNotFoundError

        async with self._client() as client:
            try:
                props = await client.get_blob_client(name).get_blob_properties()
            except ResourceNotFoundError:
                return None
        return BlobInfo(name=name, size=props.size, metadata=dict(props.metadata or {}))

    async def list(self) -> list[BlobInfo]:
        async with self._client() as client:
            return [
                BlobInfo(name=blob.name, size=blob.size, metadata=dict(blob.metadata or {}))
                async for blob in client.list_blobs(include=["metadata"])
            ]

    async def delete(self, name: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        async with self._client() as client:
            with suppress(ResourceNotFoundError):
                await client.delete_blob(name)
