"""GET /logs against a real stream: found within 2 s, filters, permissions."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta

from aiot.timeutil import utcnow
from tests.logs.conftest import LogsPlatform


def sdk_line(platform: LogsPlatform, workload: str, message: str, **fields: object) -> dict:
    return {
        "ts": time.time(),
        "level": "INFO",
        "service": "workload",
        "workload_id": platform.users[workload],
        "app_instance_id": None,
        "logger": "app",
        "message": message,
        **fields,
    }


async def test_published_line_is_found_by_text_within_two_seconds(logs_platform: LogsPlatform) -> None:
    p = logs_platform
    wid = p.users["wl_carol"]
    for i in range(50):  # some noise before it
        await p.publish(f"aiot.logs.{wid}", sdk_line(p, "wl_carol", f"routine line {i}"))
    needle = f"Intruder-{uuid.uuid4().hex[:8]}"
    start = time.monotonic()
    line = {"ts": time.time(), "level": "WARNING", "workload_id": wid, "message": f"alarm: {needle} at door"}
    await p.bus.publish(f"aiot.logs.{wid}", json.dumps(line).encode())  # plain publish, as the SDK does
    found = []
    while not found and time.monotonic() - start < 5:
        response = await p.search("admin1", text=needle.lower())
        assert response.status_code == 200, response.text
        found = response.json()["records"]
    elapsed = time.monotonic() - start
    assert found, "the line never showed up"
    assert elapsed < 2.0, f"found after {elapsed:.2f}s"
    assert found[0]["message"] == f"alarm: {needle} at door" and found[0]["workload_id"] == wid
    print(f"log line findable after {elapsed * 1000:.0f} ms")


async def test_filters_level_time_service_workload_text(logs_platform: LogsPlatform) -> None:
    p = logs_platform
    carol, bob = p.users["wl_carol"], p.users["wl_bob"]
    now = utcnow()
    await p.publish(
        f"aiot.logs.{carol}",
        sdk_line(p, "wl_carol", "old debug", level="DEBUG", ts=(now - timedelta(hours=3)).timestamp()),
    )
    await p.publish(
        f"aiot.logs.{carol}",
        sdk_line(p, "wl_carol", "recent error", level="ERROR", ts=(now - timedelta(minutes=10)).timestamp()),
    )
    await p.publish(f"aiot.logs.{bob}", sdk_line(p, "wl_bob", "bob warning", level="warn"))
    await p.publish(
        "aiot.logs.platform.scheduler",
        {"ts": now.isoformat(), "level": "INFO", "message": "occurrence fired", "logger": "aiot.scheduler"},
    )
    await p.publish(f"aiot.logs.{carol}", b"\xff garbage that is not a record")

    async def messages(**params: object) -> list[str]:
        response = await p.search("admin1", **params)
        assert response.status_code == 200, response.text
        return [r["message"] for r in response.json()["records"]]

    assert await messages() == ["occurrence fired", "bob warning", "recent error", "old debug"]  # newest first
    assert await messages(level="warning") == ["bob warning", "recent error"]
    assert await messages(workload_id=carol) == ["recent error", "old debug"]
    assert await messages(service="scheduler") == ["occurrence fired"]
    assert await messages(service="workload", level="ERROR") == ["recent error"]
    assert await messages(since="1h") == ["occurrence fired", "bob warning", "recent error"]
    until = (now - timedelta(hours=1)).astimezone(UTC).replace(tzinfo=None).isoformat()  # naive = UTC
    assert await messages(until=until) == ["old debug"]
    assert await messages(text="ERROR") == ["recent error"]
    assert await messages(limit=2) == ["occurrence fired", "bob warning"]
    assert await messages(since=(now - timedelta(hours=4)).isoformat(), limit=1) == ["occurrence fired"]

    bad = await p.search("admin1", level="loud")
    assert bad.status_code == 422 and bad.json()["error"]["details"]["field"] == "level"
    bad = await p.search("admin1", since="last tuesday")
    assert bad.status_code == 422 and "15m" in bad.json()["error"]["message"]


async def test_users_read_only_their_workloads_and_instances(logs_platform: LogsPlatform) -> None:
    p = logs_platform
    carol, bob, app = p.users["wl_carol"], p.users["wl_bob"], p.users["wl_app"]
    await p.publish(f"aiot.logs.{carol}", sdk_line(p, "wl_carol", "carol model line"))
    await p.publish(f"aiot.logs.{bob}", sdk_line(p, "wl_bob", "bob secret plans"))
    # an agent-captured stdout line of alice's app instance: it carries no app_instance_id itself
    await p.publish(
        f"aiot.logs.{app}",
        {
            "ts": datetime.now(UTC).isoformat(),
            "level": "INFO",
            "workload_id": app,
            "stream": "stdout",
            "message": "home page served",
        },
    )
    await p.publish("aiot.logs.platform.api", {"message": "platform internals", "level": "INFO"})

    async def messages(who: str, **params: object) -> list[str]:
        response = await p.search(who, **params)
        assert response.status_code == 200, response.text
        return [r["message"] for r in response.json()["records"]]

    assert await messages("alice") == ["home page served"]
    assert await messages("carol") == ["carol model line"]
    assert await messages("bob") == ["bob secret plans"]
    assert len(await messages("admin1")) == 4

    denied = await p.search("alice", workload_id=bob)
    assert denied.status_code == 403 and denied.json()["error"]["details"]["field"] == "workload_id"
    assert (await p.search("alice", service="api")).status_code == 403
    assert (await p.search("bob", app_instance_id=p.users["ins_alice"])).status_code == 403
    assert (await p.search("alice", app_instance_id="ins_nothere")).status_code == 404
    assert (await p.client.get("/api/v1/logs")).status_code == 401

    mine = await p.search("alice", app_instance_id=p.users["ins_alice"])
    records = mine.json()["records"]
    assert [r["message"] for r in records] == ["home page served"]
    assert records[0]["app_instance_id"] == p.users["ins_alice"]  # labelled from the database
