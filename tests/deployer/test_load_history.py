"""Node load history is kept by the platform (a NATS KV bucket with per-key history), not in the memory of the web
process that happened to draw a chart: reports made while nobody watched are there, in order, for any API
replica; and a node cannot write the history of a workload placed elsewhere.

Before, the nodes page kept the last reports in the web process, only while someone had it open.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from aiot.deployer import loadhistory
from aiot.launch.http_app import create_app
from aiot.store.models import Role
from tests.logs.conftest import serve
from tests.support.live import live_platform

CAPACITY = {"cpu": 4, "memory_mb": 8192}


async def test_reports_become_a_server_side_history_readable_from_another_replica(tmp_path: Path) -> None:
    async with live_platform(tmp_path) as live:
        admin = live.headers(Role.admin)
        token = (await live.client.post("/api/v1/nodes/join-tokens", headers=admin)).json()["token"]
        joined = await live.client.post(
            "/api/v1/agent/register",
            headers={"Authorization": f"Bearer {token}"},
            json={"name": "hist-1", "capacity": CAPACITY},
        )
        assert joined.status_code == 200, joined.text
        node = {"Authorization": f"Bearer {joined.json()['node_token']}"}
        for cpu, memory in ((10.0, 40.0), (55.5, 41.0), (90.0, 42.5)):
            load = {
                "cpu_percent": cpu,
                "memory_percent": memory,
                "per_workload": {"wl_notmine0001": {"cpu_percent": 99}},
            }
            reported = await live.client.post("/api/v1/agent/report", headers=node, json={"load": load})
            assert reported.status_code == 200, reported.text

        # another API process (a replica, or the web UI after a restart) reads the same history
        async with serve(create_app(live.ctx)) as other, httpx.AsyncClient(base_url=other) as client:
            history = (await client.get(f"/api/v1/nodes/{joined.json()['node_id']}/load", headers=admin)).json()
        samples = history["samples"]
        assert [(s["cpu"], s["memory"]) for s in samples] == [(10.0, 40.0), (55.5, 41.0), (90.0, 42.5)]
        assert [s["at"] for s in samples] == sorted(s["at"] for s in samples)
        # the node is not where wl_notmine0001 runs (nowhere): nothing was written for it
        assert await loadhistory.series(live.ctx.bus, loadhistory.workload_key("wl_notmine0001")) == []
        # the history is for admins
        for role in (Role.ai_developer, Role.end_user):
            denied = await live.client.get(f"/api/v1/nodes/{joined.json()['node_id']}/load", headers=live.headers(role))
            assert denied.status_code == 403, denied.text
