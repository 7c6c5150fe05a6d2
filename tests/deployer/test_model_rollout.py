"""Deployment-lifecycle acceptance: a model rollout replaces 2 replicas one by one and a steady client calling
the model's stable URL sees no error; a version that cannot load is rolled back, still without an error.

A real platform (`aiot up --nodes 2`) serves a small pure-Python model. A client thread calls
`/models/admin/probe/v1/predict` every 50 ms for the whole test and records every answer's status and version.
"""

from __future__ import annotations

import io
import json
import threading
import time
import zipfile
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.apps.test_upgrades import Api
from tests.conftest import free_port
from tests.support.processes import start_platform

pytestmark = pytest.mark.slow

SERVES = (
    "class Probe:\n    def load(self) -> None:\n        pass\n\n"
    "    def predict(self, inputs):\n        return {'y': inputs['x'] * 2}\n"
)
CANNOT_LOAD = (
    "class Probe:\n    def load(self) -> None:\n        raise RuntimeError('weights file missing')\n\n"
    "    def predict(self, inputs):\n        return {'y': 0}\n"
)


def model_zip(version: str, code: str) -> bytes:
    manifest = {
        "format": 1,
        "name": "probe",
        "version": version,
        "framework": "python",
        "entrypoint": "probe:Probe",
        "description": "doubles x",
        "inputs": {"x": {"type": "number"}},
        "outputs": {"y": {"type": "number"}},
        "example": {"x": 1},
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("model.json", json.dumps(manifest))
        archive.writestr("probe.py", code)
    return buffer.getvalue()


class SteadyClient(threading.Thread):
    """Calls the model's stable URL every 50 ms; keeps (status, version) of every answer."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.url, self.headers = url, headers
        self.answers: list[tuple[int, str]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        with httpx.Client(headers=self.headers, timeout=30) as client:
            while not self.stopping.is_set():
                try:
                    response = client.post(self.url, json={"inputs": {"x": 21}})
                    ok = response.status_code == 200 and response.json().get("outputs", {}).get("y") == 42
                    self.answers.append(
                        (
                            response.status_code if ok else -response.status_code,
                            response.headers.get("x-aiot-model-version", ""),
                        )
                    )
                except httpx.HTTPError as exc:
                    self.answers.append((0, type(exc).__name__))
                time.sleep(0.05)

    def errors(self) -> list[tuple[int, str]]:
        return [a for a in self.answers if a[0] != 200]


@pytest.fixture(scope="module")
def admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    data_dir = tmp_path_factory.mktemp("rollout") / "data"
    with start_platform(
        data_dir, free_port(), ("--nodes", "2"), AIOT_ROLLOUT_SOAK_SECONDS="3", AIOT_ROLLOUT_MAX_RESTARTS="2"
    ) as plane:
        plane.wait_healthy()
        api = Api(plane)
        for version, code in (("1.0.0", SERVES), ("1.1.0", SERVES), ("1.2.0", CANNOT_LOAD)):
            api.call("POST", "/models", content=model_zip(version, code), headers={"Content-Type": "application/zip"})
        yield api


def _ready_replicas(api: Api, ref: str) -> list[dict[str, Any]]:
    workloads = api.call("GET", f"/deployments/{ref}")["workloads"]
    return [w for w in workloads if w["state"] == "running"]


def _finished(api: Api) -> dict | None:
    last = api.call("GET", "/models/probe/rollouts")[-1]
    return last if last["state"] != "rolling" else None


def test_a_rollout_replaces_two_replicas_without_a_failed_call_and_a_broken_one_rolls_back(admin: Api) -> None:
    admin.call("POST", "/models/probe:1.0.0/deploy", json={"replicas": 2})
    admin.wait("2 ready replicas of 1.0.0", lambda: len(_ready_replicas(admin, "probe:1.0.0")) == 2, timeout=120)
    client = SteadyClient(f"{admin.plane.url}/models/admin/probe/v1/predict", admin.headers)
    client.start()
    try:
        admin.wait("the client's first answers", lambda: len(client.answers) >= 10)
        rollout = admin.call("POST", "/models/probe/rollout", json={"version": "1.1.0"})
        assert (rollout["from_version"], rollout["to_version"], rollout["state"]) == ("1.0.0", "1.1.0", "rolling")
        done = admin.wait("the rollout to 1.1.0", lambda: _finished(admin), timeout=180)
        assert done["state"] == "succeeded", done
        assert len(_ready_replicas(admin, "probe:1.1.0")) == 2
        gone = httpx.get(f"{admin.plane.url}/api/v1/deployments/probe:1.0.0", headers=admin.headers, timeout=30)
        assert gone.status_code == 404, gone.text  # the old version's replicas are retired
        admin.wait("answers from 1.1.0", lambda: client.answers[-1][1] == "1.1.0")
        assert client.errors() == [], client.errors()

        broken = admin.call("POST", "/models/probe/rollout", json={"version": "1.2.0"})
        assert broken["from_version"] == "1.1.0"
        failed = admin.wait("the broken rollout's verdict", lambda: _finished(admin), timeout=180)
        assert failed["state"] == "rolled_back" and "weights file missing" in failed["reason"], failed
        admin.wait("2 ready replicas of 1.1.0 again", lambda: len(_ready_replicas(admin, "probe:1.1.0")) == 2)
        time.sleep(1.0)
    finally:
        client.stopping.set()
        client.join(10)
    versions = [v for _, v in client.answers]
    assert client.errors() == [], client.errors()
    assert "1.0.0" in versions and versions[-1] == "1.1.0" and "1.2.0" not in versions, set(versions)
    assert len(client.answers) > 100, len(client.answers)
    history = admin.call("GET", "/models/probe/rollouts")
    assert [(h["from_version"], h["to_version"], h["state"]) for h in history] == [
        ("1.0.0", "1.1.0", "succeeded"),
        ("1.1.0", "1.2.0", "rolled_back"),
    ]
