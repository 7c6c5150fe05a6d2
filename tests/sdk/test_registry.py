"""RegistryService against a real nats-server: announces into the TTL'd KV, resolve, withdraw, malformed
announces, a second replica in the queue group, and the latest-value lookup."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiot.registry import ENDPOINTS_BUCKET, RegistryService

from .harness import Platform


async def _announce(
    platform: Platform, model_id: str, workload_id: str, url: str = "http://10.0.0.1:1", **extra: Any
) -> None:
    body = {
        "model_id": model_id,
        "workload_id": workload_id,
        "url": url,
        "name": "m",
        "version": "1.0.0",
        "ts": time.time(),
        **extra,
    }
    await platform.bus.publish(f"aiot.registry.announce.{model_id}.{workload_id}", json.dumps(body).encode())
    await platform.bus.flush()


async def _resolve(platform: Platform, model_id: str) -> list[dict[str, Any]]:
    msg = await platform.bus.request(f"aiot.registry.resolve.{model_id}", b"", timeout=2)
    return json.loads(msg.data)["endpoints"]


async def _eventually(check: Any, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.05)


def test_announce_resolve_withdraw_and_expiry(platform: Platform) -> None:
    async def scenario() -> None:
        await _announce(platform, "mdl_reg1", "wl_b", "http://10.0.0.2:80")
        await _announce(platform, "mdl_reg1", "wl_a", "http://10.0.0.1:80")
        found = await _eventually(lambda: _has(platform, "mdl_reg1", 2))
        assert found, await _resolve(platform, "mdl_reg1")
        endpoints = await _resolve(platform, "mdl_reg1")
        assert [(e["workload_id"], e["url"]) for e in endpoints] == [
            ("wl_a", "http://10.0.0.1:80"),
            ("wl_b", "http://10.0.0.2:80"),
        ]
        kv = await platform.bus.js.key_value(ENDPOINTS_BUCKET)
        stored = json.loads((await kv.get("mdl_reg1.wl_a")).value)
        assert stored["url"] == "http://10.0.0.1:80" and (await kv.status()).ttl is not None
        await _announce(platform, "mdl_reg1", "wl_b", withdraw=True)
        assert await _eventually(lambda: _has(platform, "mdl_reg1", 1))
        assert await _resolve(platform, "mdl_reg1") == [e for e in endpoints if e["workload_id"] == "wl_a"]
        assert await _resolve(platform, "mdl_unknown") == []
        # entries older than the TTL are not served even if the KV still holds them
        assert platform.registry.live("mdl_reg1", now=time.time() + platform.registry.ttl + 1) == []

    platform.run(scenario())


async def _has(platform: Platform, model_id: str, n: int) -> bool:
    return len(await _resolve(platform, model_id)) == n


def test_malformed_announces_are_ignored(platform: Platform) -> None:
    async def scenario() -> None:
        before = platform.registry.rejected
        subject = "aiot.registry.announce.mdl_reg2.wl_x"
        await platform.bus.publish(subject, b"not json")
        body = {"model_id": "mdl_reg3", "workload_id": "wl_x", "url": "http://h:1"}
        await platform.bus.publish(subject, json.dumps(body).encode())  # model mismatch
        body = {"model_id": "mdl_reg2", "workload_id": "wl x", "url": "http://h:1"}
        await platform.bus.publish(subject, json.dumps(body).encode())  # bad id
        body = {"model_id": "mdl_reg2", "workload_id": "wl_x", "url": "file:///etc/passwd"}
        await platform.bus.publish(subject, json.dumps(body).encode())  # bad url
        body = {"model_id": "mdl_reg2", "workload_id": "wl_other", "url": "http://h:1"}
        await platform.bus.publish(subject, json.dumps(body).encode())  # another replica's name
        await platform.bus.flush()
        await _eventually(lambda: _rejected(platform, before + 5))
        assert platform.registry.rejected == before + 5
        assert await _resolve(platform, "mdl_reg2") == []

    platform.run(scenario())


async def _rejected(platform: Platform, n: int) -> bool:
    return platform.registry.rejected >= n


def test_second_replica_shares_the_work_and_the_state(platform: Platform) -> None:
    async def scenario() -> None:
        other = RegistryService(ttl=platform.registry.ttl)
        await other.attach(platform.bus)
        try:
            for i in range(6):
                await _announce(platform, "mdl_reg4", f"wl_{i}")
            await _eventually(lambda: _live_both(platform, other, 6))
            assert len(other.live("mdl_reg4")) == len(platform.registry.live("mdl_reg4")) == 6
            assert len(await _resolve(platform, "mdl_reg4")) == 6
            assert other.health().state.value == "ok"
        finally:
            await other.stop()

    platform.run(scenario())


async def _live_both(platform: Platform, other: RegistryService, n: int) -> bool:
    return len(other.live("mdl_reg4")) == n and len(platform.registry.live("mdl_reg4")) == n


def test_latest_value_lookup(platform: Platform) -> None:
    async def scenario() -> None:
        await platform.publish_reading("dev_temp01", {"temperature": 19.0})
        await asyncio.sleep(0.3)
        msg = await platform.bus.request("aiot.registry.latest.dev_temp01", b"", timeout=2)
        assert msg.headers["Aiot-Status"] == "ok"
        assert json.loads(msg.data)["values"] == {"temperature": 19.0}
        missing = await platform.bus.request("aiot.registry.latest.dev_nothing", b"", timeout=2)
        assert missing.headers["Aiot-Status"] == "not_found" and missing.data == b""

    platform.run(scenario())
