"""The model gateway end to end: a real agent runs a real comfort replica; callers use only stable URLs.

Before the gateway a caller outside the SDK had to look up `http://127.0.0.1:<port>` of a replica, which
changes on every restart. Here: our format at `/models/<owner>/<name>/v1/predict`, the Open Inference Protocol
at `/v2/...`, who may call (owner, admin, the model's token; not another developer, not anonymous), and
`503 + Retry-After` while no replica is ready.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from aiot.deployer.endpoint_tokens import model_token
from aiot.launch.http_app import create_app
from aiot.secrets_store import platform_secret
from aiot.store.models import Role
from tests.agent.test_agent_loop import serve_http
from tests.deployer.helpers import deploy_comfort, first_prediction, joined_agent
from tests.support.live import LivePlatform, live_platform
from tests.support.processes import serving_pid

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
HOT = {"temperature": 31.5, "light": 120}


async def test_a_deployed_model_answers_at_its_stable_urls_to_those_allowed(tmp_path: Path) -> None:
    async with (
        live_platform(tmp_path, services=("nats-auth", "deployer")) as live,
        serve_http(create_app(live.ctx)) as api_port,
    ):
        client, dev = live.client, live.headers(Role.ai_developer)
        url = "/models/aideveloper1/comfort/v1/predict"
        assert (await client.post(url, json={"inputs": HOT}, headers=dev)).status_code == 404  # nothing yet
        model_id = await deploy_comfort(live, tmp_path, 1)

        waiting = await client.post(url, json={"inputs": HOT}, headers=dev)  # deployed, no node yet
        assert waiting.status_code == 503 and waiting.headers["retry-after"] == "2", waiting.text
        assert "no replica is ready" in waiting.json()["error"]["message"]
        not_ready = await client.get("/v2/models/comfort/ready", headers=dev)
        assert not_ready.status_code == 503 and "retry-after" in not_ready.headers

        agent = await joined_agent(live, tmp_path, api_port, "gw-node")
        try:
            answer = await first_prediction(client, url, {"inputs": HOT}, dev)
            assert answer.json()["outputs"] == {"fan": "on", "ac": "on", "lamp": "on"}
            assert answer.headers["x-aiot-model-version"] == "1.0.0"

            # the CLI uses the same stable URL (in a thread: the server runs on this event loop)
            from typer.testing import CliRunner

            from aiot.cli.main import app as cli

            env = {"AIOT_SERVER": f"http://127.0.0.1:{api_port}", "AIOT_TOKEN": live.tokens[Role.ai_developer.value]}
            ran = await asyncio.to_thread(
                CliRunner().invoke,
                cli,
                ["model", "predict", "comfort", "--input", '{"temperature": 20, "light": 900}'],
                env=env,
            )
            assert ran.exit_code == 0, ran.output
            assert json.loads(ran.output)["outputs"] == {"fan": "off", "ac": "off", "lamp": "off"}
            bad = await asyncio.to_thread(
                CliRunner().invoke, cli, ["model", "predict", "comfort", "--input", "{"], env=env
            )
            assert bad.exit_code != 0 and "--input is not JSON" in bad.output + str(bad.exception)

            # who may call
            assert (
                await client.post("/models/someoneelse/comfort/v1/predict", json={"inputs": HOT}, headers=dev)
            ).status_code == 404
            assert (await client.post(url, json={"inputs": HOT})).status_code == 401
            stranger = live.add_user("otherdev1", Role.ai_developer)
            denied = await client.post(url, json={"inputs": HOT}, headers=stranger)
            assert denied.status_code == 403 and "belongs to another user" in denied.json()["error"]["message"]
            assert (await client.post(url, json={"inputs": HOT}, headers=live.headers(Role.admin))).status_code == 200
            bound = {"Authorization": f"Bearer {model_token(platform_secret(live.ctx.settings), model_id)}"}
            assert (await client.post(url, json={"inputs": HOT}, headers=bound)).status_code == 200
            bad = await client.post(url, json={"inputs": {"temperature": 300, "light": 1}}, headers=dev)
            assert bad.status_code == 422 and bad.json()["field"] == "temperature"  # the replica's answer
            batch = await client.post(
                url + "/batch", headers=dev, json={"instances": [HOT, {"temperature": 20, "light": 900}]}
            )
            assert [o["ac"] for o in batch.json()["outputs"]] == ["on", "off"]

            # the Open Inference Protocol
            assert (await client.get("/v2/health/ready")).json() == {"ready": True}
            meta = (await client.get("/v2/models/comfort", headers=dev)).json()
            assert meta["versions"] == ["1.0.0"]
            assert {t["name"]: t["datatype"] for t in meta["inputs"]} == {"temperature": "FP64", "light": "FP64"}
            assert (await client.get("/v2/models/comfort/versions/1.0.0/ready", headers=dev)).json()["ready"]
            infer = await client.post(
                "/v2/models/comfort/infer",
                headers=bound,
                json={
                    "id": "r1",
                    "inputs": [
                        {"name": "temperature", "shape": [1], "datatype": "FP32", "data": [31.5]},
                        {"name": "light", "shape": [1], "datatype": "FP32", "data": [120]},
                    ],
                },
            )
            assert infer.status_code == 200, infer.text
            body = infer.json()
            assert body["id"] == "r1" and body["model_name"] == "comfort" and body["model_version"] == "1.0.0"
            assert {t["name"]: t["data"] for t in body["outputs"]} == {"fan": ["on"], "ac": ["on"], "lamp": ["on"]}
            assert all(t["datatype"] == "BYTES" and t["shape"] == [1] for t in body["outputs"])
            wrong = await client.post(
                "/v2/models/comfort/infer",
                headers=dev,
                json={"inputs": [{"name": "temperature", "shape": [2], "datatype": "FP32", "data": [31.5]}]},
            )
            assert wrong.status_code == 422 and wrong.json()["error"]["details"]["field"] == "inputs[0].data"
            assert (
                await client.post("/v2/models/comfort/infer", headers=stranger, json={"inputs": []})
            ).status_code == 403

            await _two_replicas_share_load_and_one_killed_mid_load_fails_nothing(live, model_id, url)
        finally:
            await agent.stop()


async def _two_replicas_share_load_and_one_killed_mid_load_fails_nothing(
    live: LivePlatform, model_id: str, url: str
) -> None:
    client, dev = live.client, live.headers(Role.ai_developer)
    resized = await client.post(f"/api/v1/models/{model_id}/deploy", json={"replicas": 2}, headers=dev)
    assert resized.status_code in (200, 201), resized.text
    deadline = time.monotonic() + 120
    while (shown := (await client.get(f"/api/v1/deployments/{model_id}", headers=dev)).json()).get("running") != 2:
        assert time.monotonic() < deadline, f"the second replica did not start: {shown}"
        await asyncio.sleep(0.5)
    await asyncio.sleep(1.1)  # past the gateway's one-second cache of the replica set
    served: Counter[str] = Counter()
    failures: list[str] = []
    stop = asyncio.Event()

    async def steady_client() -> None:
        while not stop.is_set():
            answer = await client.post(url, json={"inputs": HOT}, headers=dev)
            if answer.status_code == 200:
                served[answer.headers["x-aiot-replica"]] += 1
            else:
                failures.append(f"{answer.status_code}: {answer.text[:200]}")

    clients = [asyncio.create_task(steady_client()) for _ in range(4)]
    try:
        await asyncio.sleep(2.0)
        assert len(served) == 2, f"both replicas should take requests: {served}"
        victim = shown["workloads"][0]["id"]
        pid = serving_pid(victim)
        assert pid is not None, f"no serving process for {victim}"
        os.kill(pid, signal.SIGKILL)
        before = sum(served.values())
        await asyncio.sleep(3.0)
        assert sum(served.values()) > before + 20, "the surviving replica should go on answering"
    finally:
        stop.set()
        await asyncio.gather(*clients)
    assert failures == [], failures[:5]
