"""Issue acceptance (runtime): an agent whose every connection (to the control plane's API and to NATS, its
workloads' too) carries 2 s of added delay each way restarts none of its healthy workloads over 60 s.

The delay comes from a TCP proxy (this machine's kernel has no `tc netem`). Hang detection is local to the node
(heartbeat files), so network delay cannot look like a hang; the node's reports arrive late but inside its grace.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from tests.conftest import free_port
from tests.support.fault_proxy import ProxiesInThread
from tests.support.processes import start_platform

from .conftest import Cluster

pytestmark = [pytest.mark.slow, pytest.mark.soak]  # scripts/test runs it beside the parallel phase
DELAY = 2.0
WATCH_SECONDS = 60.0


def test_two_seconds_of_delay_restarts_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    proxies = ProxiesInThread()
    with start_platform(data_dir, free_port(), AIOT_NODE_GRACE_SECONDS="20") as plane:
        plane.wait_healthy()
        token = httpx.post(
            f"{plane.url}/api/v1/auth/login", json={"username": "admin", "password": "admin-password-1"}
        ).json()["token"]
        cluster = Cluster(plane, data_dir, token)
        nats_port = cluster.nats()["url"].rsplit(":", 1)[1]
        api = proxies.start("127.0.0.1", int(urlparse(plane.url).port or 0), delay=DELAY)
        nats = proxies.start("127.0.0.1", int(nats_port), delay=DELAY)
        join_token = cluster.post("/nodes/join-tokens")["token"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIOT_")}
        env.update(AIOT_DATA_DIR=str(data_dir), AIOT_NATS_CONNECT_TIMEOUT="15", AIOT_JOIN_TOKEN=join_token)
        agent_log = (tmp_path / "agent.log").open("wb")
        agent = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "aiot"),
                "node",
                "join",
                "--server",
                f"http://{api.url_host_port}",
                "--name",
                "far-away",
                "--data-dir",
                str(tmp_path / "node"),
                "--nats-url",
                f"nats://{nats.url_host_port}",
            ],
            env=env,
            stdout=agent_log,
            stderr=subprocess.STDOUT,
        )
        try:
            cluster.wait(
                "the far node ready", lambda: [n for n in cluster.get("/nodes") if n["status"] == "ready"], timeout=90
            )
            cluster.push_model("comfort")
            cluster.post("/models/comfort/deploy", json={"replicas": 2})
            replicas = cluster.wait("2 replicas running", lambda: _running(cluster), timeout=240, every=1.0)
            assert api.connections > 0 and nats.connections > 0  # everything really went through the proxies
            before = {r["id"]: r["restarts"] for r in replicas}
            deadline = time.monotonic() + WATCH_SECONDS
            while time.monotonic() < deadline:
                for replica in cluster.get("/deployments/comfort")["workloads"]:
                    detail = cluster.get(f"/workloads/{replica['id']}")
                    assert detail["restarts"] == before[replica["id"]], (detail, _tail(tmp_path / "agent.log"))
                    assert replica["state"] == "running", (replica, _tail(tmp_path / "agent.log"))
                nodes = cluster.get("/nodes")
                assert all(n["status"] == "ready" for n in nodes), nodes
                time.sleep(2.0)
            log = (tmp_path / "agent.log").read_text(errors="replace")
            assert "restarting" not in log and "hung" not in log, _tail(tmp_path / "agent.log")
        finally:
            agent.terminate()
            try:
                agent.wait(30)
            except subprocess.TimeoutExpired:
                agent.kill()
            agent_log.close()
            proxies.close()


def _running(cluster: Cluster) -> list[dict] | None:
    workloads = cluster.get("/deployments/comfort")["workloads"]
    running = [w for w in workloads if w["state"] == "running"]
    return running if len(running) == 2 else None


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:]
