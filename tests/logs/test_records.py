"""Parsing what agents, the SDK and people publish on the log subjects: tolerant of shape, strict about trust."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from aiot.logs.records import InvalidLogRecord, normalise_level, parse_level, parse_record, try_parse

T0 = datetime(2024, 5, 1, 8, 30, tzinfo=UTC)


def test_sdk_record_with_epoch_seconds() -> None:
    body = {
        "ts": T0.timestamp(),
        "level": "WARNING",
        "service": "workload",
        "workload_id": "wl_a",
        "app_instance_id": "ins_1",
        "logger": "intruder",
        "message": "face seen",
    }
    record = parse_record(json.dumps(body).encode(), subject="aiot.logs.wl_a")
    assert record.ts == T0 and record.level == "WARNING" and record.app_instance_id == "ins_1"
    assert record.logger == "intruder" and record.message == "face seen" and record.extra == {}


def test_agent_record_with_iso_time_and_stream_field() -> None:
    body = {
        "ts": "2024-05-01T08:30:00+00:00",
        "level": "INFO",
        "service": "workload",
        "workload_id": "wl_a",
        "stream": "stderr",
        "message": "Traceback ...",
    }
    record = parse_record(json.dumps(body), subject="aiot.logs.wl_a")
    assert record.ts == T0 and record.extra == {"stream": "stderr"} and record.workload_id == "wl_a"


def test_subject_wins_over_the_claimed_workload() -> None:
    record = parse_record(b'{"message": "hi", "workload_id": "wl_victim"}', subject="aiot.logs.wl_me")
    assert record.workload_id == "wl_me" and record.extra["claimed_workload_id"] == "wl_victim"
    platform = parse_record(b'{"message": "hi", "service": "forged"}', subject="aiot.logs.platform.api")
    assert platform.service == "api" and platform.workload_id is None


def test_plain_text_is_kept_as_info_with_the_stream_time() -> None:
    record = parse_record(b"just a line\n", subject="aiot.logs.wl_a", received=T0)
    assert record.message == "just a line" and record.level == "INFO" and record.ts == T0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("warn", "WARNING"),
        ("Error", "ERROR"),
        ("fatal", "CRITICAL"),
        (30, "WARNING"),
        ("40", "ERROR"),
        (5, "DEBUG"),
        ("loud", "INFO"),
        (None, "INFO"),
    ],
)
def test_levels_are_normalised(value: object, expected: str) -> None:
    assert normalise_level(value) == expected


def test_query_levels_are_strict() -> None:
    assert parse_level("warn") == "WARNING"
    with pytest.raises(ValueError, match="expected one of DEBUG"):
        parse_level("loud")


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\xff\xfe\x00", "not UTF-8"),
        (b"   ", "empty"),
        (b"[1, 2]", "JSON object"),
        (b'{"level": "INFO"}', "no 'message'"),
        (b'{"message": ', "not valid"),
        (b"42", None),
    ],
)
def test_garbage_is_rejected_with_a_reason(data: bytes, why: str | None) -> None:
    if why is None:  # a bare number is plain text, kept
        assert try_parse(data) is not None
        return
    with pytest.raises(InvalidLogRecord, match=why):
        parse_record(data)
    assert try_parse(data) is None


def test_odd_times_fall_back_and_extra_is_json_safe() -> None:
    record = parse_record(
        json.dumps({"message": "m", "ts": "yesterday", "extra": {"n": 1}, "weird": [1, {"a": 2}]}), received=T0
    )
    assert record.ts == T0 and record.extra == {"n": 1, "weird": [1, {"a": 2}]}
    millis = parse_record(json.dumps({"message": "m", "ts": T0.timestamp() * 1000}))
    assert millis.ts == T0
