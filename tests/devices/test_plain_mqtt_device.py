"""Issue acceptance: a plain paho-mqtt device with its issued credential works end to end through the platform,
and the server refuses what the credential does not allow."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import nats
import paho.mqtt.client as mqtt
import pytest

from aiot.store.models import Role
from tests.support.live import LivePlatform, live_platform

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
pytestmark = pytest.mark.slow


async def _setup(live: LivePlatform) -> tuple[dict, dict]:
    admin = live.headers(Role.admin)
    for name in ("temperature", "lamp"):
        body = (EXAMPLES / "device-types" / f"{name}.json").read_bytes()
        assert (await live.client.post("/api/v1/device-types", content=body, headers=admin)).status_code == 201
    loc = await live.client.post(
        "/api/v1/locations", headers=admin, json={"name": "Green School", "kind": "school", "timezone": "Asia/Kolkata"}
    )
    assert loc.status_code == 201, loc.text
    sensor = await live.client.post(
        "/api/v1/devices",
        headers=admin,
        json={"name": "thermo-1", "device_type": "temperature", "location": "Green School"},
    )
    lamp = await live.client.post(
        "/api/v1/devices", headers=admin, json={"name": "lamp-1", "device_type": "lamp", "location": "Green School"}
    )
    assert sensor.status_code == lamp.status_code == 201, sensor.text
    granted = await live.client.post("/api/v1/locations/Green School/grants", headers=admin, json={"user": "enduser1"})
    assert granted.status_code == 201, granted.text  # the end user reads readings only where granted
    await asyncio.sleep(0.5)  # let the auth service apply the new users
    return sensor.json(), lamp.json()


class MqttDevice:
    """A paho-mqtt client recording connection events (runs paho's network loop in its thread)."""

    def __init__(self, connect: dict) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=connect["username"])
        self.client.username_pw_set(connect["username"], connect["password"])
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.reason: object = None
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.host, self.port = connect["mqtt_host"], connect["mqtt_port"]

    def _on_connect(self, _c, _u, _f, reason, _p) -> None:  # type: ignore[no-untyped-def]
        self.reason = reason
        if not reason.is_failure:
            self.connected.set()
        else:
            self.disconnected.set()

    def _on_disconnect(self, _c, _u, _f, reason, _p) -> None:  # type: ignore[no-untyped-def]
        self.reason = reason
        self.disconnected.set()

    def start(self) -> MqttDevice:
        self.client.connect(self.host, self.port)
        self.client.loop_start()
        return self

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


async def _wait_for(predicate, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError("condition not met in time")


async def test_plain_mqtt_sensor_and_controller(tmp_path: Path) -> None:
    async with live_platform(tmp_path, services=("nats-auth", "ingest")) as live:
        sensor, lamp = await _setup(live)
        sensor_id, lamp_id = sensor["id"], lamp["id"]
        assert sensor["connect"]["topics"]["data"] == f"aiot/dev/{sensor_id}/data"
        headers = live.headers(Role.end_user)

        # 1. Readings from a plain paho-mqtt client reach the latest-value store and history.
        device = MqttDevice(sensor["connect"]).start()
        try:
            assert await asyncio.to_thread(device.connected.wait, 10), device.reason
            for value in (21.5, 22.0, 22.5):
                device.client.publish(f"aiot/dev/{sensor_id}/data", json.dumps({"temperature": value}), qos=1)

            async def latest_is_last():  # type: ignore[no-untyped-def]
                body = (await live.client.get(f"/api/v1/devices/{sensor_id}/latest", headers=headers)).json()
                return body if body["latest"] and body["latest"]["values"] == {"temperature": 22.5} else None

            await _wait_for(latest_is_last)
            history = (await live.client.get(f"/api/v1/devices/{sensor_id}/history", headers=headers)).json()
            assert [r["values"]["temperature"] for r in history] == [21.5, 22.0, 22.5]

            # 2. Publishing on another device's topic is refused by the server: nothing reaches the lamp's state.
            seen: list[bytes] = []

            async def record(msg) -> None:  # type: ignore[no-untyped-def]
                seen.append(msg.data)

            spy = await live.ctx.bus.subscribe(f"aiot.dev.{lamp_id}.state", record)
            info = device.client.publish(f"aiot/dev/{lamp_id}/state", json.dumps({"state": {"power": True}}), qos=0)
            info.wait_for_publish(5)
            await asyncio.sleep(1.0)
            assert seen == []
            await spy.unsubscribe()

            # The same credential over plain NATS gets an explicit permissions violation.
            errors: list[Exception] = []

            async def on_error(exc: Exception) -> None:
                errors.append(exc)

            nc = await nats.connect(
                live.nats.url, user=sensor_id, password=sensor["connect"]["password"], error_cb=on_error
            )
            await nc.publish(f"aiot.dev.{lamp_id}.state", b"{}")
            await nc.flush()
            await _wait_for(lambda: asyncio.sleep(0, result=bool(errors)), timeout=5)
            assert "permissions violation" in str(errors[0]).lower()
            await nc.close()

            # 3. A command sent through the API reaches a plain MQTT controller (the example script) and is acked.
            controller = subprocess.Popen(
                [
                    sys.executable,
                    str(EXAMPLES / "devices" / "plain_mqtt_controller.py"),
                    "--kind",
                    "lamp",
                    "--host",
                    lamp["connect"]["mqtt_host"],
                    "--port",
                    str(lamp["connect"]["mqtt_port"]),
                    "--username",
                    lamp_id,
                    "--password",
                    lamp["connect"]["password"],
                    "--device-id",
                    lamp_id,
                    "--duration",
                    "60",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            try:

                async def command_acked():  # type: ignore[no-untyped-def]
                    response = await live.client.post(
                        f"/api/v1/devices/{lamp_id}/commands",
                        headers=live.headers(Role.admin),
                        json={"command": "on", "timeout": 2},
                    )
                    return response.json() if response.status_code == 200 else None

                acked = await _wait_for(command_acked, timeout=20)
                assert acked["state"] == {"power": True}
                bad = await live.client.post(
                    f"/api/v1/devices/{lamp_id}/commands", headers=live.headers(Role.admin), json={"command": "explode"}
                )
                assert bad.status_code == 422 and "explode" in bad.json()["error"]["message"]
            finally:
                controller.terminate()
                controller.wait(10)

            # 4. Revoking the credential cuts the connected device off within seconds, and it cannot come back.
            revoked_at = time.monotonic()
            response = await live.client.post(
                f"/api/v1/devices/{sensor_id}/credentials/revoke", headers=live.headers(Role.admin)
            )
            assert response.status_code == 204
            assert await asyncio.to_thread(device.disconnected.wait, 10)
            assert time.monotonic() - revoked_at < 5
        finally:
            device.stop()
        again = MqttDevice(sensor["connect"]).start()
        try:
            assert await asyncio.to_thread(again.disconnected.wait, 10)
            assert not again.connected.is_set()
        finally:
            again.stop()
        listed = (await live.client.get("/api/v1/devices", headers=headers)).json()
        assert {d["id"]: d["credential"] for d in listed}[sensor_id] == "revoked"
