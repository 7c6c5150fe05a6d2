"""A client generated from the running platform's /openapi.json (openapi-python-client, as an integrator would)
uploads a package, deploys it and reads a device's history.

Before, the upload routes declared no request body (they stream it themselves), so a generated client had no way
to send a package; and two gateway routes had a path parameter typed `str | None`, which generators refuse.
"""

from __future__ import annotations

import asyncio
import importlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nats
import pytest

from aiot.artifacts.packing import zip_folder
from aiot.launch.http_app import create_app
from aiot.store.models import Role
from tests.deployer.helpers import EXAMPLES
from tests.logs.conftest import serve
from tests.support.live import live_platform

pytestmark = pytest.mark.timeout(180)
GENERATOR = Path(sys.executable).parent / "openapi-python-client"


def _generate(spec: dict, where: Path) -> Path:
    """Generate the client package `aiot_generated` under `where`; no warning may be left unresolved."""
    where.mkdir(parents=True, exist_ok=True)
    spec_file = where / "openapi.json"
    spec_file.write_text(json.dumps(spec))
    # The generator reads binary answers only as application/octet-stream; the API truthfully says application/zip
    # (and gzip for log archives), so map them as an integrator would, in the generator's own config.
    config = where / "config.json"
    config.write_text(
        json.dumps(
            {
                "content_type_overrides": {
                    "application/zip": "application/octet-stream",
                    "application/gzip": "application/octet-stream",
                }
            }
        )
    )
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        [
            str(GENERATOR),
            "generate",
            "--path",
            str(spec_file),
            "--meta",
            "none",
            "--config",
            str(config),
            "--output-path",
            str(where / "aiot_generated"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING" not in done.stdout + done.stderr, done.stdout + done.stderr
    return where


@pytest.mark.skipif(not GENERATOR.exists(), reason="openapi-python-client is not installed (the dev extra has it)")
async def test_a_generated_client_uploads_deploys_and_reads_history(tmp_path: Path) -> None:
    async with live_platform(tmp_path, services=("nats-auth", "ingest")) as live, serve(create_app(live.ctx)) as url:
        spec = (await live.client.get("/openapi.json")).json()
        root = await asyncio.to_thread(_generate, spec, tmp_path / "gen")
        sys.path.insert(0, str(root))
        try:
            client_mod = importlib.import_module("aiot_generated")
            types = importlib.import_module("aiot_generated.types")
            upload = importlib.import_module("aiot_generated.api.packages.upload_model_api_v1_models_post")
            deploy = importlib.import_module("aiot_generated.api.workloads.deploy_api_v1_models_ref_deploy_post")
            deploy_in = importlib.import_module("aiot_generated.models.deploy_in")
            history = importlib.import_module(
                "aiot_generated.api.devices.reading_history_api_v1_devices_device_id_history_get"
            )
        finally:
            sys.path.remove(str(root))

        dev = client_mod.AuthenticatedClient(base_url=url, token=live.tokens[Role.ai_developer.value])
        admin = client_mod.AuthenticatedClient(base_url=url, token=live.tokens[Role.admin.value])
        archive = zip_folder(EXAMPLES / "models" / "comfort", tmp_path / "comfort.zip").read_bytes()

        def calls() -> tuple[int, dict, int, dict]:
            with dev as client:
                uploaded = upload.sync_detailed(
                    client=client,
                    body=types.File(
                        payload=io.BytesIO(archive), file_name="comfort.zip", mime_type="application/octet-stream"
                    ),
                )
                model = json.loads(uploaded.content)
                deployed = deploy.sync_detailed(ref=model["id"], client=client, body=deploy_in.DeployIn(replicas=1))
            return uploaded.status_code, model, deployed.status_code, json.loads(deployed.content)

        up_status, model, deploy_status, deployment = await asyncio.to_thread(calls)
        assert up_status == 201 and model["name"] == "comfort", model
        assert deploy_status == 201 and deployment["model_id"] == model["id"] and deployment["replicas"] == 1

        # a device's history: the device (set up as an admin would) sends a reading; the generated client reads it
        admin_h = live.headers(Role.admin)
        body = (EXAMPLES / "device-types" / "temperature.json").read_bytes()
        assert (await live.client.post("/api/v1/device-types", content=body, headers=admin_h)).status_code == 201
        await live.client.post("/api/v1/locations", headers=admin_h, json={"name": "Lab", "timezone": "UTC"})
        device = (
            await live.client.post(
                "/api/v1/devices",
                headers=admin_h,
                json={"name": "thermo", "device_type": "temperature", "location": "Lab"},
            )
        ).json()
        creds = device["connect"]
        sender = await nats.connect(creds["nats_url"], user=creds["username"], password=creds["password"])
        await sender.publish(creds["subjects"]["data"], json.dumps({"temperature": 23.5}).encode())
        await sender.flush()
        await sender.close()

        def read() -> list[dict]:
            with admin as client:
                return json.loads(history.sync_detailed(device_id=device["id"], client=client).content)

        deadline = time.monotonic() + 10
        while not (rows := await asyncio.to_thread(read)):
            assert time.monotonic() < deadline, "the reading never reached the history"
            await asyncio.sleep(0.2)
        assert rows[0]["values"] == {"temperature": 23.5}
    shutil.rmtree(tmp_path / "gen", ignore_errors=True)
