"""`aiot store migrate`: every archive copied and its SHA-256 proven; damaged sources refused; re-runs cheap."""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
from pathlib import Path

import httpx
import pytest

from aiot.blobs.base import ARTIFACTS, LOG_ARCHIVES
from aiot.blobs.factory import open_blob_store
from aiot.blobs.migrate import MigrationError, migrate_container
from aiot.bus.client import Bus
from aiot.bus.embedded import EmbeddedNats
from tests.blobs.conftest import azure_settings
from tests.conftest import free_port
from tests.deployer.helpers import EXAMPLES
from tests.support.azurite import Azurite
from tests.support.processes import platform_env, run_cli, start_platform


async def test_migrate_copies_and_verifies_every_object(
    nats_bus: tuple[EmbeddedNats, Bus], azurite: Azurite, tmp_path: Path
) -> None:
    _, bus = nats_bus
    settings = azure_settings(azurite, tmp_path)
    packages = [os.urandom(200_000 + i) for i in range(3)]
    source = open_blob_store(settings, bus, ARTIFACTS, backend="nats")
    target = open_blob_store(settings, None, ARTIFACTS, backend="azure")
    for data in packages:
        await source.put(hashlib.sha256(data).hexdigest(), io.BytesIO(data))
    day = b"gzipped log lines"
    logs_source = open_blob_store(settings, bus, LOG_ARCHIVES, backend="nats")
    meta = {"records": "3", "complete": "true", "sha256": hashlib.sha256(day).hexdigest()}
    await logs_source.put("2026-12-01.jsonl.gz", io.BytesIO(day), metadata=meta)

    # an earlier run was interrupted after the first package
    first = hashlib.sha256(packages[0]).hexdigest()
    await target.put(first, io.BytesIO(packages[0]), metadata={"sha256": first})
    report = await migrate_container(ARTIFACTS, source, target)
    assert (len(report.copied), report.present) == (2, [first])
    assert sorted(b.name for b in await target.list()) == sorted(hashlib.sha256(p).hexdigest() for p in packages)
    for data in packages:
        sink = io.BytesIO()
        await target.get_into(hashlib.sha256(data).hexdigest(), sink)
        assert sink.getvalue() == data

    logs_target = open_blob_store(settings, None, LOG_ARCHIVES, backend="azure")
    assert (await migrate_container(LOG_ARCHIVES, logs_source, logs_target)).copied == ["2026-12-01.jsonl.gz"]
    copied = await logs_target.info("2026-12-01.jsonl.gz")
    assert copied is not None and copied.metadata == meta

    # again: nothing to copy
    assert (await migrate_container(ARTIFACTS, source, target)).copied == []


async def test_a_damaged_source_object_is_refused_and_not_copied(
    nats_bus: tuple[EmbeddedNats, Bus], azurite: Azurite, tmp_path: Path
) -> None:
    _, bus = nats_bus
    settings = azure_settings(azurite, tmp_path)
    source = open_blob_store(settings, bus, ARTIFACTS, backend="nats")
    target = open_blob_store(settings, None, ARTIFACTS, backend="azure")
    claimed = hashlib.sha256(b"the real package").hexdigest()
    await source.put(claimed, io.BytesIO(b"bit rot"))
    with pytest.raises(MigrationError, match=f"{claimed} in the nats store is damaged"):
        await migrate_container(ARTIFACTS, source, target)
    assert await target.list() == []


@pytest.mark.slow
def test_the_cli_migrates_a_running_platform_which_then_serves_from_azure(tmp_path: Path, azurite: Azurite) -> None:
    data_dir, port = tmp_path / "data", free_port()
    azure = {
        "AIOT_AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string,
        "AIOT_AZURE_CONTAINER_PREFIX": f"t{uuid.uuid4().hex[:10]}",
    }
    archive = (EXAMPLES / "models/comfort").resolve()
    from aiot.artifacts.packing import zip_folder

    uploaded = zip_folder(archive, tmp_path / "comfort.zip").read_bytes()

    def login(url: str) -> dict[str, str]:
        answer = httpx.post(f"{url}/api/v1/auth/login", json={"username": "admin", "password": "admin-password-1"})
        return {"Authorization": f"Bearer {answer.json()['token']}"}

    with start_platform(data_dir, port) as plane:
        plane.wait_healthy(60)
        headers = login(plane.url)
        model = httpx.post(f"{plane.url}/api/v1/models", content=uploaded, headers=headers, timeout=60)
        assert model.status_code == 201, model.text
        env = platform_env(data_dir, port, **azure)

        refused = run_cli(["store", "migrate", "--to", "nats"], env)
        assert refused.returncode == 2 and "already uses the nats store" in refused.stderr

        ran = run_cli(["store", "migrate", "--to", "azure", "-o", "json"], env)
        assert ran.returncode == 0, ran.stderr
        assert {r["container"]: (r["copied"], r["already_present"]) for r in json.loads(ran.stdout)} == {
            "artifacts": (1, 0),
            "log-archives": (0, 0),
        }
        again = run_cli(["store", "migrate", "--to", "azure", "-o", "json"], env)
        assert json.loads(again.stdout)[0]["already_present"] == 1, again.stdout + again.stderr
        status = json.loads(run_cli(["store", "status", "-o", "json"], env).stdout)
        counts = {(r["backend"], r["container"]): r["objects"] for r in status}
        assert counts[("nats", "artifacts")] == counts[("azure", "artifacts")] == 1
        assert azurite.connection_string not in ran.stdout + ran.stderr  # the secret is never printed

    with start_platform(data_dir, port, AIOT_ARTIFACT_STORE="azure", **azure) as plane:
        plane.wait_healthy(60)
        download = httpx.get(
            f"{plane.url}/api/v1/models/{model.json()['id']}/download", headers=login(plane.url), timeout=60
        )
        assert download.status_code == 200 and download.content == uploaded
