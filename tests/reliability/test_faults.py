"""Faults on a running platform (`aiot up --nodes 2`, populated, the echo model deployed): SIGKILL the control plane
and start it again on the same data directory, SIGKILL the embedded nats-server, SIGKILL a workload.

After each: everything recovers with nobody touching it; nothing acknowledged is lost (uploads, registrations,
schedules, readings that reached the history stream, log records that reached the log stream); no workload runs
twice. The tests run in order on one platform (each starts from where the previous one left it).

Not here: SIGKILL of a node agent and network partitions (tests/cluster/test_runtime.py,
tests/cluster/test_delay.py); the scheduler and the log collector are services inside the control plane
process, so killing the control plane kills them too.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats
import psutil
import pytest

from tests.conftest import free_port
from tests.support.processes import RunningPlatform, start_platform
from tests.support.tokens import model_headers

from .conftest import Api, Deployment, copies, populate, seed_envs, serving_processes, wait_for

pytestmark = pytest.mark.slow


@dataclass
class Faulty:
    """The platform under test and what it acknowledged (to look for after each fault)."""

    dep: Deployment
    port: int
    stack: contextlib.ExitStack
    acknowledged: dict[str, Any] = field(default_factory=dict)
    readings: int = 0

    @property
    def api(self) -> Api:
        return self.dep.api


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory, warm_envs: Path) -> Iterator[Faulty]:
    tmp = tmp_path_factory.mktemp("faults")
    data_dir = tmp / "data"
    seed_envs(warm_envs, data_dir)
    port = free_port()
    with contextlib.ExitStack() as stack:  # the restarted control plane is stopped first, then the killed one
        plane = stack.enter_context(_start(data_dir, port))
        plane.wait_healthy(60)
        api = Api(plane.url)
        yield Faulty(Deployment(plane, data_dir, api, populate(api, tmp, devices=1)), port, stack)


def _start(data_dir: Path, port: int) -> contextlib.AbstractContextManager[RunningPlatform]:
    # The nodes' grace is short so that a restarted control plane does not wait long for its agents.
    return start_platform(data_dir, port, ("--nodes", "2"), AIOT_NODE_GRACE_SECONDS="8")


def _publish_readings(f: Faulty, count: int) -> None:
    """Publish `count` temperature readings as the device itself (its own NATS credentials)."""
    connect = f.dep.pop.devices["temperature-0"]["connect"]
    if "rotated" in f.acknowledged:
        connect = {**connect, "password": f.acknowledged["rotated"]}

    async def run() -> None:
        state = json.loads((f.dep.data_dir / "nats" / "state.json").read_text())
        nc = await nats.connect(
            f"nats://127.0.0.1:{state['client_port']}",
            user=connect["username"],
            password=connect["password"],
            connect_timeout=5,
            max_reconnect_attempts=3,
        )
        try:
            for i in range(count):
                value = (f.readings + i) % 80
                await nc.publish(
                    connect["subjects"]["data"], json.dumps({"ts": time.time(), "temperature": value}).encode()
                )
            await nc.flush()
        finally:
            await nc.close()

    asyncio.run(run())
    f.readings += count


def _history(f: Faulty) -> list[dict]:
    device = f.dep.pop.devices["temperature-0"]["id"]
    return f.api.get(f"/devices/{device}/history?limit=1000")


def _echo_running(f: Faulty) -> list[dict] | None:
    workloads = f.api.get("/deployments/echo")["workloads"]
    running = [w for w in workloads if w["state"] == "running" and w["endpoint"]]
    return running if running and len(workloads) == 1 else None


def _echo_serving(f: Faulty) -> list[dict] | None:
    """Running per the API *and* answering at its endpoint (right after a control plane restart the recorded
    state is the one from before, until the agents report again)."""
    running = _echo_running(f)
    try:
        return running if running and _predict(f, running[0]["endpoint"], 1) == 2 else None
    except (httpx.HTTPError, AssertionError):
        return None


def _predict(f: Faulty, endpoint: str, x: float) -> float:
    """A direct call to a replica, with the model's token (as the control plane sends it)."""
    headers = model_headers(f.dep.data_dir, f.dep.pop.ids["echo"])
    response = httpx.post(f"{endpoint}/v1/predict", json={"inputs": {"x": x}}, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["outputs"]["y"]


def _snapshot(f: Faulty) -> dict[str, Any]:
    api = f.api
    return {
        "users": sorted(u["username"] for u in api.get("/users")),
        "models": sorted((m["id"], m["sha256"]) for m in api.get("/models")),
        "apps": sorted((a["id"], a["sha256"]) for a in api.get("/apps")),
        "device types": sorted(d["name"] for d in api.get("/device-types")),
        "devices": sorted(d["id"] for d in api.get("/devices")),
        "instances": sorted(i["id"] for i in api.get("/instances")),
        "schedules": sorted((s["id"], s["enabled"]) for s in api.get("/schedules")),
        "deployments": sorted(d["id"] for d in api.get("/deployments")),
    }


def _log_has(f: Faulty, text: str) -> bool:
    return f.api.get(f"/logs?text={text}&limit=10")["count"] > 0


def test_setup_echo_serves_and_readings_reach_history(faulty: Faulty) -> None:
    f = faulty
    wait_for("2 ready nodes", lambda: len([n for n in f.api.get("/nodes") if n["status"] == "ready"]) == 2, 60)
    f.api.call("POST", "/models/echo/deploy", "ada2", json={"replicas": 1})
    running = wait_for("echo running", lambda: _echo_running(f), 120)
    assert _predict(f, running[0]["endpoint"], 2) == 4
    _publish_readings(f, 20)
    wait_for("20 readings in the history", lambda: len(_history(f)) >= 20, 30)
    # A marker in the log stream: creating a user is logged by the control plane.
    f.api.call(
        "POST", "/users", json={"username": "marker-before-kill", "password": "marker-password-1", "role": "end_user"}
    )
    wait_for("the marker in the log stream", lambda: _log_has(f, "marker-before-kill"), 30)
    echo = f.api.call("GET", "/models/echo/download", "ada2").content
    f.acknowledged.update(
        snapshot=_snapshot(f),
        history=len(_history(f)),
        echo_sha=hashlib.sha256(echo).hexdigest(),
        workload=running[0]["id"],
    )


def test_sigkill_of_the_control_plane_loses_nothing_and_runs_nothing_twice(faulty: Faulty) -> None:
    f = faulty
    before = f.acknowledged
    plane = f.dep.plane
    plane.kill(signal.SIGKILL)
    # Its children die with it (parent-death signal): nats-server, the node agents and so their workloads.
    wait_for("the echo server to stop", lambda: not serving_processes().get(before["workload"]), 30)
    started = time.monotonic()
    restarted = f.stack.enter_context(_start(f.dep.data_dir, f.port))
    f.dep.plane = restarted
    restarted.wait_healthy(60)
    # Every acknowledged thing is still there: the same rows, the same archive bytes, the same readings and logs.
    assert _snapshot(f) == before["snapshot"]
    echo = f.api.call("GET", "/models/echo/download", "ada2").content
    assert hashlib.sha256(echo).hexdigest() == before["echo_sha"]
    assert len(_history(f)) == before["history"]
    assert _log_has(f, "marker-before-kill")
    assert f.api.call("GET", "/auth/me", "eve").json()["username"] == "eve"  # tokens survived too
    # The deployment converges again by itself, to exactly one running copy of its one workload.
    running = wait_for("echo running again", lambda: _echo_serving(f), 120)
    recovered = time.monotonic() - started
    assert _predict(f, running[0]["endpoint"], 3) == 6
    workload = running[0]["id"]
    time.sleep(2)  # a duplicate would have had time to appear
    assert copies([workload])[workload] == 1, serving_processes()
    # New work is accepted after the restart.
    _publish_readings(f, 5)
    wait_for("the new readings in the history", lambda: len(_history(f)) >= before["history"] + 5, 30)
    print(f"\ncontrol plane SIGKILL: healthy and echo serving again {recovered:.1f}s after the restart began")
    f.acknowledged.update(history=len(_history(f)), workload=workload)


def test_sigkill_of_the_embedded_nats_server_recovers_by_itself(faulty: Faulty) -> None:
    f = faulty
    pid_file = f.dep.data_dir / "nats" / "nats.pid"
    old_pid = int(pid_file.read_text())
    assert psutil.Process(old_pid).name().startswith("nats-server")
    os.kill(old_pid, signal.SIGKILL)
    killed = time.monotonic()

    def bus_ok() -> bool:
        response = f.api.call("GET", "/status", ok=())
        return response.status_code == 200 and response.json()["nats"]["ok"]

    wait_for("the control plane's NATS connection back", bus_ok, 30)
    new_pid = int(pid_file.read_text())
    assert new_pid != old_pid and psutil.pid_exists(new_pid)
    # The store survived: readings, logs; and the NATS-backed API works (history, artifact download).
    assert len(_history(f)) == f.acknowledged["history"]
    assert _log_has(f, "marker-before-kill")
    echo = f.api.call("GET", "/models/echo/download", "ada2").content
    assert hashlib.sha256(echo).hexdigest() == f.acknowledged["echo_sha"]
    # Devices publish again (their NATS users were restored), and ingest picked them up again.
    wait_for(
        "new readings stored after the NATS restart",
        lambda: _publish_readings(f, 3) or len(_history(f)) >= f.acknowledged["history"] + 3,
        30,
        every=1.0,
    )
    # The workload reconnected too (heartbeats flow again) and was not started a second time.
    workload = f.acknowledged["workload"]

    def heartbeat_after_kill() -> bool:
        beat = f.api.get(f"/workloads/{workload}")["last_heartbeat"]
        return bool(beat) and time.time() - _epoch(beat) < time.monotonic() - killed

    wait_for("a heartbeat of the echo workload after the NATS restart", heartbeat_after_kill, 30)
    assert copies([workload])[workload] == 1
    print(f"\nnats-server SIGKILL: bus back and devices ingesting {time.monotonic() - killed:.1f}s later")


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


def test_sigkill_of_a_workload_restarts_it_once(faulty: Faulty) -> None:
    f = faulty
    workload = f.acknowledged["workload"]
    pids = serving_processes()[workload]
    assert len(pids) == 1
    restarts = f.api.get(f"/workloads/{workload}")["restarts"]
    with contextlib.suppress(psutil.NoSuchProcess):
        psutil.Process(pids[0]).kill()
    again = wait_for(
        "the echo server running again under a new pid",
        lambda: (p := serving_processes().get(workload)) and p[0] != pids[0] and p,
        30,
    )
    running = wait_for("echo serving again", lambda: _echo_serving(f), 30)
    assert _predict(f, running[0]["endpoint"], 5) == 10
    assert len(again) == 1 and copies([workload])[workload] == 1
    wait_for("the restart counted", lambda: f.api.get(f"/workloads/{workload}")["restarts"] >= restarts + 1, 30)
