"""Deployer through the API: nodes join, a model is deployed, replicas spread, a silent node's work moves.

The test plays the agents' side of the HTTP protocol itself (the real agent is tested in tests/agent/)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from sqlalchemy import select

from aiot.artifacts.packing import zip_folder
from aiot.deployer.endpoint_tokens import model_token
from aiot.secrets_store import platform_secret
from aiot.store.models import Role
from aiot.store.runtime import Workload, WorkloadStatus
from tests.deployer.helpers import deploy_comfort
from tests.support.live import LivePlatform, live_platform

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


async def _join(live: LivePlatform, name: str, cpu_percent: float = 0.0) -> dict:
    token = (await live.client.post("/api/v1/nodes/join-tokens", headers=live.headers(Role.admin))).json()["token"]
    response = await live.client.post(
        "/api/v1/agent/register",
        headers={"Authorization": f"Bearer {token}"},
        json={"name": name, "capacity": {"cpu": 4, "memory_mb": 8192}},
    )
    assert response.status_code == 200, response.text
    node = response.json()
    node["headers"] = {"Authorization": f"Bearer {node['node_token']}"}
    await _report(live, node, cpu_percent)
    return node


async def _report(live: LivePlatform, node: dict, cpu_percent: float = 0.0, workloads: list | None = None) -> None:
    response = await live.client.post(
        "/api/v1/agent/report",
        headers=node["headers"],
        json={"load": {"cpu_percent": cpu_percent, "memory_percent": 10}, "workloads": workloads or []},
    )
    assert response.status_code == 200, response.text


async def _assignments(live: LivePlatform, node: dict) -> list[dict]:
    response = await live.client.get("/api/v1/agent/assignments", headers=node["headers"])
    assert response.status_code == 200, response.text
    return response.json()["assignments"]


async def test_deploy_spread_report_and_move(tmp_path: Path) -> None:
    async with live_platform(tmp_path, services=("nats-auth", "deployer")) as live:
        live.ctx.settings.node_grace_seconds = 3
        nodes = [await _join(live, name) for name in ("n1", "n2", "n3")]
        # The nodes report every 0.5 s like real agents, so a slow upload on a loaded machine cannot make one of
        # them silent for the 3 s grace before its part of the test (n3 stops on purpose further down).
        alive = {n["node_id"]: n for n in nodes}

        async def keep_alive() -> None:
            while True:
                for node in list(alive.values()):
                    await _report(live, node)
                await asyncio.sleep(0.5)

        beat = asyncio.create_task(keep_alive())
        archive = zip_folder(EXAMPLES / "models/comfort", tmp_path / "comfort.zip")
        pushed = await live.client.post(
            "/api/v1/models", content=archive.read_bytes(), headers=live.headers(Role.ai_developer)
        )
        model_id = pushed.json()["id"]
        denied = await live.client.post(
            f"/api/v1/models/{model_id}/deploy", json={"replicas": 3}, headers=live.headers(Role.app_developer)
        )
        assert denied.status_code == 403
        deployed = await live.client.post(
            f"/api/v1/models/{model_id}/deploy", json={"replicas": 3}, headers=live.headers(Role.ai_developer)
        )
        assert deployed.status_code == 201, deployed.text
        await asyncio.sleep(1.5)
        per_node = {n["node_id"]: await _assignments(live, n) for n in nodes}
        assert sorted(len(a) for a in per_node.values()) == [1, 1, 1]  # replicas spread over the three nodes
        spec = next(iter(per_node.values()))[0]
        assert spec["command"] == ["python", "-m", "platform_sdk.serving"]
        assert spec["config"]["nats"]["user"] == spec["workload_id"] and spec["config"]["nats"]["password"]
        assert spec["config"]["package"]["name"] == "comfort"

        # Each agent reports its replica running; the deployment lists the endpoints.
        for node in nodes:
            for item in per_node[node["node_id"]]:
                await _report(
                    live,
                    node,
                    workloads=[
                        {
                            "workload_id": item["workload_id"],
                            "generation": item["generation"],
                            "state": "running",
                            "endpoint": f"http://127.0.0.1:1{len(node['node_id'])}",
                        }
                    ],
                )
        owner = await live.client.get(f"/api/v1/deployments/{model_id}", headers=live.headers(Role.ai_developer))
        assert len(owner.json()["endpoints"]) == 3 and owner.json()["running"] == 3
        # Another user sees the state, never a replica's direct address (attack: find and call it).
        for shown in (
            (await live.client.get(f"/api/v1/deployments/{model_id}", headers=live.headers(Role.end_user))).json(),
            *(await live.client.get("/api/v1/deployments", headers=live.headers(Role.app_developer))).json(),
        ):
            assert shown["running"] == 3 and shown["endpoints"] == [], shown
            assert all(w["endpoint"] is None and w["state"] == "running" for w in shown["workloads"]), shown
            assert "127.0.0.1:1" not in json.dumps(shown)
        refused = await live.client.post(
            f"/api/v1/models/{model_id}/predict", json={"inputs": {}}, headers=live.headers(Role.app_developer)
        )
        assert refused.status_code == 403
        # The replicas' token is the model's, derived from the platform secret; it is in no stored config.
        token = model_token(platform_secret(live.ctx.settings), model_id)
        assert {a["config"]["serve"]["token"] for a in sum(per_node.values(), [])} == {token}
        with live.ctx.db.session() as session:
            assert token not in json.dumps([w.config for w in session.scalars(select(Workload))])

        # Placement decisions are recorded with every node's score.
        workload_id = spec["workload_id"]
        detail = (await live.client.get(f"/api/v1/workloads/{workload_id}", headers=live.headers(Role.admin))).json()
        assert detail["placements"][0]["reason"].startswith("least score")
        assert set(detail["placements"][0]["scores"]) == {"n1", "n2", "n3"}

        # n3 goes silent: after the grace period it is lost and its replica moves to n1 or n2 (new generation).
        lost = nodes[2]
        alive.pop(lost["node_id"])
        moved_id = per_node[lost["node_id"]][0]["workload_id"]
        for _ in range(50):
            for node in nodes[:2]:
                await _report(live, node)
            await asyncio.sleep(0.2)
            listed = (await live.client.get("/api/v1/nodes", headers=live.headers(Role.admin))).json()
            if {n["name"]: n["status"] for n in listed}["n3"] == "lost":
                break
        else:
            raise AssertionError("n3 never marked lost")
        await asyncio.sleep(1.5)
        remaining = [a for n in nodes[:2] for a in await _assignments(live, n)]
        moved = next(a for a in remaining if a["workload_id"] == moved_id)
        assert moved["generation"] == 2
        assert await _assignments(live, lost) == []  # when n3 comes back, nothing of it runs twice
        await _report(live, lost)
        assert (await live.client.get("/api/v1/nodes/n3", headers=live.headers(Role.admin))).json()["status"] == "ready"
        # A stale report from n3 about the moved workload is ignored.
        await _report(live, lost, workloads=[{"workload_id": moved_id, "generation": 1, "state": "running"}])
        detail = (await live.client.get(f"/api/v1/workloads/{moved_id}", headers=live.headers(Role.admin))).json()
        assert detail["node_id"] != lost["node_id"] and detail["generation"] == 2

        # Undeploy stops every replica.
        assert (
            await live.client.delete(f"/api/v1/deployments/{model_id}", headers=live.headers(Role.ai_developer))
        ).status_code == 204
        assert [a for n in nodes for a in await _assignments(live, n)] == []
        beat.cancel()


async def test_agent_endpoints_refuse_people_and_bad_tokens(tmp_path: Path) -> None:
    async with live_platform(tmp_path) as live:
        person = await live.client.get("/api/v1/agent/assignments", headers=live.headers(Role.admin))
        assert person.status_code == 403
        bogus = await live.client.get("/api/v1/agent/assignments", headers={"Authorization": "Bearer aiotnode.x.y"})
        assert bogus.status_code == 401
        bad_join = await live.client.post(
            "/api/v1/agent/register",
            headers={"Authorization": "Bearer aiotjoin.a.b"},
            json={"name": "x", "capacity": {"cpu": 1, "memory_mb": 10}},
        )
        assert bad_join.status_code == 401


async def test_deployments_show_replica_addresses_only_to_the_owner(tmp_path: Path) -> None:
    """Attack: list `/deployments` as any user, take a replica's address, call it directly. Another user sees
    the deployment's state and count, never an address; the owner and admins see them."""
    async with live_platform(tmp_path) as live:
        model_id = await deploy_comfort(live, tmp_path, 2)
        with live.ctx.db.session() as session:  # as if two agents had reported their replicas running
            for i, workload in enumerate(session.scalars(select(Workload))):
                status = session.get(WorkloadStatus, workload.id)
                status.state, status.generation, status.endpoint = (
                    "running",
                    workload.generation,
                    f"http://127.0.0.1:4580{i}",
                )
        for role in (Role.ai_developer, Role.admin):
            seen = (await live.client.get(f"/api/v1/deployments/{model_id}", headers=live.headers(role))).json()
            assert sorted(seen["endpoints"]) == ["http://127.0.0.1:45800", "http://127.0.0.1:45801"], seen
        for role in (Role.end_user, Role.app_developer):
            one = (await live.client.get(f"/api/v1/deployments/{model_id}", headers=live.headers(role))).json()
            listed = (await live.client.get("/api/v1/deployments", headers=live.headers(role))).json()
            for shown in (one, *listed):
                assert shown["endpoints"] == [] and shown["running"] == 2, shown
                assert "4580" not in json.dumps(shown), shown
