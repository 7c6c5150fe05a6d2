"""MQTT client id = device id: a device credential connecting with another device's client id (which would take
over that device's session and disconnect it) is refused at connect, by the auth callout, before any takeover;
the impersonated device is never disconnected. (Before the callout the takeover happened and was only noticed
afterwards, from the server's connection list.)"""

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
    loc = await live.client.post(
        "/api/v1/locations", headers=admin, json={"name": "Lab", "kind": "school", "timezone": "UTC"}
    )
    assert loc.status_code == 201, loc.text
    made = []
    for name in ("victim", "attacker"):
        response = await live.client.post(
            "/api/v1/devices", headers=admin, json={"name": name, "device_type": "temperature", "location": "Lab"}
        )
        assert response.status_code == 201, response.text
        made.append(response.json())
    return made[0], made[1]


async def _wait(event: threading.Event, timeout: float) -> bool:
    return await asyncio.to_thread(event.wait, timeout)


async def test_a_device_using_another_devices_client_id_is_refused_before_any_takeover(tmp_path: Path) -> None:
    async with live_platform(tmp_path, services=("nats-auth",)) as live:
        victim_info, attacker_info = await _devices(live)
        await live.ctx.services["nats-auth"].sync()  # both credentials are known to the callout now
        victim = Device(victim_info["connect"], client_id=victim_info["id"]).start()
        attacker = Device(attacker_info["connect"], client_id=victim_info["id"])
        try:
            assert await _wait(victim.connected, 10), victim.refusals
            victim.disconnected.clear()
            attacker.start()  # a valid credential, another device's client id
            assert await _wait(attacker.refused, 10), "the impersonating credential was let in"
            assert not attacker.connected.is_set()
            await asyncio.sleep(1.5)
            assert victim.connected.is_set() and not victim.disconnected.is_set(), "the victim lost its session"
            assert live.nats.callout is not None and live.nats.callout.refused >= 1
        finally:
            attacker.stop()
            victim.stop()
