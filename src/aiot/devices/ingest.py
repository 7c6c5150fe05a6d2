"""Ingest: the one gate between raw device messages and everything that consumes device data.

Devices publish on `aiot.dev.<id>.data|state|presence` (over NATS or MQTT). Ingest (one subscription on
`aiot.dev.*.*`, commands skipped, so each device's messages are handled in order; on a NATS cluster a second
subscription over another server, see `ingest_service`) looks each device up,
validates the message with the codec, and only then

* writes the device's latest record to KV bucket `aiot_device_latest` (key = device id),
* writes presence / last-seen to KV bucket `aiot_device_presence`,
* re-publishes the record into the JetStream stream `AIOT_READINGS` as `aiot.readings.<id>` (bounded by age,
  count, bytes and count per device).

Apps read `AIOT_READINGS`, never the raw subjects, so a malformed or unauthorised reading cannot reach an app.
Bad messages are counted (`aiot_ingest_rejected_total{reason}`), logged at WARNING at most once per device and
reason per `log_interval`, and dropped; no payload can crash the loop (the codec raises only PayloadError and
everything else is caught per message too).

Throughput choices (tens of thousands of readings a second): device types are cached for `lookup_ttl` seconds,
history publishes are pipelined (`aiot.bus.stream_writer`: numbered replies on one subscription, no future or
timer per write), the latest value is a fire-and-forget KV write at most every `latest_interval`
per device (the newest reading wins; a slower device's every reading is written at once) and last-seen is
written at most every `presence_interval` seconds per device.

Nothing validated is dropped on a broker fault: a history write that fails (its stream's leader died, a server of
the cluster went away) is retried for `store_retry_for` seconds. Each record carries an id (`record_id`: device,
channel, the reading's instant) as `Nats-Msg-Id`, so a retry of a write that had in fact been stored, or a
device resending a reading whose acknowledgement it missed, leaves one copy (within `dedupe_window`). A retried
record can land after later ones in the stream; its `ts` still says when it was measured.

Stored record format (the value in KV latest and in the stream):
  JSON devices: `{"device_id", "channel": "data"|"state", "ts", "received_at", "values", "cmd_id", "error"}`
  frame devices: the frame bytes exactly as received (header + JPEG/PNG); headers say who sent it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from nats.js import api as js_api
from nats.js.errors import APIError, BucketNotFoundError, NotFoundError
from prometheus_client import REGISTRY, CollectorRegistry, Counter

from aiot.bus import codec
from aiot.bus.client import is_storage_full, reservation_failed
from aiot.bus.codec import Frame, PayloadError, Reading, StateReport
from aiot.bus.stream_writer import StreamWriter
from aiot.devices import subjects

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg

    from aiot.artifacts.manifests import DeviceTypeDefinition

log = logging.getLogger(__name__)

LATEST_BUCKET = "aiot_device_latest"
PRESENCE_BUCKET = "aiot_device_presence"
READINGS_STREAM = "AIOT_READINGS"
QUEUE_GROUP = "aiot-ingest"

HDR_DEVICE = "Aiot-Device"
HDR_CHANNEL = "Aiot-Channel"  # data | state | frame
HDR_MSG_ID = "Nats-Msg-Id"  # JetStream drops a second record with the same id inside the duplicate window
CHANNELS = ("data", "state", "frame", "presence")  # values of the accepted counter's `channel` label

# reasons that are not codec codes
UNKNOWN_DEVICE = "unknown_device"
BAD_SUBJECT = "bad_subject"
WRONG_KIND = "wrong_kind"  # e.g. a sensor publishing state
INTERNAL = "internal_error"


class DeviceDirectory(Protocol):
    """Where ingest learns a device's type. Returns None for unknown or disabled devices (their messages are
    dropped and counted as `unknown_device`)."""

    async def lookup(self, device_id: str) -> DeviceTypeDefinition | None: ...


@dataclass
class IngestConfig:
    history_max_age: float = 7 * 24 * 3600.0  # seconds
    history_max_msgs: int = 5_000_000
    history_max_bytes: int = 2 * 1024**3
    history_max_msgs_per_device: int = 100_000
    lookup_ttl: float = 5.0  # seconds a directory answer (also "unknown") is trusted
    presence_interval: float = 5.0  # min seconds between last-seen writes per device
    latest_interval: float = 0.05  # min seconds between KV latest writes per device (the newest one wins)
    log_interval: float = 30.0  # min seconds between warnings per (device, reason)
    queue_group: str | None = QUEUE_GROUP  # several ingest replicas share the work
    max_pending_acks: int = 4000
    replicas: int = 1  # of the history stream and the KV buckets (AIOT_JETSTREAM_REPLICAS)
    dedupe_window: float = 120.0  # seconds the history stream remembers record ids (a resent reading is one)
    store_retry_for: float = 30.0  # seconds a failed history write is retried (a stream leader election)
    ack_timeout: float = 5.0  # a history write unacknowledged this long counts as failed (and is retried)


@dataclass(frozen=True)
class StoredRecord:
    """A validated message as stored. `frame` is set (and `values` empty) for image sensors."""

    device_id: str
    channel: str  # data | state
    ts: datetime
    values: dict[str, Any] = field(default_factory=dict)
    received_at: datetime | None = None
    cmd_id: str | None = None
    error: str | None = None
    frame: Frame | None = None
    seq: int | None = None  # stream sequence (history) or KV revision (latest)


def decode_record(data: bytes, device_id: str, seq: int | None = None) -> StoredRecord:
    """Parse a stored record (KV latest value or stream message)."""
    if codec.is_frame(data):
        fr = codec.decode_frame(data)
        return StoredRecord(device_id=device_id, channel="data", ts=fr.ts, frame=fr, seq=seq)
    obj = json.loads(data)
    return StoredRecord(
        device_id=obj["device_id"],
        channel=obj["channel"],
        ts=codec.parse_timestamp(obj["ts"]),
        values=obj.get("values") or {},
        received_at=codec.parse_timestamp(obj["received_at"]) if obj.get("received_at") else None,
        cmd_id=obj.get("cmd_id"),
        error=obj.get("error"),
        seq=seq,
    )


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.accepted = Counter(
            "aiot_ingest_accepted_total",
            "Device messages validated and stored by ingest",
            ["channel"],
            registry=registry,
        )
        self.rejected = Counter(
            "aiot_ingest_rejected_total",
            "Device messages dropped by ingest, by reason",
            ["reason"],
            registry=registry,
        )
        self.store_errors = Counter(
            "aiot_ingest_store_errors_total", "Validated messages ingest failed to store", registry=registry
        )
        self.store_retries = Counter(
            "aiot_ingest_store_retries_total",
            "History writes that failed once (e.g. a stream leader election) and were stored on a retry",
            registry=registry,
        )


_default_metrics: _Metrics | None = None


def _metrics_for(registry: CollectorRegistry | None) -> _Metrics:
    global _default_metrics
    if registry is not None:
        return _Metrics(registry)
    if _default_metrics is None:
        _default_metrics = _Metrics(REGISTRY)
    return _default_metrics


def record_id(device_id: str, channel: str, ts: datetime) -> str:
    """The identity of a stored record: one device's message on one channel at one instant. A device that sends
    a reading again (an MQTT QoS 1 resend after its server went away) or a history write retried after a stream
    leader change carries the same id, and the stream keeps the first."""
    return f"{device_id}.{channel}.{round(ts.timestamp() * 1_000_000)}"


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Ingest:
    """See the module docstring. Use `await start()`, `await stop()`; query with `latest()`/`history()`."""

    def __init__(
        self,
        nc: Client,
        directory: DeviceDirectory,
        config: IngestConfig | None = None,
        *,
        registry: CollectorRegistry | None = None,
        also_subscribe: list[Client] | None = None,
    ) -> None:
        self.nc = nc
        self.also_subscribe = also_subscribe or []  # more connections taking device messages (other servers)
        self.js = nc.jetstream()
        self.directory = directory
        self.config = config or IngestConfig()
        self.metrics = _metrics_for(registry)
        self.rejected: dict[str, int] = {}  # reason -> count, for this instance (tests, status pages)
        self.accepted = 0
        self._types: dict[str, tuple[float, Any]] = {}
        self._presence: dict[str, tuple[str, float]] = {}  # device -> (status, monotonic of last write)
        self._presence_since: dict[str, str] = {}
        self._last_log: dict[tuple[str, str], float] = {}
        self._suppressed: dict[tuple[str, str], int] = {}
        self._subs: list[Any] = []
        self._pending: set[asyncio.Future[Any]] = set()  # history writes being retried
        self.writer = StreamWriter(
            nc, self._on_write_failed, max_pending=self.config.max_pending_acks, ack_timeout=self.config.ack_timeout
        )
        self._latest_written: dict[str, float] = {}  # device -> monotonic of its last KV latest write
        self._latest_due: dict[str, bytes] = {}  # device -> newest record not yet written to KV latest
        self._latest_flusher: asyncio.Task[None] | None = None
        self._accepted_by_channel = {name: self.metrics.accepted.labels(channel=name) for name in CHANNELS}

    # ------------------------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Create the buckets and the stream when missing (or update the stream's limits), then subscribe."""
        await self._ensure_storage()
        await self.writer.start()
        # One subscription, not one per channel: nats-py runs each subscription's callbacks in its own task, so
        # separate subscriptions could apply a device's "offline" before its last reading (and flip it back
        # online). One subscription keeps each device's messages in the order it sent them.
        # Each extra connection (another server of the cluster) is one more member of the queue group: messages go
        # to one member each, so order per device holds only within a member (as between replicas).
        queue = self.config.queue_group or ""
        for nc in (self.nc, *self.also_subscribe):
            self._subs.append(await nc.subscribe(subjects.ALL_DEVICE_MESSAGES, queue=queue, cb=self._on_message))
            await nc.flush()

    async def stop(self) -> None:
        """Stop taking messages and wait (briefly) for outstanding stores."""
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.drain()
        self._subs.clear()
        await self.wait_stored()
        await self.writer.stop()

    async def wait_stored(self, wait_s: float = 5.0) -> None:
        """Wait until every history publish so far has been acknowledged (or `wait_s` seconds), after writing
        the latest values that wait for their `latest_interval`."""
        await self._flush_latest()
        await self.writer.drain(wait_s)
        if self._pending:  # retries started by writes that failed just now
            await asyncio.wait(list(self._pending), timeout=wait_s)
        with contextlib.suppress(Exception):
            await self.nc.flush(timeout=int(max(1, wait_s)))

    async def _ensure_storage(self) -> None:
        cfg = self.config
        stream = js_api.StreamConfig(
            name=READINGS_STREAM,
            subjects=[subjects.ALL_READINGS],
            description="Validated device readings and controller state, written by ingest only",
            storage=js_api.StorageType.FILE,
            retention=js_api.RetentionPolicy.LIMITS,
            discard=js_api.DiscardPolicy.OLD,
            max_age=cfg.history_max_age,
            max_msgs=cfg.history_max_msgs,
            max_bytes=cfg.history_max_bytes,
            max_msgs_per_subject=cfg.history_max_msgs_per_device,
            allow_direct=True,
            num_replicas=cfg.replicas,
            duplicate_window=cfg.dedupe_window,
        )
        try:
            try:
                await self.js.stream_info(READINGS_STREAM)
                await self.js.update_stream(stream)
            except NotFoundError:
                await self.js.add_stream(stream)
        except APIError as exc:
            if is_storage_full(exc):
                mb = cfg.history_max_bytes // 1024**2
                raise reservation_failed(
                    exc, f"the readings history stream {READINGS_STREAM}", "history_max_mb", mb
                ) from exc
            raise
        for bucket, desc in (
            (LATEST_BUCKET, "Latest validated record per device"),
            (PRESENCE_BUCKET, "Presence (online/offline) and last seen per device"),
        ):
            try:
                await self.js.key_value(bucket)
            except BucketNotFoundError:
                await self.js.create_key_value(
                    js_api.KeyValueConfig(bucket=bucket, description=desc, history=1, replicas=cfg.replicas)
                )
            else:
                info = await self.js.stream_info(f"KV_{bucket}")
                if info.config.num_replicas != cfg.replicas:  # AIOT_JETSTREAM_REPLICAS changed: apply it
                    info.config.num_replicas = cfg.replicas
                    await self.js.update_stream(info.config)

    # ------------------------------------------------------------------------------------------ messages

    async def _on_message(self, msg: Msg) -> None:
        device_id = "?"
        try:
            try:
                device_id, channel = subjects.parse_subject(msg.subject)
            except ValueError:
                self._reject(device_id, BAD_SUBJECT, f"not a device subject: {msg.subject[:120]!r}")
                return
            if channel == "cmd":  # commands are for devices; the wildcard just happens to match them
                return
            type_def = await self._lookup(device_id)
            if type_def is None:
                self._reject(device_id, UNKNOWN_DEVICE, "device is not registered or is disabled")
                return
            now = datetime.now(UTC)
            if channel == "presence":
                await self._on_presence(device_id, codec.decode_presence(msg.data), now)
                return
            kind = codec.spec_attr(type_def, "kind")
            if channel == "data" and kind == "sensor":
                item: Reading | Frame | StateReport = codec.decode_reading(msg.data, type_def, now=now)
            elif channel == "state" and kind == "controller":
                item = codec.decode_state(msg.data, type_def, now=now)
            else:
                self._reject(device_id, WRONG_KIND, f"a {kind} does not publish {channel} messages")
                return
            await self._store(device_id, channel, item, msg.data, now)
        except PayloadError as exc:
            self._reject(device_id, exc.code, exc.message)
        except Exception as exc:  # never let one message stop ingest
            self._reject(device_id, INTERNAL, f"{type(exc).__name__}: {exc}")

    async def _lookup(self, device_id: str) -> Any:
        hit = self._types.get(device_id)
        mono = time.monotonic()
        if hit is not None and hit[0] > mono:
            return hit[1]
        type_def = await self.directory.lookup(device_id)
        self._types[device_id] = (mono + self.config.lookup_ttl, type_def)
        return type_def

    def forget(self, device_id: str | None = None) -> None:
        """Drop cached directory answers (all, or one device's), e.g. right after a device is disabled."""
        if device_id is None:
            self._types.clear()
        else:
            self._types.pop(device_id, None)

    async def _store(
        self, device_id: str, channel: str, item: Reading | Frame | StateReport, raw: bytes, now: datetime
    ) -> None:
        if isinstance(item, Frame):
            record, hdr_channel = bytes(raw), "frame"
        else:
            body: dict[str, Any] = {
                "device_id": device_id,
                "channel": channel,
                "ts": _iso(item.ts),
                "received_at": _iso(now),
            }
            if isinstance(item, StateReport):
                body.update(values=item.state, cmd_id=item.cmd_id, error=item.error)
            else:
                body["values"] = item.values
            record, hdr_channel = json.dumps(body, separators=(",", ":")).encode(), channel
        headers = {HDR_DEVICE: device_id, HDR_CHANNEL: hdr_channel, HDR_MSG_ID: record_id(device_id, channel, item.ts)}
        subject = subjects.readings_subject(device_id)
        await self.writer.write(subject, record, headers)
        await self._write_latest(device_id, record)
        await self._touch(device_id, now)
        self.accepted += 1
        self._accepted_by_channel[hdr_channel].inc()

    async def _write_latest(self, device_id: str, record: bytes) -> None:
        """Write the device's latest record now, or, when it was written less than `latest_interval` ago, keep
        only the newest for the flusher: a device at 400 Hz costs 20 KV writes a second, not 400."""
        mono = time.monotonic()
        if (
            device_id in self._latest_due
            or mono - self._latest_written.get(device_id, -1e9) < self.config.latest_interval
        ):
            self._latest_due[device_id] = record
            if self._latest_flusher is None or self._latest_flusher.done():
                self._latest_flusher = asyncio.get_running_loop().create_task(self._flush_latest_later())
            return
        self._latest_written[device_id] = mono
        await self.nc.publish(f"$KV.{LATEST_BUCKET}.{device_id}", record)

    async def _flush_latest_later(self) -> None:
        while self._latest_due:
            await asyncio.sleep(self.config.latest_interval)
            await self._flush_latest()

    async def _flush_latest(self) -> None:
        due, self._latest_due = self._latest_due, {}
        mono = time.monotonic()
        for device_id, record in due.items():
            self._latest_written[device_id] = mono
            await self.nc.publish(f"$KV.{LATEST_BUCKET}.{device_id}", record)

    def _on_write_failed(self, subject: str, record: bytes, headers: dict[str, str], error: BaseException) -> None:
        """A history write was refused or its acknowledgement is overdue (e.g. the stream's leader died): write
        it again once there is a new one."""
        retry = asyncio.get_running_loop().create_task(self._store_again(subject, record, headers, error))
        self._pending.add(retry)
        retry.add_done_callback(self._pending.discard)

    async def _store_again(self, subject: str, record: bytes, headers: dict[str, str], first: BaseException) -> None:
        """Retry one history write until it is acknowledged or `store_retry_for` has passed. Safe to repeat: the
        record id makes JetStream keep one copy even when a write that seemed to fail had been stored."""
        deadline, delay, last = time.monotonic() + self.config.store_retry_for, 0.25, first
        while time.monotonic() < deadline:
            await asyncio.sleep(delay)
            try:
                await self.js.publish(subject, record, headers=headers, timeout=2.0)
                self.metrics.store_retries.inc()
                return
            except Exception as exc:  # noqa: BLE001 - any failure: try again until the deadline
                last, delay = exc, min(delay * 2, 2.0)
        self.metrics.store_errors.inc()
        log.error("ingest could not store a reading in %s: %s", READINGS_STREAM, last)

    # ------------------------------------------------------------------------------------------ presence

    async def _touch(self, device_id: str, now: datetime) -> None:
        """A good message proves the device is online; write last-seen at most every presence_interval."""
        status, written = self._presence.get(device_id, ("", 0.0))
        mono = time.monotonic()
        if status == "online" and mono - written < self.config.presence_interval:
            return
        await self._write_presence(device_id, "online", now, changed=status != "online")

    async def _on_presence(self, device_id: str, status: str, now: datetime) -> None:
        await self._write_presence(device_id, status, now, changed=True)
        self._accepted_by_channel["presence"].inc()

    async def _write_presence(self, device_id: str, status: str, now: datetime, *, changed: bool) -> None:
        since = _iso(now)
        if not changed:
            prev = self._presence_since.get(device_id)
            since = prev or since
        self._presence_since[device_id] = since
        self._presence[device_id] = (status, time.monotonic())
        value = json.dumps({"status": status, "since": since, "last_seen": _iso(now)}).encode()
        await self.nc.publish(f"$KV.{PRESENCE_BUCKET}.{device_id}", value)

    # ------------------------------------------------------------------------------------------ rejects

    def _reject(self, device_id: str, reason: str, message: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        self.metrics.rejected.labels(reason=reason).inc()
        key = (device_id, reason)
        mono = time.monotonic()
        if mono - self._last_log.get(key, -1e9) >= self.config.log_interval:
            suppressed = self._suppressed.pop(key, 0)
            more = f" ({suppressed} more since last warning)" if suppressed else ""
            log.warning("ingest dropped a message from %s: %s: %s%s", device_id, reason, message, more)
            self._last_log[key] = mono
        else:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1

    # ------------------------------------------------------------------------------------------ queries

    async def latest(self, device_id: str) -> StoredRecord | None:
        """The device's latest validated record, or None."""
        kv = await self.js.key_value(LATEST_BUCKET)
        try:
            entry = await kv.get(subjects.check_device_id(device_id))
        except (NotFoundError, BucketNotFoundError):
            return None
        if not entry.value:
            return None
        return decode_record(entry.value, device_id, seq=entry.revision)

    async def presence(self, device_id: str) -> dict[str, Any] | None:
        """`{"status": "online"|"offline", "since": iso, "last_seen": iso}` or None when never seen."""
        kv = await self.js.key_value(PRESENCE_BUCKET)
        try:
            entry = await kv.get(subjects.check_device_id(device_id))
        except (NotFoundError, BucketNotFoundError):
            return None
        return json.loads(entry.value) if entry.value else None

    async def history(self, device_id: str, since: datetime | None = None, limit: int = 100) -> list[StoredRecord]:
        """Validated records oldest first. With `since`: the first `limit` stored at or after it; without:
        the most recent `limit`."""
        return await read_history(self.js, device_id, since=since, limit=limit)


# ---------------------------------------------------------------------------------------------- history


async def _pending_from(js: Any, subject: str, start_seq: int) -> int:
    cfg = js_api.ConsumerConfig(
        filter_subject=subject,
        deliver_policy=js_api.DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=start_seq,
        ack_policy=js_api.AckPolicy.NONE,
        mem_storage=True,
        inactive_threshold=5.0,
    )
    info = await js.add_consumer(READINGS_STREAM, cfg)
    with contextlib.suppress(Exception):
        await js.delete_consumer(READINGS_STREAM, info.name)
    return info.num_pending


async def read_history(
    js: Any, device_id: str, *, since: datetime | None = None, limit: int = 100
) -> list[StoredRecord]:
    """Read a device's records from AIOT_READINGS (see `Ingest.history`). Usable without an Ingest (API)."""
    if limit <= 0:
        return []
    subject = subjects.readings_subject(device_id)
    try:
        info = await js.stream_info(READINGS_STREAM, subjects_filter=subject)
    except NotFoundError:
        return []
    total = (info.state.subjects or {}).get(subject, 0)
    if total == 0:
        return []
    cfg = js_api.ConsumerConfig(
        filter_subject=subject, ack_policy=js_api.AckPolicy.NONE, mem_storage=True, inactive_threshold=10.0
    )
    if since is not None:
        cfg.deliver_policy = js_api.DeliverPolicy.BY_START_TIME
        cfg.opt_start_time = since
    elif total > limit:
        # Find the latest start sequence that still leaves >= limit records: pending(seq) never grows with seq.
        lo, hi = info.state.first_seq, info.state.last_seq
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if await _pending_from(js, subject, mid) >= limit:
                lo = mid
            else:
                hi = mid - 1
        cfg.deliver_policy = js_api.DeliverPolicy.BY_START_SEQUENCE
        cfg.opt_start_seq = lo
    else:
        cfg.deliver_policy = js_api.DeliverPolicy.ALL
    psub = await js.pull_subscribe(subject, durable=None, stream=READINGS_STREAM, config=cfg)
    out: list[StoredRecord] = []
    consumer_name = None
    try:
        info_c = await psub.consumer_info()
        consumer_name = info_c.name
        want = min(limit, info_c.num_pending)
        while len(out) < want:
            msgs = await psub.fetch(batch=min(256, want - len(out)), timeout=2.0)
            for m in msgs:
                out.append(decode_record(m.data, device_id, seq=m.metadata.sequence.stream))
    finally:
        with contextlib.suppress(Exception):
            await psub.unsubscribe()
        if consumer_name:
            with contextlib.suppress(Exception):
                await js.delete_consumer(READINGS_STREAM, consumer_name)
    return out[:limit]
