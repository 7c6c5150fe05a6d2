"""`RegistryService`: which model replicas are alive, and the latest value of a device, for workloads.

Subjects (docs/workload-contract.md):

* `aiot.registry.announce.<model_id>.<workload_id>` (queue group `aiot-registry`): a model replica's
  `{"model_id", "workload_id", "url", "name", "version", "ts"}` every 2 s -> KV bucket `aiot_endpoints`, key
  `<model_id>.<workload_id>`, bucket TTL 10 s, so a dead replica disappears by itself. `"withdraw": true`
  (sent by a replica shutting down cleanly) deletes the key at once. The subject names the workload because
  NATS permissions let each replica publish on its own subject only: the registry takes the workload id from
  the subject (who published) and ignores an announce whose body claims another one, so a replica can neither
  add an endpoint in another replica's name nor withdraw it.
* `aiot.registry.resolve.<model_id>` (request/reply, queue group): `{"endpoints": [{"url", "workload_id",
  "name", "version"}, ...]}` of the replicas announced within the TTL.
* `aiot.registry.latest.<device_id>` (request/reply, queue group): the device's latest stored record from
  ingest's KV `aiot_device_latest`, byte for byte (JSON record or camera frame); header `Aiot-Status` is `ok`,
  `not_found` (empty body) or `error` (with `Aiot-Error`).

Why resolve answers from memory: listing KV keys per request would create a consumer each time. Every
replica of this service watches the whole bucket instead (so it also sees announces another replica
stored) and filters entries older than the TTL itself, because JetStream's age expiry does not tell
watchers that a key went away.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from datetime import datetime
from typing import Any

from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NotFoundError

from aiot.bus.client import Bus
from aiot.services.contract import HealthState, PlatformService, ServiceContext, ServiceHealth

log = logging.getLogger(__name__)

ENDPOINTS_BUCKET = "aiot_endpoints"
ENDPOINT_TTL = 10.0
LATEST_BUCKET = "aiot_device_latest"  # written by aiot.devices.ingest
QUEUE = "aiot-registry"
ANNOUNCE = "aiot.registry.announce"
RESOLVE = "aiot.registry.resolve"
LATEST = "aiot.registry.latest"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def announce_subject(model_id: str, workload_id: str) -> str:
    """The one subject a replica (workload `workload_id` of model `model_id`) may announce itself on."""
    return f"{ANNOUNCE}.{model_id}.{workload_id}"


def _epoch(created: Any) -> float:
    if isinstance(created, datetime):
        return created.timestamp()
    if isinstance(created, int | float):
        return float(created) / (1e9 if created > 1e12 else 1.0)
    return time.time()


class RegistryService(PlatformService):
    """See the module docstring. `start(ctx)` needs `ctx.bus`; `attach(bus)` works without a context."""

    name = "registry"

    def __init__(self, ttl: float = ENDPOINT_TTL) -> None:
        self.ttl = ttl
        self.bus: Bus | None = None
        self.kv: Any = None
        self._latest_kv: Any = None
        self._subs: list[Any] = []
        self._watch_task: asyncio.Task[None] | None = None
        self._watcher: Any = None
        # model_id -> workload_id -> (announce dict, epoch seconds stored)
        self.endpoints: dict[str, dict[str, tuple[dict[str, Any], float]]] = {}
        self.announces = 0
        self.rejected = 0
        self.resolves = 0

    async def start(self, ctx: ServiceContext) -> None:
        assert ctx.bus is not None, "the registry needs the message bus"
        await self.attach(ctx.bus)

    async def attach(self, bus: Bus) -> None:
        self.bus = bus
        self.kv = await bus.kv(ENDPOINTS_BUCKET, ttl=self.ttl, history=1)
        self._watcher = await self.kv.watchall()
        initial_done = asyncio.get_running_loop().create_future()
        self._watch_task = asyncio.create_task(self._watch(initial_done))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(initial_done), 5.0)
        for subject, handler in (
            (f"{ANNOUNCE}.*.*", self._on_announce),
            (f"{RESOLVE}.*", self._on_resolve),
            (f"{LATEST}.*", self._on_latest),
        ):
            self._subs.append(await bus.subscribe(subject, handler, queue=QUEUE))
        await bus.flush()

    async def stop(self) -> None:
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watch_task
            self._watch_task = None
        if self._watcher is not None:
            with contextlib.suppress(Exception):
                await self._watcher.stop()
            self._watcher = None
        self.bus = None

    def health(self) -> ServiceHealth:
        if self.bus is None:
            return ServiceHealth(HealthState.stopped)
        live = sum(len(self.live(m)) for m in list(self.endpoints))
        return ServiceHealth(
            HealthState.ok,
            f"{live} live model endpoint(s)",
            {
                "endpoints": live,
                "announces": self.announces,
                "rejected": self.rejected,
                "resolves": self.resolves,
            },
        )

    # ------------------------------------------------------------------------------------------ state

    async def _watch(self, initial_done: asyncio.Future[None]) -> None:
        try:
            async for entry in self._watcher:
                if entry is None:  # end of the initial values
                    if not initial_done.done():
                        initial_done.set_result(None)
                    continue
                self._apply(entry)
                if entry.delta == 0 and not initial_done.done():
                    initial_done.set_result(None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported; resolve still answers from what it knows
            log.error("registry: watching %s failed: %s", ENDPOINTS_BUCKET, exc)

    def _apply(self, entry: Any) -> None:
        model_id, _, workload_id = entry.key.partition(".")
        if entry.operation in ("DEL", "PURGE") or not entry.value:
            self.endpoints.get(model_id, {}).pop(workload_id, None)
            return
        try:
            doc = json.loads(entry.value)
        except ValueError:
            return
        self.endpoints.setdefault(model_id, {})[workload_id] = (doc, _epoch(entry.created))

    def live(self, model_id: str, now: float | None = None) -> list[dict[str, Any]]:
        """Replicas of `model_id` announced within the TTL, sorted by workload id (every registry replica
        answers in the same order; the SDK round-robins over it)."""
        now = time.time() if now is None else now
        out = []
        for workload_id, (doc, stored) in sorted(self.endpoints.get(model_id, {}).items()):
            if now - stored <= self.ttl:
                out.append(
                    {
                        "url": doc.get("url"),
                        "workload_id": workload_id,
                        "name": doc.get("name"),
                        "version": doc.get("version"),
                    }
                )
        return out

    # ------------------------------------------------------------------------------------------ handlers

    async def _on_announce(self, msg: Any) -> None:
        model_id, _, publisher = msg.subject[len(ANNOUNCE) + 1 :].partition(".")
        try:
            doc = json.loads(msg.data)
            if not isinstance(doc, dict):
                raise ValueError("not an object")
            workload_id = doc.get("workload_id")
            url = doc.get("url")
            if doc.get("model_id") != model_id:
                raise ValueError(f"model_id {doc.get('model_id')!r} differs from the subject's {model_id!r}")
            if not isinstance(workload_id, str) or not _TOKEN.match(workload_id) or not _TOKEN.match(model_id):
                raise ValueError("model_id and workload_id must be [A-Za-z0-9_-]{1,128}")
            if workload_id != publisher:
                raise ValueError(
                    f"workload_id {workload_id!r} differs from the subject's {publisher!r} (the publisher's own)"
                )
            if not doc.get("withdraw") and (not isinstance(url, str) or not url.startswith(("http://", "https://"))):
                raise ValueError(f"url {url!r} is not an http(s) URL")
        except ValueError as exc:
            self.rejected += 1
            log.warning("registry: ignored a malformed announce on %s: %s", msg.subject, exc)
            return
        key = f"{model_id}.{workload_id}"
        try:
            if doc.get("withdraw"):
                await self.kv.delete(key)
            else:
                clean = {k: doc.get(k) for k in ("model_id", "workload_id", "url", "name", "version", "ts")}
                await self.kv.put(key, json.dumps(clean, separators=(",", ":")).encode())
            self.announces += 1
        except Exception as exc:  # noqa: BLE001 - the next announce (2 s later) retries
            log.warning("registry: storing %s failed: %s", key, exc)

    async def _on_resolve(self, msg: Any) -> None:
        if not msg.reply:
            return
        self.resolves += 1
        model_id = msg.subject.rsplit(".", 1)[-1]
        body = json.dumps({"endpoints": self.live(model_id)}, separators=(",", ":")).encode()
        await msg.respond(body)

    async def _on_latest(self, msg: Any) -> None:
        if not msg.reply:
            return
        device_id = msg.subject.rsplit(".", 1)[-1]
        try:
            if self._latest_kv is None:
                assert self.bus is not None
                self._latest_kv = await self.bus.js.key_value(LATEST_BUCKET)
            entry = await self._latest_kv.get(device_id)
        except (BucketNotFoundError, KeyNotFoundError, NotFoundError):
            await self.bus.nc.publish(msg.reply, b"", headers={"Aiot-Status": "not_found"})  # type: ignore[union-attr]
            return
        except Exception as exc:  # noqa: BLE001 - told to the caller, never crashes the handler
            await self.bus.nc.publish(
                msg.reply,
                b"",
                headers={
                    "Aiot-Status": "error",  # type: ignore[union-attr]
                    "Aiot-Error": f"{type(exc).__name__}: {exc}"[:200],
                },
            )
            return
        if not entry.value:
            await self.bus.nc.publish(msg.reply, b"", headers={"Aiot-Status": "not_found"})  # type: ignore[union-attr]
            return
        await self.bus.nc.publish(msg.reply, entry.value, headers={"Aiot-Status": "ok"})  # type: ignore[union-attr]
