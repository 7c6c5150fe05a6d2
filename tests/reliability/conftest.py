"""Fixtures for the reliability suite: a real control plane (`aiot up`) populated like a small deployment,
a 2-node cluster with a warm workload environment, and helpers to talk to both.

Why a subprocess and not the in-process app: faults (SIGKILL, disk full, slow sockets) and load need the real
server (uvicorn, its event loop, its log file, its own NATS), exactly what an operator runs.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.conftest import free_port
from tests.support.processes import RunningPlatform, start_platform

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parents[1] / "examples"
ECHO = HERE / "fixtures" / "echo"
ADMIN_PASSWORD = "admin-password-1"  # what tests.support.processes.platform_env sets
USER_PASSWORD = "reliable-horse-battery-7"
PEOPLE = {
    "ada": "ai_developer",
    "ada2": "ai_developer",
    "dev": "app_developer",
    "dev2": "app_developer",
    "eve": "end_user",
    "eve2": "end_user",
}
ROLE_USER = {"admin": "admin", "ai_developer": "ada", "app_developer": "dev", "end_user": "eve"}


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 30.0, every: float = 0.2) -> Any:
    """Poll `probe` until it returns something truthy; fail naming `what` and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except (httpx.HTTPError, OSError) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


@dataclass
class Api:
    """A running control plane spoken to over real HTTP, with a token per person."""

    url: str
    tokens: dict[str, str] = field(default_factory=dict)

    def h(self, who: str | None) -> dict[str, str]:
        if who is None:
            return {}
        return {"Authorization": f"Bearer {self.tokens[ROLE_USER.get(who, who)]}"}

    def call(
        self,
        method: str,
        path: str,
        who: str | None = "admin",
        ok: tuple[int, ...] = (200, 201, 204),
        timeout: float = 60,
        **kwargs: Any,
    ) -> httpx.Response:
        headers = {**self.h(who), **kwargs.pop("headers", {})}
        response = httpx.request(method, f"{self.url}/api/v1{path}", headers=headers, timeout=timeout, **kwargs)
        if ok and response.status_code not in ok:
            raise AssertionError(f"{method} {path} as {who}: {response.status_code} {response.text[:500]}")
        return response

    def get(self, path: str, who: str | None = "admin") -> Any:
        return self.call("GET", path, who).json()

    def login(self, username: str, password: str) -> str:
        body = self.call("POST", "/auth/login", None, json={"username": username, "password": password}).json()
        self.tokens[username] = body["token"]
        return body["token"]


@dataclass
class Population:
    """What `populate` made, and every secret it was handed (for the leak checks)."""

    ids: dict[str, str] = field(default_factory=dict)
    devices: dict[str, dict] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)


def zipped(folder: Path, dest_dir: Path) -> bytes:
    from aiot.artifacts.packing import zip_folder

    return zip_folder(folder, dest_dir / f"{folder.name}-{time.monotonic_ns()}.zip").read_bytes()


def populate(api: Api, work: Path, devices: int = 2) -> Population:
    """Users of every role (two each), device types, a location with sensors and controllers, the comfort and
    echo models, the smart-classroom app, an app instance and a schedule for `eve`, a join token."""
    pop = Population()
    api.login("admin", ADMIN_PASSWORD)
    pop.secrets["admin password"] = ADMIN_PASSWORD
    pop.secrets["admin token"] = api.tokens["admin"]
    for name, role in PEOPLE.items():
        api.call("POST", "/users", json={"username": name, "password": USER_PASSWORD, "role": role})
        pop.secrets[f"{name} token"] = api.login(name, USER_PASSWORD)
    pop.secrets["user password"] = USER_PASSWORD
    for kind in ("temperature", "light", "lamp", "fan", "ac"):
        api.call("POST", "/device-types", content=(EXAMPLES / "device-types" / f"{kind}.json").read_bytes())
    pop.ids["location"] = api.call(
        "POST", "/locations", json={"name": "School", "kind": "school", "timezone": "Asia/Kolkata"}
    ).json()["id"]
    # `devices` thermometers, up to two lights, one of each controller; registered four at a time (each
    # registration hashes a password and updates the NATS users: the load test registers 100).
    names = [
        (kind, i)
        for kind, count in (("temperature", devices), ("light", min(devices, 2)), ("lamp", 1), ("fan", 1), ("ac", 1))
        for i in range(count)
    ]

    def register(kind: str, i: int) -> dict:
        return api.call(
            "POST", "/devices", json={"name": f"{kind}-{i}", "device_type": kind, "location": "School"}
        ).json()

    with ThreadPoolExecutor(4) as pool:
        for (kind, i), made in zip(names, pool.map(lambda n: register(*n), names), strict=True):
            pop.devices[f"{kind}-{i}"] = made
            pop.secrets[f"device {kind}-{i} password"] = made["connect"]["password"]
    zip_headers = {"Content-Type": "application/zip"}
    pop.ids["comfort"] = api.call(
        "POST", "/models", "ada", content=zipped(EXAMPLES / "models" / "comfort", work), headers=zip_headers
    ).json()["id"]
    pop.ids["echo"] = api.call("POST", "/models", "ada2", content=zipped(ECHO, work), headers=zip_headers).json()["id"]
    pop.ids["app"] = api.call(
        "POST", "/apps", "dev", content=zipped(EXAMPLES / "apps" / "smart-classroom", work), headers=zip_headers
    ).json()["id"]
    for person in ("eve", "dev"):  # eve binds her app there, dev looks at the devices (the load test's mix)
        api.call("POST", "/locations/School/grants", json={"user": person})
    bindings = {"temperature": [pop.devices["temperature-0"]["id"]], "light": [pop.devices["light-0"]["id"]]}
    pop.ids["instance"] = api.call(
        "POST", "/instances", "eve", json={"app": "smart-classroom", "location": "School", "bindings": bindings}
    ).json()["id"]
    today = date.today()
    spec = {
        "timezone": "Asia/Kolkata",
        "start_date": str(today + timedelta(days=30)),
        "end_date": str(today + timedelta(days=40)),
        "times": ["09:00"],
        "duration_minutes": 30,
    }
    pop.ids["schedule"] = api.call(
        "POST", "/schedules", "eve", json={"app_instance_id": pop.ids["instance"], "spec": spec}
    ).json()["id"]
    pop.secrets["join token"] = api.call("POST", "/nodes/join-tokens").json()["token"]
    return pop


@dataclass
class Deployment:
    """A real `aiot up` in a temp dir, populated."""

    plane: RunningPlatform
    data_dir: Path
    api: Api
    pop: Population


def start_populated(tmp: Path, args: tuple[str, ...] = (), devices: int = 2, **env: str) -> Iterator[Deployment]:
    data_dir = tmp / "data"
    with start_platform(data_dir, free_port(), args, **env) as plane:
        plane.wait_healthy(60)
        api = Api(plane.url)
        yield Deployment(plane, data_dir, api, populate(api, tmp, devices))


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """A populated control plane without nodes, one per test module (modules may change its state)."""
    yield from start_populated(tmp_path_factory.mktemp("plane"))


# ------------------------------------------------------------------------------------------ clusters


@pytest.fixture(scope="session")
def warm_envs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An env cache holding the echo model's environment (the SDK's requirements only), built once per
    session; each cluster gets a hard-linked copy, so no test waits for PyPI twice."""
    from aiot.agent.envs import EnvBuilder, read_requirements_file

    cache = tmp_path_factory.mktemp("warm-envs")
    started = time.monotonic()
    asyncio.run(EnvBuilder(cache).build(read_requirements_file(ECHO / "requirements.txt")))
    print(f"\nwarm env built in {time.monotonic() - started:.1f}s")
    return cache


def seed_envs(warm: Path, data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-al", str(warm), str(data_dir / "envs")], check=True)


def serving_processes() -> dict[str, list[int]]:
    """workload id -> pids of `platform_sdk.serving` processes running it (to prove nothing runs twice)."""
    found: dict[str, list[int]] = {}
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmd = " ".join(proc.info["cmdline"] or [])
            if "platform_sdk.serving" not in cmd or "bwrap" in cmd:
                continue
            config = proc.environ().get("AIOT_WORKLOAD_CONFIG", "")
        except psutil.Error:
            continue
        if config:
            try:
                workload = json.loads(Path(config).read_text())["workload_id"]
            except (OSError, ValueError, KeyError):
                workload = Path(config).parent.name.split("-g")[0]
            found.setdefault(workload, []).append(proc.pid)
    return found


def copies(workload_ids: list[str]) -> Counter[str]:
    running = serving_processes()
    return Counter({w: len(running.get(w, [])) for w in workload_ids})
