"""SIGKILL of the scheduler and of the log collector, each run as its own processes (two replicas each, as an
operator would under a process manager): `aiot up --without scheduler --without log-collector` plus
`aiot service run scheduler` twice and `aiot service run log-collector` twice, on one data directory.

Scheduler: the replica that claimed a run is killed at once (perhaps before its start went through); the run is
started once and stopped at its end by the other replica, and a replacement replica fires nothing a second
time. Log collector: a replica is killed; records logged while it is dead are in the stream (the collector only
archives it), and a replacement starts cleanly (its catch-up pass) beside the survivor.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest

from tests.conftest import free_port
from tests.support.processes import RunningPlatform, start_platform

from .conftest import Api, populate, wait_for

pytestmark = pytest.mark.slow


@dataclass
class Replicated:
    api: Api
    data_dir: Path
    port: int
    instance: str
    stack: contextlib.ExitStack
    replicas: dict[str, list[RunningPlatform]] = field(default_factory=dict)

    def start_replica(self, service: str) -> RunningPlatform:
        proc = self.stack.enter_context(start_platform(self.data_dir, self.port, ("run", service), command="service"))
        wait_for(f"{service} replica {proc.proc.pid} started", lambda: _started(proc, service), 60)
        self.replicas.setdefault(service, []).append(proc)
        return proc


def _started(proc: RunningPlatform, service: str) -> bool:
    if proc.proc.poll() is not None:
        raise AssertionError(f"`aiot service run {service}` exited with {proc.proc.returncode}:\n{proc.log()}")
    return f"service {service} started" in proc.log()


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicated]:
    tmp = tmp_path_factory.mktemp("replicas")
    data_dir, port = tmp / "data", free_port()
    with contextlib.ExitStack() as stack:
        plane = stack.enter_context(
            start_platform(data_dir, port, ("--without", "scheduler", "--without", "log-collector"))
        )
        plane.wait_healthy(60)
        api = Api(plane.url)
        pop = populate(api, tmp, devices=1)
        r = Replicated(api, data_dir, port, pop.ids["instance"], stack)
        for service in ("scheduler", "scheduler", "log-collector", "log-collector"):
            r.start_replica(service)
        yield r


def test_the_control_plane_runs_neither_itself(replicated: Replicated) -> None:
    services = replicated.api.get("/status")["services"]
    assert "scheduler" not in services and "log-collector" not in services
    assert "api" in services and "deployer" in services


def _occurrences(r: Replicated, schedule: str) -> list[dict]:
    return r.api.get(f"/schedules/{schedule}/occurrences", "eve")


def test_sigkill_of_the_scheduler_replica_running_a_run_hands_it_to_the_other(replicated: Replicated) -> None:
    r = replicated
    now = datetime.now(UTC)
    if now.second >= 50:  # keep the run's end more than a minute away
        time.sleep(61 - now.second)
        now = datetime.now(UTC)
    # A two-minute run that began at the top of this minute: due now (late by under a minute, within the deadline).
    spec = {
        "timezone": "UTC",
        "start_date": str(now.date()),
        "end_date": str(now.date()),
        "times": [now.strftime("%H:%M")],
        "duration_minutes": 2,
    }
    schedule = r.api.call(
        "POST",
        "/schedules",
        "eve",
        json={"app_instance_id": r.instance, "spec": spec, "policy": {"late_start_deadline_s": 120}},
    ).json()["id"]
    claimed = wait_for(
        "the run claimed by one replica",
        lambda: [o for o in _occurrences(r, schedule) if o["state"] in ("starting", "started")],
        20,
        every=0.05,
    )
    assert len(claimed) == 1 and len(_occurrences(r, schedule)) == 1
    pids = {p.proc.pid: p for p in r.replicas["scheduler"]}
    killed_pid = int(claimed[0]["fired_by"].split(":")[1])
    assert killed_pid in pids, (claimed[0]["fired_by"], list(pids))
    pids[killed_pid].kill(signal.SIGKILL)  # at once: perhaps between its claim and its start (then B takes over)
    assert not psutil.pid_exists(killed_pid) or psutil.Process(killed_pid).status() == psutil.STATUS_ZOMBIE

    # The run is started (by the killed replica, or after STALE_START by the survivor), then stopped at its end
    # by the survivor, exactly once.
    wait_for("the run started", lambda: _occurrences(r, schedule)[0]["state"] == "started", 40)
    assert r.api.get(f"/instances/{r.instance}", "eve")["state"] == "running"
    end = datetime.fromisoformat(claimed[0]["end_utc"])
    stopped = wait_for(
        "the run stopped by the surviving replica",
        lambda: [o for o in _occurrences(r, schedule) if o["state"] == "stopped"],
        max(0.0, (end - datetime.now(UTC)).total_seconds()) + 20,
    )
    assert len(stopped) == 1 and stopped[0]["id"] == claimed[0]["id"]
    assert datetime.fromisoformat(stopped[0]["stopped_at"]) >= end - timedelta(seconds=1)
    wait_for("the instance stopped", lambda: r.api.get(f"/instances/{r.instance}", "eve")["state"] == "idle", 30)

    # A replacement replica (what the process manager starts) fires nothing again.
    r.start_replica("scheduler")
    time.sleep(3)
    occurrences = _occurrences(r, schedule)
    assert [(o["id"], o["state"]) for o in occurrences] == [(claimed[0]["id"], "stopped")]
    assert r.api.get(f"/instances/{r.instance}", "eve")["state"] == "idle"


def test_sigkill_of_a_log_collector_replica_loses_no_record(replicated: Replicated) -> None:
    r = replicated
    victim = r.replicas["log-collector"][0]
    victim.kill(signal.SIGKILL)
    # Records logged while a collector is dead reach the stream (the collector archives it, it does not carry it).
    r.api.call(
        "POST",
        "/users",
        json={"username": "logged-while-collector-dead", "password": "marker-password-1", "role": "end_user"},
    )
    wait_for(
        "the record in the log stream",
        lambda: r.api.get("/logs?text=logged-while-collector-dead&limit=10")["count"] > 0,
        30,
    )
    survivor = r.replicas["log-collector"][1]
    assert survivor.proc.poll() is None
    replacement = r.start_replica("log-collector")
    time.sleep(2)
    for proc in (survivor, replacement):
        assert proc.proc.poll() is None
        assert "Traceback" not in proc.log(), proc.log()
    assert r.api.get("/logs/archives") is not None  # the archive listing still answers
