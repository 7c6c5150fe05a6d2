"""The blob-store contract: named, immutable-once-written objects with small string metadata.

Package archives and daily log archives live in a blob store. The platform's default keeps them in the NATS
object store (nothing more to run); `AIOT_ARTIFACT_STORE=azure` keeps them in Azure Blob storage, as the
original platform did. Callers see only this protocol, so the two are interchangeable and `aiot store migrate`
can copy one into the other.

A write is all-or-nothing on both backends: a reader sees the whole object or none (NATS: the object's info
is written after its last chunk; Azure: a blob exists once its block list is committed), so a killed upload
never leaves a partial object that the platform would serve.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

ARTIFACTS = "artifacts"
"""Package archives (models and apps), named by their SHA-256."""

LOG_ARCHIVES = "log-archives"
"""Daily log archives, named `YYYY-MM-DD.jsonl.gz`."""

CONTAINERS = (ARTIFACTS, LOG_ARCHIVES)


class BlobNotFound(LookupError):
    """No object of that name in the container."""


@dataclass(frozen=True)
class BlobInfo:
    name: str
    size: int
    metadata: dict[str, str] = field(default_factory=dict)


class BlobStore(Protocol):
    """One container of objects. Names are plain strings without '/'; metadata values are short strings."""

    backend: str
    """"nats" or "azure": what `aiot store status` and errors name."""

    async def put(self, name: str, source: BinaryIO, metadata: dict[str, str] | None = None) -> BlobInfo:
        """Write `source` (read to its end) as `name`, replacing any object of that name at once."""
        ...

    async def get_into(self, name: str, sink: BinaryIO) -> None:
        """Stream the object into `sink` (never whole in memory); `BlobNotFound` when absent."""
        ...

    async def info(self, name: str) -> BlobInfo | None:
        """The object's size and metadata; None when absent."""
        ...

    async def list(self) -> list[BlobInfo]:
        """Every object, any order."""
        ...

    async def delete(self, name: str) -> None:
        """Remove the object; no error when it is already gone."""
        ...
