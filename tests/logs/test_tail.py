"""GET /logs/stream: server-sent events under a real uvicorn server (ASGITransport would buffer the stream)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from aiot.api.routes import logs as logs_routes
from aiot.logs.query import LogFilter, LogTail
from tests.logs.conftest import LogsPlatform, serve


async def read_event(lines: object, want: str, limit_s: float = 5.0) -> str:
    """The next SSE line starting with `want` (e.g. 'data:' or ': heartbeat')."""

    async def find() -> str:
        async for line in lines:  # type: ignore[attr-defined]
            if line.startswith(want):
                return line
        raise AssertionError("stream ended")

    return await asyncio.wait_for(find(), limit_s)


async def test_sse_tail_receives_new_lines_of_allowed_workloads(
    logs_platform: LogsPlatform, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = logs_platform
    monkeypatch.setattr(logs_routes, "HEARTBEAT_SECONDS", 0.3)
    app_wl, bob_wl = p.users["wl_app"], p.users["wl_bob"]
    async with (
        serve(p.app) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as client,
        client.stream("GET", "/api/v1/logs/stream", headers=p.headers("alice")) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.aiter_lines()
        await read_event(lines, ": connected")
        await p.bus.publish(f"aiot.logs.{bob_wl}", b'{"message": "bob only"}')
        start = time.monotonic()
        await p.bus.publish(f"aiot.logs.{app_wl}", b'{"message": "visitor at the door", "level": "warn"}')
        data = await read_event(lines, "data:")
        elapsed = time.monotonic() - start
        record = json.loads(data.removeprefix("data:").strip())
        assert record["message"] == "visitor at the door" and record["level"] == "WARNING"
        assert record["workload_id"] == app_wl and record["app_instance_id"] == p.users["ins_alice"]
        assert elapsed < 1.0
        await read_event(lines, ": heartbeat", limit_s=3)


async def test_tail_refuses_other_peoples_workloads(logs_platform: LogsPlatform) -> None:
    p = logs_platform
    response = await p.client.get(
        "/api/v1/logs/stream", params={"workload_id": p.users["wl_bob"]}, headers=p.headers("alice")
    )
    assert response.status_code == 403


async def test_log_tail_filters_by_level_and_text(logs_platform: LogsPlatform) -> None:
    p = logs_platform
    wid = p.users["wl_carol"]
    async with LogTail(p.bus, LogFilter(min_level="ERROR", text="disk")) as tail:
        await p.bus.publish(f"aiot.logs.{wid}", b'{"message": "disk almost full", "level": "WARNING"}')
        await p.bus.publish(f"aiot.logs.{wid}", b'{"message": "CPU hot", "level": "ERROR"}')
        await p.bus.publish(f"aiot.logs.{wid}", b'{"message": "Disk failed", "level": "ERROR"}')
        record = await tail.next(timeout=3)
        assert record is not None and record.message == "Disk failed"
        assert await tail.next(timeout=0.2) is None
