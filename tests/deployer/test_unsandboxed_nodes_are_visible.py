"""A node whose workloads run without bubblewrap (an admin allowed it) is visible where admins look: the node
list, the web UI's node card and the control plane's /metrics (something to alert on)."""

from __future__ import annotations

import re
from pathlib import Path

from aiot.store.models import Role
from tests.support.live import live_platform

from .test_deployer_api import _join


async def test_metrics_and_node_list_show_unsandboxed_nodes(tmp_path: Path) -> None:
    async with live_platform(tmp_path, services=("nats-auth",)) as live:
        for name, sandboxed in (("safe", True), ("bare", False)):
            node = await _join(live, name)
            response = await live.client.post(
                "/api/v1/agent/report",
                headers=node["headers"],
                json={"load": {"cpu_percent": 1, "memory_percent": 10, "sandboxed": sandboxed}, "workloads": []},
            )
            assert response.status_code == 200, response.text
        nodes = (await live.client.get("/api/v1/nodes", headers=live.headers(Role.admin))).json()
        assert {n["name"]: n["load"]["sandboxed"] for n in nodes} == {"safe": True, "bare": False}
        text = (await live.client.get("/metrics")).text
        found = {
            m.group(1): float(m.group(2))
            for m in re.finditer(r'^aiot_nodes\{sandboxed="(\w+)",status="ready"\} (\S+)$', text, re.M)
        }
        assert found == {"true": 1.0, "false": 1.0}, found
