"""A real cluster on this machine: `aiot up --nodes N` (control plane, embedded NATS, N node agents)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.conftest import free_port
from tests.support.processes import RunningPlatform, start_platform

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@dataclass
class Cluster:
    plane: RunningPlatform
    data_dir: Path
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, path: str) -> Any:
        response = httpx.get(f"{self.plane.url}/api/v1{path}", headers=self.headers, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()

    def post(self, path: str, ok: tuple[int, ...] = (200, 201), **kwargs: Any) -> Any:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        response = httpx.post(f"{self.plane.url}/api/v1{path}", headers=headers, timeout=120, **kwargs)
        assert response.status_code in ok, response.text
        return response.json() if response.content else None

    def wait(self, what: str, probe: Callable[[], Any], timeout: float = 60.0, every: float = 0.2) -> Any:
        return self.plane.wait(what, probe, timeout, every)

    def push_model(self, name: str) -> dict:
        from aiot.artifacts.packing import zip_folder

        archive = zip_folder(EXAMPLES / "models" / name, self.data_dir.parent / f"{name}.zip")
        return self.post(
            "/models", content=archive.read_bytes(), headers={**self.headers, "Content-Type": "application/zip"}
        )

    def running_replicas(self, model: str, count: int) -> list[dict]:
        def probe() -> list[dict] | None:
            workloads = self.get(f"/deployments/{model}")["workloads"]
            running = [w for w in workloads if w["state"] == "running" and w["endpoint"]]
            return running if len(running) >= count and len(workloads) == count else None

        return self.wait(f"{count} running replicas of {model}", probe, timeout=120)

    def nats(self) -> dict:
        state = json.loads((self.data_dir / "nats" / "state.json").read_text())
        creds = json.loads((self.data_dir / "nats" / "platform-credentials.json").read_text())
        return {
            "url": f"nats://127.0.0.1:{state['client_port']}",
            "user": "aiot-platform",
            "password": creds.get("password"),
        }


def agent_pids(data_dir: Path) -> dict[str, int]:
    """Node name -> pid of the `aiot node join` process of this platform's local nodes."""
    found = {}
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "join" in cmd and "--data-dir" in cmd and str(data_dir) in " ".join(cmd):
            found[cmd[cmd.index("--name") + 1]] = proc.pid
    return found


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    data_dir = tmp_path_factory.mktemp("cluster") / "data"
    port = free_port()
    # A lost node's grace of 6 s (default 8): the "work moves within 15 s" criterion then leaves 9 s for the
    # deployer's pass and the model's start elsewhere on a busy 2-core machine.
    with start_platform(data_dir, port, ("--nodes", "3"), AIOT_NODE_GRACE_SECONDS="6") as plane:
        plane.wait_healthy()
        token = httpx.post(
            f"{plane.url}/api/v1/auth/login", json={"username": "admin", "password": "admin-password-1"}
        ).json()["token"]
        cluster = Cluster(plane, data_dir, token)
        cluster.wait("3 ready nodes", lambda: len([n for n in cluster.get("/nodes") if n["status"] == "ready"]) == 3)
        yield cluster
