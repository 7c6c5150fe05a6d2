"""A workload's first NATS connection can take seconds (the auth service authorises it; the machine is loaded).

Seen in the demo soak: the smart-home app reads a sensor as its first line, the SDK had not connected after that
call's 2 s, the app died with PlatformUnavailable and was restarted. Within the first-connect grace a call waits
for the first connection instead; once connected (or after the grace) its own timeout is all it waits."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from platform_sdk.config import load_config
from platform_sdk.errors import PlatformUnavailable
from platform_sdk.runtime import Runtime
from tests.sdk.test_nats_handshake import PingFirstServer


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _late_server(port: int, after_s: float, stop: threading.Event) -> threading.Thread:
    """A NATS-speaking server that starts listening on `port` only `after_s` seconds from now."""

    def serve() -> None:
        async def main() -> None:
            await asyncio.sleep(after_s)
            fake = PingFirstServer()
            fake.server = await asyncio.start_server(fake._client, "127.0.0.1", port)
            await asyncio.get_running_loop().run_in_executor(None, stop.wait)
            await fake.stop()

        asyncio.run(main())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_a_call_made_before_the_first_connection_waits_for_it_instead_of_failing() -> None:
    port, stop = _free_port(), threading.Event()
    server = _late_server(port, 3.5, stop)
    rt = Runtime(load_config({"workload_id": "wl_late", "nats": {"servers": [f"nats://127.0.0.1:{port}"]}})).start()
    try:
        started = time.monotonic()
        nc = rt.call(rt.wait_connected(2.0), 2.0)  # the app's first line: a 2 s call, the server up after 3.5 s
        assert nc is not None and nc.is_connected
        assert time.monotonic() - started >= 3.0
        assert rt.first_connect_grace() == 0.0  # connected: from now on a call's own timeout is all it waits
    finally:
        rt.close()
        stop.set()
        server.join(5)


def test_after_the_grace_a_call_fails_after_its_own_timeout() -> None:
    port = _free_port()  # nothing will ever listen here
    rt = Runtime(load_config({"workload_id": "wl_never", "nats": {"servers": [f"nats://127.0.0.1:{port}"]}}))
    rt._created -= 1000.0  # started long ago: the first-connect grace is over
    rt.start()
    try:
        started = time.monotonic()
        with pytest.raises(PlatformUnavailable, match="after 1s"):
            rt.call(rt.wait_connected(1.0), 1.0)
        assert time.monotonic() - started < 3.0
    finally:
        rt.close()
