"""StreamWriter: pipelined JetStream writes with numbered replies (no future per write)."""

from __future__ import annotations

import asyncio

from nats.js import api as js_api

from aiot.bus.client import Bus
from aiot.bus.stream_writer import StreamWriter

from .conftest import wait_for


async def test_writes_are_stored_failures_reported_and_back_pressure_holds(platform_bus: Bus) -> None:
    js = platform_bus.js
    await js.add_stream(js_api.StreamConfig(name="SW_TEST", subjects=["sw.test.>"], duplicate_window=60))
    failed: list[tuple[str, str]] = []
    writer = StreamWriter(
        platform_bus.nc, lambda subject, _p, _h, error: failed.append((subject, str(error))), max_pending=5
    )
    await writer.start()
    try:
        for i in range(200):  # 40x the window: write() must wait for room, never exceed it
            await writer.write(f"sw.test.{i % 3}", b"%d" % i, {"Nats-Msg-Id": f"m{i}"})
            assert writer.pending <= 5
        assert await writer.drain(5.0)
        assert (await js.stream_info("SW_TEST")).state.messages == 200 and failed == []

        # a write no stream takes: reported as refused (no responders), not hung
        await writer.write("sw.nowhere.1", b"x", {})
        await wait_for(lambda: bool(failed), what="the refused write reported")
        assert failed[0][0] == "sw.nowhere.1" and "503" in failed[0][1]
        assert writer.pending == 0
    finally:
        await writer.stop()


async def test_an_overdue_acknowledgement_is_reported_as_failed(platform_bus: Bus) -> None:
    failed: list[str] = []
    writer = StreamWriter(platform_bus.nc, lambda subject, *_: failed.append(subject), ack_timeout=0.2)
    await writer.start()
    writer._prefix = "_INBOX.nobody.listens."  # acknowledgements go where nobody listens
    try:
        await platform_bus.js.add_stream(js_api.StreamConfig(name="SW_LOST", subjects=["sw.lost"]))
        await writer.write("sw.lost", b"x", {})
        await asyncio.sleep(0.05)
        assert failed == [] and writer.pending == 1
        await wait_for(lambda: failed == ["sw.lost"], limit_s=3.0, what="the overdue write reported")
        assert writer.pending == 0
    finally:
        await writer.stop()
