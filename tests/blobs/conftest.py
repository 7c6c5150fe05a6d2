"""A blob store of each backend: the NATS object store (a real embedded nats-server) and Azure Blob (Azurite)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from aiot.blobs.base import ARTIFACTS, BlobStore
from aiot.blobs.factory import open_blob_store
from aiot.bus.client import Bus
from aiot.bus.embedded import EmbeddedNats
from aiot.settings import Settings
from tests.support.azurite import Azurite


@asynccontextmanager
async def running_nats(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedNats, Bus]]:
    nats = EmbeddedNats(tmp_path / "data")
    await nats.start()
    user, password = nats.platform_user, nats.platform_password
    bus = await Bus.connect(nats.url, user=user, password=password, name="blobs", attempts=3)
    try:
        yield nats, bus
    finally:
        await bus.close()
        await nats.stop()


@pytest.fixture
async def nats_bus(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedNats, Bus]]:
    async with running_nats(tmp_path) as running:
        yield running


def azure_settings(azurite: Azurite, tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        artifact_store="azure",
        azure_storage_connection_string=azurite.connection_string,
        azure_container_prefix=f"t{uuid.uuid4().hex[:10]}",  # one test's containers, apart from the others'
    )


@dataclass
class Backend:
    """A store of one backend, and how a separate process reaches the same container (JSON, for its env)."""

    store: BlobStore
    reach: dict[str, Any]
    received: Callable[[str], Awaitable[int]]
    """Bytes the server holds of an object not (yet) visible: proves an interrupted upload got under way."""


@pytest.fixture(params=["nats", "azure"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "azure":
        settings = azure_settings(request.getfixturevalue("azurite"), tmp_path)
        secret = settings.azure_storage_connection_string
        assert secret is not None
        reach = {
            "artifact_store": "azure",
            "azure_storage_connection_string": secret.get_secret_value(),
            "azure_container_prefix": settings.azure_container_prefix,
        }
        store = open_blob_store(settings, None, ARTIFACTS)

        async def staged(name: str) -> int:
            from azure.storage.blob.aio import BlobClient

            async with BlobClient.from_connection_string(
                reach["azure_storage_connection_string"], store.name, name
            ) as blob:  # type: ignore[attr-defined]  # noqa: E501
                _, uncommitted = await blob.get_block_list("uncommitted")
            return sum(block.size for block in uncommitted)

        yield Backend(store, {"settings": reach}, staged)
        return
    async with running_nats(tmp_path) as (nats, bus):
        reach = {"url": nats.url, "user": nats.platform_user, "password": nats.platform_password, "settings": {}}
        nats_store = open_blob_store(Settings(data_dir=tmp_path / "data"), bus, ARTIFACTS)

        async def chunks(_: str) -> int:
            return int((await bus.js.stream_info("OBJ_aiot_artifacts")).state.bytes)  # chunks without their info

        yield Backend(nats_store, reach, chunks)
