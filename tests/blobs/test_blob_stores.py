"""The blob-store contract on both backends, and what a killed upload leaves behind (nothing served)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from aiot.blobs.base import ARTIFACTS, BlobNotFound
from aiot.blobs.factory import BlobStoreUnavailable, open_blob_store
from aiot.settings import Settings
from tests.blobs.conftest import Backend


async def test_put_info_get_list_replace_delete(backend: Backend) -> None:
    store = backend.store
    data = os.urandom(300_000)  # several NATS chunks
    info = await store.put("one", io.BytesIO(data), metadata={"sha256": "ab" * 32, "records": "7"})
    assert (info.name, info.size, info.metadata) == ("one", len(data), {"sha256": "ab" * 32, "records": "7"})
    assert await store.info("one") == info
    sink = io.BytesIO()
    await store.get_into("one", sink)
    assert sink.getvalue() == data

    await store.put("two", io.BytesIO(b"small"))
    assert sorted((b.name, b.size) for b in await store.list()) == [("one", len(data)), ("two", 5)]

    await store.put("one", io.BytesIO(b"replaced"), metadata={"records": "8"})  # one object, the new bytes
    again = io.BytesIO()
    await store.get_into("one", again)
    assert again.getvalue() == b"replaced"
    assert [b.metadata for b in await store.list() if b.name == "one"] == [{"records": "8"}]

    await store.delete("one")
    await store.delete("one")  # already gone: no error
    assert await store.info("one") is None
    with pytest.raises(BlobNotFound):
        await store.get_into("one", io.BytesIO())
    assert [b.name for b in await store.list()] == ["two"]


def test_misconfigured_stores_are_refused_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="AIOT_AZURE_STORAGE_CONNECTION_STRING"):
        Settings(data_dir=tmp_path, artifact_store="azure")
    with pytest.raises(BlobStoreUnavailable, match="bus is not connected"):
        open_blob_store(Settings(data_dir=tmp_path), None, ARTIFACTS)
    with pytest.raises(ValueError, match="unknown blob container"):
        open_blob_store(Settings(data_dir=tmp_path), None, "nope")


UPLOADER = textwrap.dedent(
    """
    import asyncio, io, json, os, sys, time
    from aiot.blobs.base import ARTIFACTS
    from aiot.blobs.factory import open_blob_store
    from aiot.bus.client import Bus
    from aiot.settings import Settings

    class Slow(io.RawIOBase):
        '''40 MiB that arrive slowly, of unknown length: both clients send it in parts.'''
        def __init__(self):
            self.sent = 0
        def readable(self):
            return True
        def readinto(self, buffer):
            if self.sent >= 40 << 20:
                return 0
            size = min(len(buffer), 1 << 20)
            time.sleep(0.05)
            buffer[:size] = os.urandom(size)
            self.sent += size
            print(self.sent, flush=True)
            return size

    async def main():
        cfg = json.loads(os.environ["UPLOAD_CONFIG"])
        bus = None
        if "url" in cfg:
            bus = await Bus.connect(cfg["url"], user=cfg["user"], password=cfg["password"], name="uploader")
        store = open_blob_store(Settings(data_dir=os.environ["DATA_DIR"], **cfg["settings"]), bus, ARTIFACTS)
        await store.put("partial", Slow())

    asyncio.run(main())
    """
)


async def test_a_killed_upload_leaves_no_object(backend: Backend, tmp_path: Path) -> None:
    store = backend.store
    await store.put("whole", io.BytesIO(b"kept"))  # the container exists and holds something else
    proc = subprocess.Popen(
        [sys.executable, "-c", UPLOADER],
        env={**os.environ, "UPLOAD_CONFIG": json.dumps(backend.reach), "DATA_DIR": str(tmp_path)},  # not argv
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        sent = 0
        deadline = time.monotonic() + 60
        while sent < 12 << 20:  # several parts are on their way
            line = proc.stdout.readline()  # type: ignore[union-attr]
            assert line, f"the uploader ended early: {proc.stderr.read()}"  # type: ignore[union-attr]
            sent = int(line)
            assert time.monotonic() < deadline
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert await backend.received("partial") >= 4 << 20  # parts of it had reached the server when it was killed
    assert await store.info("partial") is None
    assert [b.name for b in await store.list()] == ["whole"]
    with pytest.raises(BlobNotFound):
        await store.get_into("partial", io.BytesIO())
