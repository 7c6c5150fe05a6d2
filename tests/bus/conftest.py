"""Fixtures for the bus tests: a real embedded nats-server in a tmp dir, platform connections, MQTT probes."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from aiot.bus import Bus, EmbeddedNats


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_for(predicate: Callable[[], bool], limit_s: float = 5.0, what: str = "condition") -> float:
    """Poll `predicate` until true; return seconds waited. Fails the test with `what` on timeout."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > limit_s:
            pytest.fail(f"timed out after {limit_s}s waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


@pytest.fixture
async def embedded(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path / "data")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def platform_bus(embedded: EmbeddedNats) -> AsyncIterator[Bus]:
    bus = await Bus.connect(
        embedded.url,
        user=embedded.platform_user,
        password=embedded.platform_password,
        name="test-platform",
        attempts=1,
    )
    try:
        yield bus
    finally:
        await bus.close()


@dataclass
class MqttProbe:
    """A paho-mqtt client (MQTT 3.1.1) running its network loop in paho's thread, with observable events."""

    client: mqtt.Client
    connack: list[mqtt.ReasonCode] = field(default_factory=list)
    subacks: dict[int, list[mqtt.ReasonCode]] = field(default_factory=dict)
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    disconnects: list[float] = field(default_factory=list)
    connected: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def start(cls, port: int, username: str, password: str, client_id: str) -> MqttProbe:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        client.username_pw_set(username, password)
        client.reconnect_delay_set(min_delay=30, max_delay=30)  # a refused client stays off during a test
        probe = cls(client)

        def on_connect(_c, _u, _f, rc, _p) -> None:  # noqa: ANN001
            probe.connack.append(rc)
            if not rc.is_failure:
                probe.connected.set()

        def on_disconnect(_c, _u, _f, _rc, _p) -> None:  # noqa: ANN001
            probe.connected.clear()
            probe.disconnects.append(time.monotonic())

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_subscribe = lambda _c, _u, mid, rcs, _p: probe.subacks.__setitem__(mid, list(rcs))
        client.on_message = lambda _c, _u, m: probe.messages.append((m.topic, m.payload))
        client.connect("127.0.0.1", port, keepalive=30)
        client.loop_start()
        return probe

    async def subscribe(self, topic: str, qos: int) -> list[mqtt.ReasonCode]:
        _, mid = self.client.subscribe(topic, qos=qos)
        await wait_for(lambda: mid in self.subacks, what=f"SUBACK for {topic}")
        return self.subacks[mid]

    async def publish(self, topic: str, payload: bytes, qos: int) -> None:
        info = self.client.publish(topic, payload, qos=qos)
        await wait_for(info.is_published, what=f"MQTT publish of {topic} to complete")

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def mqtt_probes() -> Iterator[list[MqttProbe]]:
    probes: list[MqttProbe] = []
    yield probes
    for p in probes:
        p.stop()
