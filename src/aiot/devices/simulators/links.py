"""How a simulated device reaches the bus: over NATS (nats-py) or over MQTT (paho-mqtt), behind one interface.

Why both: the platform's own simulators use NATS (cheap: many devices can share one connection), while MQTT
links prove the path plain devices take (topic mapping, Last Will for presence).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import nats

from aiot.devices import subjects

log = logging.getLogger(__name__)

Handler = Callable[[bytes], Awaitable[None]]


@dataclass(frozen=True)
class Connection:
    """Where and as whom a simulator connects: `nats_url`, or `mqtt_host`/`mqtt_port`."""

    nats_url: str | None = None
    mqtt_host: str | None = None
    mqtt_port: int = 1883
    username: str | None = None
    password: str | None = None

    def __post_init__(self) -> None:
        if (self.nats_url is None) == (self.mqtt_host is None):
            raise ValueError("Connection needs exactly one of nats_url or mqtt_host")

    @property
    def transport(self) -> str:
        return "nats" if self.nats_url else "mqtt"


class Link:
    """Publish bytes on a NATS subject / subscribe to one; MQTT links translate to topics."""

    async def publish(self, subject: str, payload: bytes, *, retain: bool = False) -> None:
        raise NotImplementedError

    async def subscribe(self, subject: str, handler: Handler) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class NatsLink(Link):
    """A shared nats-py connection (several devices with the same credentials use one)."""

    def __init__(self, nc: Any) -> None:
        self.nc = nc
        self.users = 0

    @classmethod
    async def open(cls, conn: Connection) -> NatsLink:
        while True:
            nc = await nats.connect(
                conn.nats_url,
                user=conn.username,
                password=conn.password,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                name="aiot-sim",
            )
            if nc.is_connected:
                return cls(nc)
            # nats-py may return still "connecting" (publishes silently dropped) when the server's first
            # answer to its PING is not PONG; start over with a fresh client.
            with contextlib.suppress(Exception):
                await nc.close()
            await asyncio.sleep(0.2)

    async def publish(self, subject: str, payload: bytes, *, retain: bool = False) -> None:
        await self.nc.publish(subject, payload)

    async def subscribe(self, subject: str, handler: Handler) -> None:
        async def cb(msg: Any) -> None:
            await handler(msg.data)

        await self.nc.subscribe(subject, cb=cb)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.nc.drain()


class MqttLink(Link):
    """One paho-mqtt client per device (MQTT credentials are per client), with its network loop in a thread.
    The Last Will publishes `offline` (retained) on the device's presence topic if the link dies."""

    def __init__(self, client: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self.loop = loop
        self.handlers: dict[str, Handler] = {}

    @classmethod
    async def open(cls, conn: Connection, device_id: str) -> MqttLink:
        import paho.mqtt.client as mqtt

        loop = asyncio.get_running_loop()
        connected: asyncio.Future[int] = loop.create_future()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device_id, clean_session=True)
        if conn.username:
            client.username_pw_set(conn.username, conn.password)
        client.will_set(subjects.mqtt_topic(device_id, "presence"), b"offline", qos=1, retain=True)
        link = cls(client, loop)

        def on_connect(_c: Any, _u: Any, _flags: Any, reason: Any, _props: Any = None) -> None:
            code = int(getattr(reason, "value", reason))
            if not connected.done():
                loop.call_soon_threadsafe(lambda: connected.done() or connected.set_result(code))
            for topic in list(link.handlers):  # resubscribe after a reconnect
                client.subscribe(topic, qos=1)

        def on_message(_c: Any, _u: Any, msg: Any) -> None:
            handler = link.handlers.get(msg.topic)
            if handler is not None:
                asyncio.run_coroutine_threadsafe(handler(bytes(msg.payload)), loop)

        client.on_connect = on_connect
        client.on_message = on_message
        client.reconnect_delay_set(0.5, 5)
        client.connect_async(conn.mqtt_host, conn.mqtt_port, keepalive=30)
        client.loop_start()
        code = await asyncio.wait_for(connected, 10)
        if code != 0:
            client.loop_stop()
            raise ConnectionError(f"MQTT connect for {device_id} refused (reason {code})")
        return link

    async def publish(self, subject: str, payload: bytes, *, retain: bool = False) -> None:
        self.client.publish(subjects.to_mqtt_topic(subject), payload, qos=1, retain=retain)

    async def subscribe(self, subject: str, handler: Handler) -> None:
        topic = subjects.to_mqtt_topic(subject)
        self.handlers[topic] = handler
        self.client.subscribe(topic, qos=1)

    async def close(self) -> None:
        await asyncio.to_thread(self._close_sync)

    def _close_sync(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()
