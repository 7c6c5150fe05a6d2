"""Plain MQTT devices (the example scripts: paho-mqtt + stdlib only, run as subprocesses) against a real
nats-server MQTT listener with per-device users built from `device_permissions`."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path

from prometheus_client import CollectorRegistry

from aiot.bus import codec
from aiot.devices import subjects
from aiot.devices.ingest import Ingest
from aiot.devices.simulators.types import SIM_TYPES

from .conftest import CONTROLLER_ID, SENSOR_ID, DictDirectory
from .helpers import wait_until

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "devices"


def _script(name: str, server, device_id: str, password: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            str(EXAMPLES / name),
            "--host",
            "127.0.0.1",
            "--port",
            str(server.mqtt_port),
            "--username",
            device_id,
            "--password",
            password,
            "--device-id",
            device_id,
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def _read_line(proc: subprocess.Popen, within: float = 15.0) -> str:
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), within)
    return line.strip()


async def test_plain_mqtt_sensor_and_controller_end_to_end(secured_server, platform_nc):
    ingest = Ingest(
        platform_nc,
        DictDirectory({SENSOR_ID: SIM_TYPES["temperature"], CONTROLLER_ID: SIM_TYPES["fan"]}),
        registry=CollectorRegistry(),
    )
    await ingest.start()
    states: list[dict] = []

    async def on_state(msg):
        states.append(json.loads(msg.data))

    await platform_nc.subscribe(subjects.state_subject(CONTROLLER_ID), cb=on_state)
    sensor = _script(
        "plain_mqtt_sensor.py", secured_server, SENSOR_ID, "sensor-pw", "--count", "3", "--interval", "0.1"
    )
    controller = _script("plain_mqtt_controller.py", secured_server, CONTROLLER_ID, "ctrl-pw", "--kind", "fan")
    try:
        # sensor: its readings pass validation and reach latest + history
        out, err = await asyncio.to_thread(sensor.communicate, timeout=30)
        assert sensor.returncode == 0, err
        assert "sent 3" in out
        await wait_until(lambda: ingest.accepted >= 3, within=10)
        await ingest.wait_stored()
        history = await ingest.history(SENSOR_ID)
        assert len(history) == 3 and all(set(r.values) == {"temperature"} for r in history)
        assert (await ingest.latest(SENSOR_ID)).values == history[-1].values
        assert ingest.rejected == {}
        assert (await ingest.presence(SENSOR_ID))["status"] == "offline"  # said goodbye at the end

        # controller: a command on its cmd subject comes back as state carrying the same cmd_id
        assert await _read_line(controller) == "ready"
        cmd_id = "c_" + uuid.uuid4().hex[:10]
        await platform_nc.publish(
            subjects.cmd_subject(CONTROLLER_ID),
            codec.encode_command(cmd_id, "set_speed", {"speed": 2}, type_def=SIM_TYPES["fan"]),
        )
        await wait_until(lambda: any(s.get("cmd_id") == cmd_id for s in states), within=10)
        ack = next(s for s in states if s.get("cmd_id") == cmd_id)
        assert ack["state"] == {"power": True, "speed": 2} and ack["error"] is None
        await wait_until(lambda: ingest.accepted >= 5, within=5)  # initial state + ack validated too
        await ingest.wait_stored()
        latest = await ingest.latest(CONTROLLER_ID)
        assert latest.channel == "state" and latest.cmd_id == cmd_id

        # a refused command is acknowledged with an error, state unchanged
        bad_id = "c_" + uuid.uuid4().hex[:10]
        await platform_nc.publish(
            subjects.cmd_subject(CONTROLLER_ID), codec.encode_command(bad_id, "set_speed", {"speed": 9})
        )
        await wait_until(lambda: any(s.get("cmd_id") == bad_id for s in states), within=10)
        nack = next(s for s in states if s.get("cmd_id") == bad_id)
        assert nack["error"] and nack["state"] == {"power": True, "speed": 2}
    finally:
        for proc in (sensor, controller):
            if proc.poll() is None:
                proc.terminate()
                await asyncio.to_thread(proc.wait, 10)
        await ingest.stop()
