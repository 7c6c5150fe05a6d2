"""MQTT client id = device id: a device credential connecting with another device's client id (which takes over
that device's session and disconnects it) is cut off and refused; the impersonated device keeps working."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import paho.mqtt.client as mqtt

from aiot.store.models import Role
from tests.support.live import LivePlatform, live_platform

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


class Device:
    """A paho client (its network loop in paho's thread, automatic reconnects) that records its CONNACKs."""

    def __init__(self, connect: dict, client_id: str) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        self.client.username_pw_set(connect["username"], connect["password"])
        self.client.reconnect_delay_set(0.2, 0.5)
        self.host, self.port = connect["mqtt_host"], connect["mqtt_port"]
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.refusals: list[str] = []
        self.refused = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect

    def _on_connect(self, _c, _u, _f, reason, _p) -> None:  # type: ignore[no-untyped-def]
        if reason.is_failure:
            self.refusals.append(str(reason))
            self.refused.set()
        else:
            self.connected.set()
            self.disconnected.clear()

    def _on_disconnect(self, _c, _u, _f, _reason, _p) -> None:  # type: ignore[no-untyped-def]
        self.connected.clear()
        self.disconnected.set()

    def start(self) -> Device:
        self.client.connect_async(self.host, self.port)
        self.client.loop_start()
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def _devices(live: LivePlatform) -> tuple[dict, dict]:
    admin = live.headers(Role.admin)
    body = (EXAMPLES / "device-types" / "temperature.json").read_bytes()
    assert (await live.client.post("/api/v1/device-types", content=body, headers=admin)).status_code == 201
    loc = await live.client.post("/api/v1/locations", headers=admin,
                                 json={"name": "Lab", "kind": "school", "timezone": "UTC"})
    assert loc.status_code == 201, loc.text
    made = []
    for name in ("victim", "attacker"):
        response = await live.client.post("/api/v1/devices", headers=admin,
                                          json={"name": name, "device_type": "temperature", "location": "Lab"})
        assert response.status_code == 201, response.text
        made.append(response.json())
    return made[0], made[1]


async def _wait(event: threading.Event, timeout: float) -> bool:
    return await asyncio.to_thread(event.wait, timeout)


async def test_a_device_using_another_devices_client_id_is_cut_off_and_refused(tmp_path: Path) -> None:
    async with live_platform(tmp_path, services=("nats-auth",)) as live:
        victim_info, attacker_info = await _devices(live)
        await live.ctx.services["nats-auth"].sync()  # both credentials are on the server now
        victim = Device(victim_info["connect"], client_id=victim_info["id"]).start()
        attacker = Device(attacker_info["connect"], client_id=victim_info["id"])
        try:
            assert await _wait(victim.connected, 10), victim.refusals
            await asyncio.sleep(1.5)  # a correct client id is never flagged
            assert victim.connected.is_set()

            attacker.start()  # the takeover: the server hands it the victim's session
            assert await _wait(attacker.disconnected, 10), "the impersonating connection was not cut off"
            assert await _wait(attacker.refused, 10), "the impersonating credential could log in again"
            assert not attacker.connected.is_set()

            assert await _wait(victim.connected, 10)  # the victim is back (paho reconnects) and stays
            await asyncio.sleep(1.5)
            assert victim.connected.is_set()
            assert attacker_info["id"] in live.ctx.services["nats-auth"].guard.until
            health = live.ctx.services["nats-auth"].health().to_dict()
            assert health["mqtt_client_id_violations"] == 1 and health["quarantined"] == 1
        finally:
            attacker.stop()
            victim.stop()


def test_quarantine_doubles_for_repeat_offenders_and_expires() -> None:
    from aiot.services.mqtt_guard import MqttClientIdGuard

    guard = MqttClientIdGuard(first=10, limit=25)
    assert guard.check([("dev_a", "dev_a"), ("dev_a", "aiot-platform")], now=0) == []
    assert guard.check([("dev_a", "dev_b")], now=0) == ["dev_b"]
    assert guard.check([("dev_a", "dev_b")], now=5) == []  # already quarantined: one strike per quarantine
    assert guard.quarantined(9.9) == {"dev_b"} and guard.quarantined(10) == set()
    assert guard.check([("x", "dev_b")], now=11) == ["dev_b"] and guard.until["dev_b"] == 31  # 20 s
    assert guard.check([("x", "dev_b")], now=31) == ["dev_b"] and guard.until["dev_b"] == 56  # capped at 25 s
