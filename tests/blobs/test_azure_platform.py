"""The platform on Azure Blob storage (Azurite): packages uploaded, downloaded and deployed from it.

A real node agent fetches the comfort model's archive through the control plane, which reads it from Azurite;
the replica answering a prediction proves the whole path. The archive is in the Azure container under its
SHA-256, and nothing of it is in the NATS object store.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pytest

from aiot.blobs.base import ARTIFACTS
from aiot.blobs.factory import open_blob_store
from aiot.launch.http_app import create_app
from aiot.store.models import Role
from tests.agent.test_agent_loop import serve_http
from tests.deployer.helpers import EXAMPLES, deploy_comfort, first_prediction, joined_agent
from tests.support.azurite import Azurite
from tests.support.live import live_platform

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


async def test_upload_download_and_deploy_from_azure_blob_storage(tmp_path: Path, azurite: Azurite) -> None:
    async with (
        live_platform(
            tmp_path,
            services=("nats-auth", "deployer"),
            artifact_store="azure",
            azure_storage_connection_string=azurite.connection_string,
            azure_container_prefix=f"t{uuid.uuid4().hex[:10]}",
        ) as live,
        serve_http(create_app(live.ctx)) as api_port,
    ):
        client, dev = live.client, live.headers(Role.ai_developer)
        model_id = await deploy_comfort(live, tmp_path, 1)
        uploaded = (tmp_path / "comfort.zip").read_bytes()
        sha = hashlib.sha256(uploaded).hexdigest()

        azure = open_blob_store(live.ctx.settings, None, ARTIFACTS)
        assert [(b.name, b.size, b.metadata) for b in await azure.list()] == [(sha, len(uploaded), {"sha256": sha})]
        assert await open_blob_store(live.ctx.settings, live.ctx.bus, ARTIFACTS, backend="nats").list() == []
        download = await client.get(f"/api/v1/models/{model_id}/download", headers=dev)
        assert download.status_code == 200 and download.content == uploaded

        agent = await joined_agent(live, tmp_path, api_port, "azure-node")
        try:
            url, hot = "/models/aideveloper1/comfort/v1/predict", {"inputs": {"temperature": 31.5, "light": 120}}
            answer = await first_prediction(client, url, hot, dev)
            assert answer.json()["outputs"] == {"fan": "on", "ac": "on", "lamp": "on"}
        finally:
            await agent.stop()

        # a damaged archive in storage is refused, not served to a node or a user
        await azure.put(sha, (EXAMPLES / "models/comfort/model.json").open("rb"))
        damaged = await client.get(f"/api/v1/models/{model_id}/download", headers=dev)
        assert damaged.status_code == 503 and "damaged" in damaged.json()["error"]["message"], damaged.text
