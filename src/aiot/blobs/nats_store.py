"""`NatsBlobStore`: a blob container as a NATS JetStream object store bucket (the platform's default).

Metadata is kept as JSON in the object's description, the one free-text field the object store has; objects
written before this module existed (log archives with their metadata there already) read back unchanged.
"""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, BinaryIO

from nats.js import api as js_api
from nats.js.errors import NotFoundError, ObjectNotFoundError

from aiot.blobs.base import BlobInfo, BlobNotFound

if TYPE_CHECKING:
    from nats.js.object_store import ObjectStore

    from aiot.bus.client import Bus

BUCKETS = {"artifacts": "aiot_artifacts", "log-archives": "aiot_logs"}
"""Container -> object store bucket; the names the platform has always used, so existing data stays."""


def _metadata(obj: js_api.ObjectInfo) -> dict[str, str]:
    try:
        found = json.loads(obj.description or "{}")
    except json.JSONDecodeError:
        return {}
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def _info(obj: js_api.ObjectInfo) -> BlobInfo:
    return BlobInfo(name=obj.name, size=obj.size or 0, metadata=_metadata(obj))


class NatsBlobStore:
    backend = "nats"

    def __init__(self, bus: Bus, container: str) -> None:
        self.bus = bus
        self.container = container
        self.bucket = BUCKETS[container]
        self._store: ObjectStore | None = None

    async def _objects(self) -> ObjectStore:
        if self._store is None:
            self._store = await self.bus.object_store(self.bucket)
        return self._store

    async def put(self, name: str, source: BinaryIO, metadata: dict[str, str] | None = None) -> BlobInfo:
        store = await self._objects()
        description = json.dumps(metadata, sort_keys=True) if metadata else None
        obj = await store.put(name, source, meta=js_api.ObjectMeta(name=name, description=description))
        return _info(obj)

    async def get_into(self, name: str, sink: BinaryIO) -> None:
        store = await self._objects()
        try:
            await store.get(name, writeinto=sink)
        except (ObjectNotFoundError, NotFoundError):
            raise BlobNotFound(f"{self.container}/{name}") from None

    async def info(self, name: str) -> BlobInfo | None:
        store = await self._objects()
        try:
            obj = await store.get_info(name)
        except (ObjectNotFoundError, NotFoundError):
            return None
        return None if obj.deleted else _info(obj)

    async def list(self) -> list[BlobInfo]:
        store = await self._objects()
        try:
            objects = await store.list(ignore_deletes=True)
        except NotFoundError:  # nats-py: an empty bucket
            return []
        return [_info(obj) for obj in objects if not obj.deleted]

    async def delete(self, name: str) -> None:
        store = await self._objects()
        with contextlib.suppress(ObjectNotFoundError, NotFoundError):
            await store.delete(name)
