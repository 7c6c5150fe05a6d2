"""The SDK's NATS connect when the server's first PING comes before the handshake PONG (nats-server sends it
2 s after accepting a client it has not answered yet, e.g. while the workload is busy loading its model).

A scripted fake server plays exactly that order; the SDK must end up connected and its publishes must arrive."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from platform_sdk.config import load_config
from platform_sdk.runtime import Runtime, _client_class

INFO = {"server_id": "FAKE", "version": "2.15.1", "proto": 1, "max_payload": 1048576, "headers": True}


class PingFirstServer:
    """Answers CONNECT+PING with `PING` before `PONG`; records every line the client sends afterwards."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.server: Any = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"INFO " + json.dumps(INFO).encode() + b"\r\n")
        await writer.drain()
        handshake = []
        while b"PING\r\n" not in handshake:
            handshake.append(await reader.readline())
        writer.write(b"PING\r\n")  # the server's first RTT ping wins the race ...
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"PONG\r\n")  # ... then the handshake PONG
        await writer.drain()
        while line := await reader.readline():
            self.lines.append(line)
            if line == b"PING\r\n":
                writer.write(b"PONG\r\n")
                await writer.drain()

    async def wait_for(self, prefix: bytes, timeout: float = 5.0) -> bool:  # noqa: ASYNC109
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            if any(line.startswith(prefix) for line in self.lines):
                return True
            await asyncio.sleep(0.02)
        return False

    async def stop(self) -> None:
        self.server.close()


def test_server_ping_during_the_handshake_is_answered_and_the_client_is_connected() -> None:
    async def scenario() -> None:
        fake = PingFirstServer()
        await fake.start()
        nc = _client_class()()
        try:
            await nc.connect(servers=[f"nats://127.0.0.1:{fake.port}"], allow_reconnect=False, connect_timeout=5)
            assert nc.is_connected  # nats-py's own client stays "connecting" here and drops every publish
            assert await fake.wait_for(b"PONG"), fake.lines  # the server's ping was answered
            await nc.publish("aiot.registry.announce.mdl_x", b"{}")
            await nc.flush(2)
            assert await fake.wait_for(b"PUB aiot.registry.announce.mdl_x"), fake.lines
        finally:
            await nc.close()
            await fake.stop()

    asyncio.run(scenario())


def test_runtime_connects_on_its_first_attempt_against_a_ping_first_server() -> None:
    async def scenario() -> None:
        fake = PingFirstServer()
        await fake.start()
        cfg = load_config({"workload_id": "wl_1", "nats": {"servers": [f"nats://127.0.0.1:{fake.port}"]}})
        rt = Runtime(cfg)
        nc, error = await rt._attempt()
        try:
            assert error is None and nc is not None and nc.is_connected, error
        finally:
            if nc is not None:
                await nc.close()
            await fake.stop()
            rt.loop.close()

    asyncio.run(scenario())
