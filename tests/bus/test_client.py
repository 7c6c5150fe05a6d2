"""Bus against a real nats-server: start-up retry policy, reconnect, core NATS and JetStream helpers."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time
from pathlib import Path

import pytest
from nats.aio.msg import Msg

from aiot.bus import Bus, BusUnavailable, EmbeddedNats, find_nats_server

from .conftest import free_port, wait_for


def _plain_server(port: int, store: Path) -> subprocess.Popen[bytes]:
    """A bare nats-server (no auth) on `port`, standing in for an external server appearing late."""
    return subprocess.Popen(
        [str(find_nats_server()), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_connect_gives_up_after_attempts_with_clear_message() -> None:
    port = free_port()  # nothing listens there
    url = f"nats://127.0.0.1:{port}"
    t0 = time.monotonic()
    with pytest.raises(BusUnavailable) as info:
        await Bus.connect(url, name="t", attempts=2, connect_timeout=1)
    assert time.monotonic() - t0 < 3
    message = str(info.value)
    assert url in message and "2 attempt" in message
    assert "Check that nats-server is running" in message and "AIOT_NATS_URL" in message


async def test_connect_retries_for_ever_until_server_appears(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    caplog.set_level(logging.WARNING, logger="aiot.bus.client")
    connecting = asyncio.create_task(Bus.connect(url, name="late", attempts=0, connect_timeout=1))
    await asyncio.sleep(1.0)
    assert not connecting.done()
    server = await asyncio.to_thread(_plain_server, port, tmp_path)
    try:
        bus = await asyncio.wait_for(connecting, 10)
        assert bus.is_connected
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert warnings, "each failed attempt must log a WARNING"
        assert all(f"NATS at {url} unreachable" in w and "retrying in" in w for w in warnings)
        await bus.close()
        assert not bus.is_connected
    finally:
        server.terminate()
        await asyncio.to_thread(server.wait)


async def test_wrong_password_is_reported(embedded: EmbeddedNats) -> None:
    # nats-server answers -ERR 'Authorization Violation' and closes; when the client's PING reaches the closed
    # socket first, the kernel's reset discards that line and the client sees only "connection reset". Either
    # way the message must send the operator to the credentials.
    with pytest.raises(BusUnavailable, match="(?i)authorization|reset") as raised:
        await Bus.connect(embedded.url, user=embedded.platform_user, password="wrong", name="t", attempts=1)
    assert "AIOT_NATS_PASSWORD" in str(raised.value)


async def test_publish_subscribe_request(platform_bus: Bus) -> None:
    got: list[Msg] = []

    async def on_msg(msg: Msg) -> None:
        got.append(msg)

    async def echo(msg: Msg) -> None:
        await msg.respond(b"echo:" + msg.data)

    await platform_bus.subscribe("sensors.>", on_msg)
    await platform_bus.subscribe("svc.echo", echo, queue="workers")
    await platform_bus.publish("sensors.t1", b"21.5", headers={"unit": "C"})
    reply = await platform_bus.request("svc.echo", b"hi", timeout=2)
    assert reply.data == b"echo:hi"
    await wait_for(lambda: len(got) == 1, what="subscribed message")
    assert (got[0].subject, got[0].data, got[0].headers) == ("sensors.t1", b"21.5", {"unit": "C"})


async def test_ensure_stream_is_idempotent_and_updates(platform_bus: Bus) -> None:
    info = await platform_bus.ensure_stream("LOGS", ["logs.>"], max_age=3600, max_msgs=100)
    assert info.config.max_msgs == 100 and info.config.max_age == 3600
    again = await platform_bus.ensure_stream("LOGS", ["logs.>"], max_age=3600, max_msgs=100)
    assert again.config.subjects == ["logs.>"]
    updated = await platform_bus.ensure_stream("LOGS", ["logs.>", "audit.>"], max_msgs=5, storage="file")
    assert updated.config.max_msgs == 5 and set(updated.config.subjects) == {"logs.>", "audit.>"}
    for i in range(8):
        await platform_bus.js.publish("audit.x", str(i).encode())
    state = (await platform_bus.js.stream_info("LOGS")).state
    assert state.messages == 5  # the updated limit is in force


async def test_kv_and_object_store_get_or_create(platform_bus: Bus) -> None:
    kv = await platform_bus.kv("services", ttl=30, history=2)
    await kv.put("mdl_1", b"http://node-1:9000")
    same = await platform_bus.kv("services")
    assert (await same.get("mdl_1")).value == b"http://node-1:9000"
    status = await same.status()
    assert status.history == 2 and status.ttl == 30
    store = await platform_bus.object_store("artifacts")
    await store.put("app.zip", b"PK\x03\x04zip")
    assert (await (await platform_bus.object_store("artifacts")).get("app.zip")).data == b"PK\x03\x04zip"


async def test_reconnects_after_server_restart(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aiot.bus.client")
    server = EmbeddedNats(tmp_path)
    await server.start()
    bus = await Bus.connect(
        server.url, user=server.platform_user, password=server.platform_password, name="survivor", attempts=1
    )
    got: list[bytes] = []

    async def on_msg(msg: Msg) -> None:
        got.append(msg.data)

    await bus.subscribe("ping", on_msg)
    try:
        await server.stop()
        await wait_for(lambda: not bus.is_connected, what="disconnect to be noticed")
        await asyncio.sleep(1)
        await server.start()  # same ports, reused from state.json
        await wait_for(lambda: bus.is_connected, 10, "reconnect")
        await bus.publish("ping", b"after")  # the subscription was replayed on reconnect
        await wait_for(lambda: got == [b"after"], what="message after reconnect")
        text = caplog.text
        assert "'survivor' lost" in text and "re-established" in text
    finally:
        await bus.close()
        await server.stop()
