"""Ingest against a real nats-server: good readings are stored, bad ones counted and kept out of the stream."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta

import cv2
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from aiot.bus import codec
from aiot.devices import subjects
from aiot.devices.ingest import LATEST_BUCKET, READINGS_STREAM, Ingest, IngestConfig

from .conftest import CAMERA, LAMP, TEMPERATURE, DictDirectory
from .helpers import wait_until

T1, CAM, LMP = "dev_temp000001", "dev_cam0000001", "dev_lamp000001"


def _jpeg(size: int = 32) -> bytes:
    img = (np.arange(size * size * 3) % 251).astype(np.uint8).reshape(size, size, 3)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return buf.tobytes()


@pytest.fixture
async def ingest(nc):
    registry = CollectorRegistry()
    ing = Ingest(nc, DictDirectory({T1: TEMPERATURE, CAM: CAMERA, LMP: LAMP}), registry=registry)
    ing.registry = registry  # type: ignore[attr-defined]
    await ing.start()
    yield ing
    await ing.stop()


async def _stream_count(nc, device_id: str) -> int:
    js = nc.jetstream()
    subject = subjects.readings_subject(device_id)
    info = await js.stream_info(READINGS_STREAM, subjects_filter=subject)
    return (info.state.subjects or {}).get(subject, 0)


async def test_good_reading_lands_in_latest_history_and_presence(nc, ingest):
    ts = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    await nc.publish(subjects.data_subject(T1), codec.encode_reading({"temperature": 21.5, "humidity": 40}, ts))
    await nc.publish(subjects.data_subject(T1), b'{"temperature": 22, "humidity": 41}')
    await wait_until(lambda: ingest.accepted == 2)
    await ingest.wait_stored()
    latest = await ingest.latest(T1)
    assert latest is not None and latest.values == {"temperature": 22, "humidity": 41}
    hist = await ingest.history(T1)
    assert [r.values["temperature"] for r in hist] == [21.5, 22]
    assert hist[0].ts == ts and hist[0].seq is not None
    pres = await ingest.presence(T1)
    assert pres is not None and pres["status"] == "online"
    await nc.publish(subjects.presence_subject(T1), b"offline")
    await nc.flush()
    await wait_until(lambda: ingest.metrics.accepted.labels(channel="presence")._value.get() >= 1)
    await asyncio.sleep(0.05)
    assert (await ingest.presence(T1))["status"] == "offline"
    assert ingest.registry.get_sample_value("aiot_ingest_accepted_total", {"channel": "data"}) == 2


async def test_bad_readings_counted_by_reason_and_never_stored(nc, ingest, caplog):
    caplog.set_level(logging.WARNING, logger="aiot.devices.ingest")
    bad = [
        (T1, b'{"temperature": "hot", "humidity": 1}', "wrong_type"),
        (T1, b'{"temperature": 20}', "missing_field"),
        (T1, b'{"temperature": 200, "humidity": 1}', "out_of_range"),
        (T1, b"\xff\xfe garbage", "undecodable"),
        (T1, b"[1, 2]", "not_an_object"),
        (CAM, codec.encode_frame(b"\xff\xd8\xff" + b"\0" * 300_000, "jpeg"), "oversized"),
        (CAM, b'{"temperature": 1}', "undecodable"),
        ("dev_nobody0001", b'{"temperature": 1, "humidity": 1}', "unknown_device"),
    ]
    for device_id, payload, _ in bad:
        await nc.publish(subjects.data_subject(device_id), payload)
    await nc.publish(subjects.state_subject(T1), b'{"state": {}}')  # a sensor reporting state
    await wait_until(lambda: sum(ingest.rejected.values()) == len(bad) + 1)
    expected: dict[str, int] = {}
    for _, _, reason in bad:
        expected[reason] = expected.get(reason, 0) + 1
    expected["wrong_kind"] = 1
    assert ingest.rejected == expected
    for reason, count in expected.items():
        assert ingest.registry.get_sample_value("aiot_ingest_rejected_total", {"reason": reason}) == count
    # nothing reached the validated stream or the latest store
    assert await _stream_count(nc, T1) == 0
    assert await _stream_count(nc, CAM) == 0
    assert await ingest.latest(T1) is None
    assert "dev_nobody0001" in caplog.text and "unknown_device" in caplog.text
    # and ingest still works afterwards
    await nc.publish(subjects.data_subject(T1), b'{"temperature": 1, "humidity": 2}')
    await wait_until(lambda: ingest.accepted == 1)


async def test_frames_stored_as_is_and_controller_state(nc, ingest):
    jpeg = _jpeg()
    frame = codec.encode_frame(jpeg, "jpeg", width=32, height=32)
    await nc.publish(subjects.data_subject(CAM), frame)
    await nc.publish(subjects.state_subject(LMP), codec.encode_state({"on": True, "level": 80}, cmd_id="c1"))
    await wait_until(lambda: ingest.accepted == 2)
    await ingest.wait_stored()
    js = nc.jetstream()
    raw = await js.get_last_msg(READINGS_STREAM, subjects.readings_subject(CAM))
    assert raw.data == frame  # byte-identical, not decoded/re-encoded
    latest = await ingest.latest(CAM)
    assert latest.frame is not None and latest.frame.data == jpeg
    assert latest.frame.image().shape == (32, 32, 3)
    state = await ingest.latest(LMP)
    assert state.channel == "state" and state.cmd_id == "c1" and state.values == {"on": True, "level": 80}
    kv = await js.key_value(LATEST_BUCKET)
    assert json.loads((await kv.get(LMP)).value)["cmd_id"] == "c1"


async def test_history_limit_and_since(nc):
    ing = Ingest(
        nc, DictDirectory({T1: TEMPERATURE}), IngestConfig(history_max_msgs_per_device=50), registry=CollectorRegistry()
    )
    await ing.start()
    try:
        for i in range(60):
            await nc.publish(subjects.data_subject(T1), codec.encode_reading({"temperature": i, "humidity": 1}))
        await wait_until(lambda: ing.accepted == 60)
        await ing.wait_stored()
        assert await _stream_count(nc, T1) == 50  # bounded per device
        last = await ing.history(T1, limit=5)
        assert [r.values["temperature"] for r in last] == [55, 56, 57, 58, 59]
        everything = await ing.history(T1, limit=1000)
        assert [r.values["temperature"] for r in everything] == list(range(10, 60))
        cut = datetime.now(UTC)
        await asyncio.sleep(0.01)
        await nc.publish(subjects.data_subject(T1), codec.encode_reading({"temperature": 77, "humidity": 1}))
        await wait_until(lambda: ing.accepted == 61)
        await ing.wait_stored()
        recent = await ing.history(T1, since=cut)
        assert [r.values["temperature"] for r in recent] == [77]
        assert await ing.history(T1, since=cut + timedelta(hours=1)) == []
        assert await ing.history("dev_nobody0001") == []
    finally:
        await ing.stop()


async def test_a_resent_reading_is_stored_once(nc, ingest):
    """An MQTT device resends a QoS 1 reading whose PUBACK it missed (its server went away): same device, same
    timestamp, so the history keeps one copy (its record id is the JetStream message id)."""
    reading = codec.encode_reading({"temperature": 20.5, "humidity": 40}, datetime(2024, 5, 2, 8, 0, tzinfo=UTC))
    for _ in range(2):
        await nc.publish(subjects.data_subject(T1), reading)
    await wait_until(lambda: ingest.accepted == 2)
    await ingest.wait_stored()
    assert await _stream_count(nc, T1) == 1


async def test_a_fast_device_has_every_reading_in_history_and_only_the_newest_written_as_latest(nc, ingest):
    """A burst of 50 readings: all 50 stored in history, the latest value is the 50th, and the KV latest bucket
    was written a few times, not 50 (a write per `latest_interval` per device; the newest wins)."""
    js = nc.jetstream()
    before = (await js.stream_info(f"KV_{LATEST_BUCKET}")).state.last_seq
    start = datetime(2024, 5, 3, 9, 0, tzinfo=UTC)
    for i in range(50):
        ts = start + timedelta(milliseconds=i)
        await nc.publish(subjects.data_subject(T1), codec.encode_reading({"temperature": i, "humidity": 40}, ts))
    await wait_until(lambda: ingest.accepted == 50)
    await ingest.wait_stored()
    assert await _stream_count(nc, T1) == 50
    latest = await ingest.latest(T1)
    assert latest is not None and latest.values["temperature"] == 49
    writes = (await js.stream_info(f"KV_{LATEST_BUCKET}")).state.last_seq - before
    assert 1 <= writes <= 10, writes


async def test_a_history_write_that_fails_is_retried_until_the_stream_takes_it(nc, ingest):
    """The stream is gone for a moment (on a cluster: its leader died and a new one is being elected): the
    validated reading is written again once the stream answers, not dropped with an error line."""
    js = nc.jetstream()
    await js.delete_stream(READINGS_STREAM)
    await nc.publish(
        subjects.data_subject(T1), codec.encode_reading({"temperature": 19.0, "humidity": 40}, datetime.now(UTC))
    )
    await wait_until(lambda: ingest.accepted == 1)
    await asyncio.sleep(1.0)  # the first write and a retry or two fail meanwhile
    await ingest._ensure_storage()  # the stream is back (what a new leader means for a writer)
    await ingest.wait_stored(wait_s=10)
    assert await _stream_count(nc, T1) == 1
    assert ingest.registry.get_sample_value("aiot_ingest_store_retries_total") == 1
    assert ingest.registry.get_sample_value("aiot_ingest_store_errors_total") == 0


async def test_a_history_write_whose_acknowledgement_never_comes_is_retried(nc):
    """The write's acknowledgement is lost (its connection's server went away): nothing would ever settle it,
    leaving the reading unstored; after `ack_timeout` it counts as failed and is written again."""
    registry = CollectorRegistry()
    ing = Ingest(nc, DictDirectory({T1: TEMPERATURE}), IngestConfig(ack_timeout=0.3), registry=registry)
    await ing.start()
    lost: list[str] = []

    class FirstAckLost:  # the writer's connection, but the first write's acknowledgement goes nowhere
        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            return getattr(nc, name)

        async def publish(self, subject, payload, reply="", headers=None):  # type: ignore[no-untyped-def]
            if not lost:
                lost.append(reply)
                reply = "_INBOX.nobody.listens"
            await nc.publish(subject, payload, reply=reply, headers=headers)

    ing.writer.nc = FirstAckLost()
    try:
        await nc.publish(subjects.data_subject(T1), codec.encode_reading({"temperature": 18.0, "humidity": 40}))
        await wait_until(lambda: ing.accepted == 1)
        await wait_until(lambda: registry.get_sample_value("aiot_ingest_store_retries_total") == 1, within=10)
        assert lost and await _stream_count(nc, T1) == 1  # the first write was stored; its retry is the same one
    finally:
        await ing.stop()
