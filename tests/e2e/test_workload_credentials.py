"""A running app's own NATS credentials reach only what its instance is bound to (issues "Apps" and "Reliability").

A real platform (`aiot up --nodes 1`) runs smart-classroom at one school; an identical set of devices exists at
another. The test reads the credentials the agent generated for the app's process (its config file, as the app
itself does) and uses them directly with nats-py: the bound thermometer's readings, the bound fan's commands and
the bound model's resolver are allowed; the other school's devices, another model, another workload's log and
heartbeat subjects, and JetStream/KV are refused by the server, and nothing refused reaches the bus.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import psutil
import pytest
from nats.aio.msg import Msg

from aiot.artifacts.packing import zip_folder
from aiot.devices.subjects import cmd_subject, readings_subject, state_subject
from tests.conftest import free_port
from tests.support.processes import RunningPlatform, start_platform

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DEVICES = ("temperature", "light", "fan", "ac", "lamp")


class Api:
    def __init__(self, plane: RunningPlatform) -> None:
        self.plane = plane
        self.token = self.login("admin", "admin-password-1")

    def login(self, user: str, password: str) -> str:
        response = httpx.post(f"{self.plane.url}/api/v1/auth/login", json={"username": user, "password": password})
        assert response.status_code == 200, response.text
        return response.json()["token"]

    def call(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {token or self.token}", **kwargs.pop("headers", {})}
        response = httpx.request(method, f"{self.plane.url}/api/v1{path}", headers=headers, timeout=120, **kwargs)
        assert response.status_code in (200, 201), f"{method} {path}: {response.status_code} {response.text}"
        return response.json() if response.content else None


@pytest.fixture(scope="module")
def running_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("creds")
    with start_platform(tmp / "data", free_port(), ("--nodes", "1")) as plane:
        plane.wait_healthy(60)
        api = Api(plane)
        for name in DEVICES:
            path = EXAMPLES / "device-types" / f"{name}.json"
            api.call("POST", "/device-types", content=path.read_bytes(), headers={"X-Filename": path.name})
        models = {}
        for folder, collection in (
            ("models/comfort", "models"),
            ("models/face-detector", "models"),
            ("apps/smart-classroom", "apps"),
        ):
            archive = zip_folder(EXAMPLES / folder, tmp / (folder.replace("/", "-") + ".zip"))
            out = api.call(
                "POST", f"/{collection}", content=archive.read_bytes(), headers={"Content-Type": "application/zip"}
            )
            models[folder.split("/")[1]] = out["id"]
        devices: dict[str, dict[str, str]] = {}
        for school in ("North School", "South School"):
            api.call("POST", "/locations", json={"name": school, "kind": "school", "timezone": "Asia/Kolkata"})
            devices[school] = {}
            for type_name in DEVICES:
                out = api.call(
                    "POST", "/devices", json={"name": f"{type_name}-1", "device_type": type_name, "location": school}
                )
                devices[school][type_name] = out["id"]
        api.call(
            "POST",
            "/users",
            json={"username": "eve", "password": "eve-password-1", "role": "end_user", "email": "eve@example.com"},
        )
        api.call("POST", "/locations/North School/grants", json={"user": "eve"})
        eve = api.login("eve", "eve-password-1")
        instance = api.call("POST", "/instances", eve, json={"app": "smart-classroom", "location": "North School"})
        api.call("POST", f"/instances/{instance['id']}/run", eve, json={"minutes": 30})

        def config() -> dict | None:
            workload_id = api.call("GET", f"/instances/{instance['id']}", eve)["workload_id"]
            for proc in psutil.process_iter(["cmdline"]):
                try:
                    path = proc.environ().get("AIOT_WORKLOAD_CONFIG", "")
                    if workload_id and workload_id in path and Path(path).exists():
                        return json.loads(Path(path).read_text())
                except psutil.Error:
                    continue
            return None

        deadline, found = time.monotonic() + 180, None
        while found is None and time.monotonic() < deadline:
            found = config()
            time.sleep(0.5)
        assert found is not None, plane.log()[-3000:]
        yield {"config": found, "devices": devices, "models": models, "api": api}


class Probe:
    """A client with the workload's credentials that records the server's permission errors."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.nc: Any = None

    async def connect(self, cfg: dict) -> Probe:
        async def on_error(exc: Exception) -> None:
            self.errors.append(str(exc))

        nats_cfg = cfg["nats"]
        self.nc = await nats.connect(
            nats_cfg["servers"],
            user=nats_cfg["user"],
            password=nats_cfg["password"],
            inbox_prefix=f"_INBOX_{cfg['workload_id']}",
            error_cb=on_error,
            allow_reconnect=False,
        )
        return self

    async def refused(self, subject: str) -> bool:
        """Whether the server reported a permission violation naming `subject` (waits briefly)."""
        for _ in range(40):
            # nats-py lower-cases the server's -ERR text, subject included.
            if any("permissions violation" in e.lower() and subject.lower() in e.lower() for e in self.errors):
                return True
            await asyncio.sleep(0.05)
        return False


async def test_workload_credentials_reach_only_its_bindings(running_app: dict[str, Any]) -> None:
    cfg, devices, models = running_app["config"], running_app["devices"], running_app["models"]
    mine, theirs = devices["North School"], devices["South School"]
    assert {d["device_id"] for d in cfg["sensors"]["temperature"]} == {mine["temperature"]}
    assert {d["device_id"] for d in cfg["controllers"]["fan"]} == {mine["fan"]}

    platform_cfg = json.loads(
        (Path(running_app["api"].plane.log_path).parent / "nats" / "platform-credentials.json").read_text()
    )
    state = json.loads((Path(running_app["api"].plane.log_path).parent / "nats" / "state.json").read_text())
    watcher = await nats.connect(
        f"nats://127.0.0.1:{state['client_port']}", user="aiot-platform", password=platform_cfg["password"]
    )
    seen: list[str] = []

    async def record(msg: Msg) -> None:
        seen.append(msg.subject)

    await watcher.subscribe(cmd_subject(theirs["fan"]), cb=record)
    await watcher.subscribe(f"aiot.logs.{'wl_someoneelse'}", cb=record)
    await watcher.flush()

    probe = await Probe().connect(cfg)
    try:
        # Allowed: its own sensor's readings, its own controller's state, its own model's resolver.
        await probe.nc.subscribe(readings_subject(mine["temperature"]))
        await probe.nc.subscribe(state_subject(mine["fan"]))
        answer = await probe.nc.request(f"aiot.registry.resolve.{models['comfort']}", b"", timeout=5)
        assert "endpoints" in json.loads(answer.data)
        await probe.nc.flush()
        await asyncio.sleep(0.5)
        assert probe.errors == [], probe.errors

        # Refused: the other school's devices, another model, others' log/heartbeat subjects, JetStream.
        await probe.nc.subscribe(readings_subject(theirs["temperature"]))
        assert await probe.refused(readings_subject(theirs["temperature"])), probe.errors
        await probe.nc.subscribe(state_subject(theirs["fan"]))
        assert await probe.refused(state_subject(theirs["fan"]))
        await probe.nc.publish(cmd_subject(theirs["fan"]), b'{"command": "on"}')
        assert await probe.refused(cmd_subject(theirs["fan"]))
        for subject in (
            f"aiot.registry.resolve.{models['face-detector']}",
            f"aiot.registry.latest.{theirs['light']}",
            "aiot.logs.wl_someoneelse",
            "aiot.hb.wl_someoneelse",
            "$JS.API.STREAM.LIST",
            f"$KV.aiot_device_latest.{theirs['fan']}",
            f"aiot.registry.announce.{models['comfort']}",
            f"aiot.registry.announce.{models['comfort']}.{cfg['workload_id']}",
        ):
            await probe.nc.publish(subject, b"{}")
            assert await probe.refused(subject), (subject, probe.errors)
        await probe.nc.subscribe(">")
        assert await probe.refused(">")
        await asyncio.sleep(0.5)
        assert seen == []  # nothing refused reached anyone
    finally:
        await probe.nc.close()
        await watcher.close()
