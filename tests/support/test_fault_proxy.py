"""The fault proxy itself: it adds the delay it promises, keeps data intact, and can cut connections."""

from __future__ import annotations

import asyncio
import time

from tests.support.fault_proxy import FaultProxy


async def _echo_server() -> asyncio.AbstractServer:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
        writer.close()

    return await asyncio.start_server(echo, "127.0.0.1", 0)


async def test_delay_each_way_and_intact_data() -> None:
    server = await _echo_server()
    proxy = await FaultProxy("127.0.0.1", server.sockets[0].getsockname()[1], delay=0.3).start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        started = time.monotonic()
        payload = bytes(range(256)) * 100
        writer.write(payload)
        await writer.drain()
        received = b""
        while len(received) < len(payload):
            received += await reader.read(65536)
        elapsed = time.monotonic() - started
        assert received == payload
        assert 0.55 <= elapsed < 1.5  # 0.3 s there and 0.3 s back
        proxy.drop_all()
        assert await asyncio.wait_for(reader.read(10), 2) == b""
        writer.close()
    finally:
        await proxy.stop()
        server.close()
