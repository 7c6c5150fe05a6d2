"""A model call never fails because a pooled keep-alive connection was closed by a healthy replica.

The replica here is a real TCP server that behaves like uvicorn whose keep-alive timer fires just as the next
request arrives: it answers the first request of a connection (keep-alive) and closes the connection, without
answering, on the second. Before the fix the SDK marked the only replica bad and raised ModelUnavailable.
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

from platform_sdk.models import ModelClient

BODY = b'{"outputs": {"ok": true}}'


async def _closing_replica() -> tuple[asyncio.AbstractServer, str, list[int]]:
    """Answers one request per connection, then drops the connection when a second request arrives on it."""
    answered: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                await reader.readexactly(length)
                requests += 1
                if requests > 1:  # the keep-alive timer won the race: close without answering
                    break
                answered.append(1)
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\nconnection: keep-alive\r\n\r\n%s" % (len(BODY), BODY)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}", answered


async def test_a_connection_closed_by_a_healthy_replica_is_retried_fresh_not_reported() -> None:
    server, url, answered = await _closing_replica()
    client = ModelClient(SimpleNamespace(cfg=SimpleNamespace(models={})))  # type: ignore[arg-type]
    client._cache["mdl_x"] = (time.monotonic() + 3600, [{"url": url}])  # one replica, as the registry says
    try:
        for _ in range(5):
            body = await client.post("mdl_x", "/v1/predict", {"inputs": {}}, timeout=5.0)
            assert body == {"outputs": {"ok": True}}
        assert len(answered) == 5  # every call answered by the one replica, none surfaced as ModelUnavailable
    finally:
        if client._http is not None:
            await client._http.aclose()
        server.close()
        await server.wait_closed()
