"""The CLI for scripts: `-o json` prints the API's JSON (same fields) on every data command, `-o yaml` too;
`aiot logs` searches and follows (-f) the central log; `aiot device history --since ... --csv` exports readings.

A real control plane (API + ingest + embedded NATS, uvicorn on a free port); the CLI runs in process through
typer's runner, in a worker thread (the server runs on this test's event loop).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import nats
import pytest
import yaml
from typer.testing import CliRunner

from aiot.cli.main import app as cli
from aiot.launch.http_app import create_app
from aiot.logs.records import LogRecord, workload_subject
from aiot.logs.stream import ensure_logs_stream
from aiot.store.models import Role
from tests.deployer.helpers import EXAMPLES
from tests.logs.conftest import serve
from tests.support.live import LivePlatform, live_platform

pytestmark = pytest.mark.timeout(180)
AIOT = str(Path(sys.executable).parent / "aiot")


async def _aiot(url: str, token: str, *args: str) -> str:
    env = {"AIOT_SERVER": url, "AIOT_TOKEN": token}
    ran = await asyncio.to_thread(CliRunner().invoke, cli, list(args), env=env)
    assert ran.exit_code == 0, (args, ran.output, ran.exception)
    return ran.output


async def _api(live: LivePlatform, path: str, who: Role = Role.admin, **params: object) -> object:
    response = await live.client.get(f"/api/v1{path}", headers=live.headers(who), params=params or None)
    assert response.status_code == 200, response.text
    return response.json()


async def test_json_and_yaml_are_the_apis_answer_and_logs_and_history_work(tmp_path: Path) -> None:
    async with live_platform(tmp_path, services=("nats-auth", "ingest")) as live, serve(create_app(live.ctx)) as url:
        admin, dev = live.tokens[Role.admin.value], live.tokens[Role.ai_developer.value]
        body = (EXAMPLES / "device-types" / "temperature.json").read_bytes()
        assert (
            await live.client.post("/api/v1/device-types", content=body, headers=live.headers(Role.admin))
        ).status_code == 201
        await live.client.post(
            "/api/v1/locations",
            headers=live.headers(Role.admin),
            json={"name": "Lab", "kind": "school", "timezone": "UTC"},
        )
        made = await live.client.post(
            "/api/v1/devices",
            headers=live.headers(Role.admin),
            json={"name": "thermo", "device_type": "temperature", "location": "Lab"},
        )
        device = made.json()
        await _aiot(url, dev, "model", "push", str(EXAMPLES / "models" / "comfort"))

        for args, path, who, token in (
            (("device", "ls"), "/devices", Role.admin, admin),
            (("location", "ls"), "/locations", Role.admin, admin),
            (("location", "show", "Lab"), "/locations/Lab", Role.admin, admin),
            (("device-type", "ls"), "/device-types", Role.admin, admin),
            (("users", "ls"), "/users", Role.admin, admin),
            (("node", "ls"), "/nodes", Role.admin, admin),
            (("workloads", "ls"), "/workloads", Role.admin, admin),
            (("instance", "ls"), "/instances", Role.admin, admin),
            (("model", "ls"), "/models", Role.ai_developer, dev),
            (("model", "show", "comfort"), "/models/comfort", Role.ai_developer, dev),
            (("location", "grants", "Lab"), "/locations/Lab/grants", Role.admin, admin),
            (("device", "latest", device["id"]), f"/devices/{device['id']}/latest", Role.admin, admin),
            (("model", "history", "comfort"), "/models/comfort/rollouts", Role.ai_developer, dev),
            (("status",), "/status", Role.admin, admin),
        ):
            expected = await _api(live, path, who)
            printed = json.loads(await _aiot(url, token, *args, "-o", "json"))
            if path == "/status":  # live figures (uptime, health) change between the two calls: same fields
                assert set(printed) == set(expected), args
            else:
                assert printed == expected, args
            assert yaml.safe_load(await _aiot(url, token, *args, "-o", "yaml")) == json.loads(json.dumps(printed))
        # commands that create something print the API's answer too
        made = json.loads(await _aiot(url, admin, "location", "add", "Lab2", "--tz", "Europe/Paris", "-o", "json"))
        shown = await _api(live, "/locations/Lab2")
        counts = ("device_count", "devices")  # the detail adds the devices; creating answers the location itself
        assert {k: v for k, v in made.items() if k not in counts} == {k: v for k, v in shown.items() if k not in counts}
        added = json.loads(
            await _aiot(url, admin, "device", "add", "t2", "--type", "temperature", "--location", "Lab2", "-o", "json")
        )
        assert added["connect"]["username"] == added["id"] and added["location"] == "Lab2"
        pushed = yaml.safe_load(
            await _aiot(url, dev, "model", "push", str(EXAMPLES / "models" / "comfort"), "-o", "yaml")
        )
        assert pushed == await _api(live, f"/models/{pushed['id']}", Role.ai_developer)
        table = await _aiot(url, admin, "device", "ls")
        assert device["id"] in table  # ids are printed whole, not cut short

        # history: two readings from the device itself, exported since 10 minutes ago
        creds = device["connect"]
        client = await nats.connect(creds["nats_url"], user=creds["username"], password=creds["password"])
        for value in (21.5, 22.5):
            await client.publish(creds["subjects"]["data"], json.dumps({"temperature": value}).encode())
        await client.flush()
        await client.close()
        deadline = time.monotonic() + 10
        while len(await _api(live, f"/devices/{device['id']}/history")) < 2:  # type: ignore[arg-type]
            assert time.monotonic() < deadline, "readings not stored"
            await asyncio.sleep(0.2)
        rows = list(
            csv.DictReader(
                io.StringIO(await _aiot(url, admin, "device", "history", device["id"], "--since", "10m", "--csv"))
            )
        )
        assert [r["temperature"] for r in rows] == ["21.5", "22.5"] and all(r["channel"] == "data" for r in rows)
        future = datetime.now(UTC).replace(year=datetime.now(UTC).year + 1).isoformat()
        assert (
            json.loads(await _aiot(url, admin, "device", "history", device["id"], "--since", future, "-o", "json"))
            == []
        )

        # logs: search with filters, and follow a line published after the follower started
        await ensure_logs_stream(live.ctx.bus, live.ctx.settings)
        for level, text in (("INFO", "boring line"), ("ERROR", "disk on fire")):
            record = LogRecord(
                ts=datetime.now(UTC), level=level, service="workload", workload_id="wl_clitest01", message=text
            )
            await live.ctx.bus.publish(workload_subject("wl_clitest01"), json.dumps(record.to_json()).encode())
        deadline = time.monotonic() + 20
        while not (
            found := json.loads(await _aiot(url, admin, "logs", "-w", "wl_clitest01", "--level", "ERROR", "-o", "json"))
        )["records"]:
            assert time.monotonic() < deadline, "the log records never reached the stream"
            await asyncio.sleep(0.3)
        assert [r["message"] for r in found["records"]] == ["disk on fire"]
        assert "boring line" in await _aiot(url, admin, "logs", "-w", "wl_clitest01", "--grep", "BORING")

        env = {**os.environ, "AIOT_SERVER": url, "AIOT_TOKEN": admin}
        follower = subprocess.Popen(
            [AIOT, "logs", "-f", "-w", "wl_clitest01", "-o", "json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # the follower connects when its process is up (seconds on a loaded machine): publish until it prints
            reading = asyncio.ensure_future(asyncio.to_thread(follower.stdout.readline))  # type: ignore[union-attr]
            deadline = time.monotonic() + 60
            while not reading.done():
                assert time.monotonic() < deadline, "aiot logs -f printed nothing"
                record = LogRecord(
                    ts=datetime.now(UTC),
                    level="WARNING",
                    service="workload",
                    workload_id="wl_clitest01",
                    message="published after the follower started",
                )
                await live.ctx.bus.publish(workload_subject("wl_clitest01"), json.dumps(record.to_json()).encode())
                await asyncio.wait({reading}, timeout=0.5)
            assert json.loads(reading.result())["message"] == "published after the follower started"
        finally:
            follower.kill()
            follower.wait(5)
