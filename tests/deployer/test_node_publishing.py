"""What a node and a workload may publish: a node writes log lines only for the workloads it runs, a replica
announces only itself. Attacks that worked before: a node's credentials forged a line in another node's
workload's log (seen by that workload's owner); a replica announced an endpoint under another replica's id."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import nats

from aiot.logs.records import node_log_subject
from aiot.logs.stream import ensure_logs_stream
from aiot.store.models import Role
from tests.deployer.helpers import deploy_comfort
from tests.support.live import LivePlatform, live_platform

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


class Client:
    """A NATS connection with someone's credentials that records the server's permission errors."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.nc: Any = None

    async def connect(self, creds: dict[str, Any]) -> Client:
        async def on_error(exc: Exception) -> None:
            self.errors.append(str(exc).lower())

        self.nc = await nats.connect(
            creds["servers"], user=creds["user"], password=creds["password"], error_cb=on_error, allow_reconnect=False
        )
        return self

    async def refused(self, subject: str) -> bool:
        for _ in range(40):
            if any("permissions violation" in e and subject.lower() in e for e in self.errors):
                return True
            await asyncio.sleep(0.05)
        return False


async def _join(live: LivePlatform, name: str) -> dict[str, Any]:
    token = (await live.client.post("/api/v1/nodes/join-tokens", headers=live.headers(Role.admin))).json()["token"]
    node = (
        await live.client.post(
            "/api/v1/agent/register",
            headers={"Authorization": f"Bearer {token}"},
            json={"name": name, "capacity": {"cpu": 4, "memory_mb": 8192}},
        )
    ).json()
    node["headers"] = {"Authorization": f"Bearer {node['node_token']}"}
    assert (await live.client.post("/api/v1/agent/report", headers=node["headers"], json={})).status_code == 200
    return node


async def _keep_reporting(live: LivePlatform, *nodes: dict[str, Any]) -> None:
    while True:
        await asyncio.sleep(1.0)
        for node in nodes:
            await live.client.post("/api/v1/agent/report", headers=node["headers"], json={})


async def _logs(live: LivePlatform, workload_id: str) -> list[str]:
    response = await live.client.get(
        "/api/v1/logs", params={"workload_id": workload_id}, headers=live.headers(Role.admin)
    )
    assert response.status_code == 200, response.text
    return [r["message"] for r in response.json()["records"]]


async def _until(probe: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = await probe()
        if found or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.2)


async def test_nodes_log_only_for_their_workloads_and_replicas_announce_only_themselves(tmp_path: Path) -> None:
    async with live_platform(tmp_path, services=("nats-auth", "deployer", "registry", "log-relay")) as live:
        await ensure_logs_stream(live.ctx.bus, live.ctx.settings)
        n1, n2 = await _join(live, "n1"), await _join(live, "n2")
        reporting = asyncio.create_task(_keep_reporting(live, n1, n2))  # not lost, however slow this machine is
        try:
            await _scenario(live, tmp_path, n1, n2)
        finally:
            reporting.cancel()


async def _scenario(live: LivePlatform, tmp_path: Path, n1: dict[str, Any], n2: dict[str, Any]) -> None:
    model_id = await deploy_comfort(live, tmp_path, 2)

    async def one_each() -> dict[str, dict] | None:
        got = {}
        for node in (n1, n2):
            items = (await live.client.get("/api/v1/agent/assignments", headers=node["headers"])).json()
            if len(items["assignments"]) != 1:
                return None
            got[node["node_id"]] = items["assignments"][0]
        return got

    placed = await _until(one_each)
    assert placed, "the two replicas were not spread over n1 and n2"
    w1, w2 = placed[n1["node_id"]], placed[n2["node_id"]]

    # Logs: n1 writes its own workload's output (through the log relay); a line it forges for n2's workload -
    # straight on the log subject, on n2's node subject, or on its own node subject - never reaches that log.
    node1, node2 = await Client().connect(n1["nats"]), await Client().connect(n2["nats"])
    n1_id, n2_id = n1["node_id"], n2["node_id"]
    try:

        async def n1_line_stored() -> bool:
            await node1.nc.publish(node_log_subject(n1_id, w1["workload_id"]), b'{"message": "n1 ok"}')
            return "n1 ok" in await _logs(live, w1["workload_id"])

        assert await _until(n1_line_stored), node1.errors
        forged = json.dumps({"message": "forged by n1", "level": "ERROR"}).encode()
        for subject in (f"aiot.logs.{w2['workload_id']}", node_log_subject(n2_id, w2["workload_id"])):
            await node1.nc.publish(subject, forged)
            assert await node1.refused(subject), (subject, node1.errors)  # not its subjects: the server refuses
        await node1.nc.publish(node_log_subject(n1_id, w2["workload_id"]), forged)  # its own: the relay drops it
        await node1.nc.flush()

        async def n2_line_stored() -> bool:
            await node2.nc.publish(node_log_subject(n2_id, w2["workload_id"]), b'{"message": "n2 ok"}')
            return "n2 ok" in await _logs(live, w2["workload_id"])

        assert await _until(n2_line_stored), node2.errors
        assert "forged by n1" not in await _logs(live, w2["workload_id"])
        assert live.ctx.services["log-relay"].dropped >= 1
    finally:
        await node1.nc.close()
        await node2.nc.close()

    # Registry: replica 1 announcing itself under replica 2's id (any subject, any body) is not stored.
    replica1 = await Client().connect(w1["config"]["nats"])
    try:
        evil = {"model_id": model_id, "workload_id": w2["workload_id"], "url": "http://evil.example:80"}
        theirs = f"aiot.registry.announce.{model_id}.{w2['workload_id']}"
        for subject in (f"aiot.registry.announce.{model_id}", theirs):
            await replica1.nc.publish(subject, json.dumps(evil).encode())
            assert await replica1.refused(subject), (subject, replica1.errors)
        own = f"aiot.registry.announce.{model_id}.{w1['workload_id']}"
        await replica1.nc.publish(own, json.dumps(evil).encode())  # its own subject, another's id in the body
        honest = {**evil, "workload_id": w1["workload_id"], "url": "http://10.0.0.1:8000"}
        await replica1.nc.publish(own, json.dumps(honest).encode())
        await replica1.nc.flush()

        async def resolved() -> list[dict]:
            answer = await live.ctx.bus.request(f"aiot.registry.resolve.{model_id}", b"", timeout=5)
            return json.loads(answer.data)["endpoints"]

        async def replica1_listed() -> list[dict] | None:
            endpoints = await resolved()
            return endpoints if any(e["workload_id"] == w1["workload_id"] for e in endpoints) else None

        endpoints = await _until(replica1_listed)
        assert endpoints and [(e["workload_id"], e["url"]) for e in endpoints] == [
            (w1["workload_id"], "http://10.0.0.1:8000")
        ], endpoints
    finally:
        await replica1.nc.close()
