"""Node and workload load over the recent past, kept server-side: a NATS KV bucket with per-key history.

The database keeps only a node's latest report (placement needs nothing older). Charts need a past, whether or
not anyone was watching and whichever API replica answers, so each report is also put into `AIOT_LOAD`: one key
per node (`node.<id>`: CPU and memory percent) and per workload (`workload.<id>`: its processes' CPU percent and
resident MiB). The bucket keeps the last `SAMPLES` values of a key (NATS' per-key history limit, 64; at the
agents' 2 s report interval about two minutes) and forgets anything older than `TTL_SECONDS`, so it is bounded
by the number of live nodes and workloads. Writing is best effort: a report is never refused for it.
"""

from __future__ import annotations

import json
import logging
import weakref
from datetime import datetime
from typing import Any

from nats.js.errors import NoKeysError
from nats.js.kv import KeyValue

from aiot.bus.client import Bus

log = logging.getLogger(__name__)

BUCKET = "AIOT_LOAD"
SAMPLES = 64
TTL_SECONDS = 3600.0


_buckets: weakref.WeakKeyDictionary[Bus, KeyValue] = weakref.WeakKeyDictionary()


async def _bucket(bus: Bus) -> KeyValue:
    """The bucket handle, looked up once per connection: every agent report writes here, so the report route
    must not pay a bucket look-up (two JetStream requests) each time."""
    kv = _buckets.get(bus)
    if kv is None:
        kv = _buckets[bus] = await bus.kv(BUCKET, ttl=TTL_SECONDS, history=SAMPLES)
    return kv


def node_key(node_id: str) -> str:
    return f"node.{node_id}"


def workload_key(workload_id: str) -> str:
    return f"workload.{workload_id}"


def _number(value: Any) -> float:
    try:
        return round(float(value), 1)
    except (TypeError, ValueError):
        return 0.0


async def record(bus: Bus | None, node_id: str, at: datetime, load: dict[str, Any], placed: set[str]) -> None:
    """Add one report's samples (best effort: logged, never raised). Of the per-workload figures only those of
    `placed` (the workloads on this node) are kept: a node cannot write another node's workload history."""
    if bus is None:
        return
    try:
        kv = await _bucket(bus)
        when = at.isoformat()
        sample = {"at": when, "cpu": _number(load.get("cpu_percent")), "memory": _number(load.get("memory_percent"))}
        await kv.put(node_key(node_id), json.dumps(sample).encode())
        per_workload = load.get("per_workload")
        for workload_id, usage in per_workload.items() if isinstance(per_workload, dict) else ():
            if workload_id in placed and isinstance(usage, dict):
                value = {
                    "at": when,
                    "cpu": _number(usage.get("cpu_percent")),
                    "memory_mb": _number(usage.get("rss_mb")),
                }
                await kv.put(workload_key(str(workload_id)), json.dumps(value).encode())
    except Exception as exc:  # noqa: BLE001 - history is a convenience; the report itself is stored already
        log.debug("load history of node %s not recorded: %s", node_id, exc)


async def series(bus: Bus, key: str) -> list[dict[str, Any]]:
    """The samples of one key, oldest first (empty when it never reported or everything expired)."""
    kv = await _bucket(bus)
    try:
        entries = await kv.history(key)
    except NoKeysError:
        return []
    out = []
    for entry in entries:
        if entry.value:
            try:
                out.append(json.loads(entry.value))
            except ValueError:
                continue
    return out
