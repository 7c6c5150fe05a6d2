"""Codec round trips, every bad-payload class, and a fuzz test: decoding any bytes raises only PayloadError."""

from __future__ import annotations

import contextlib
import struct
from datetime import UTC, datetime

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiot.artifacts.manifests import DeviceTypeDefinition
from aiot.bus import codec
from aiot.bus.codec import PayloadError

TEMP = DeviceTypeDefinition.model_validate(
    {
        "name": "temperature",
        "kind": "sensor",
        "fields": {
            "temperature": {"type": "number", "min": -40, "max": 85},
            "count": {"type": "integer", "min": 0},
            "label": {"type": "string", "enum": ["a", "b"]},
            "ok": {"type": "boolean"},
        },
    }
)
CAM = DeviceTypeDefinition.model_validate(
    {"name": "camera", "kind": "sensor", "frame": {"encoding": "jpeg", "max_bytes": 50_000}}
)
LAMP = DeviceTypeDefinition.model_validate(
    {
        "name": "lamp",
        "kind": "controller",
        "commands": {"brightness": {"args": {"level": {"type": "integer", "min": 0, "max": 100}}}, "off": {"args": {}}},
        "state": {"on": {"type": "boolean"}, "level": {"type": "integer", "min": 0, "max": 100}},
    }
)
TS = datetime(2024, 5, 1, 12, 30, 15, 250000, tzinfo=UTC)
GOOD = {"temperature": 21.5, "count": 3, "label": "a", "ok": True}


def _image(fmt: str, w: int = 40, h: int = 30) -> bytes:
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = (255, 0, 0)  # BGR blue on the left half
    ok, buf = cv2.imencode(f".{fmt}", img)
    assert ok
    return buf.tobytes()


# ------------------------------------------------------------------------------------------- round trips


def test_reading_round_trip():
    reading = codec.decode_reading(codec.encode_reading(GOOD, TS), TEMP)
    assert reading == codec.Reading(ts=TS, values=GOOD)


@pytest.mark.parametrize(
    ("raw_ts", "expected"),
    [
        ('"2024-05-01T12:30:15.25Z"', TS),
        ('"2024-05-01T14:30:15.25+02:00"', TS),
        ('"2024-05-01T12:30:15.25"', TS),  # naive = UTC
        ("1714566615.25", TS),
        ("1714566615250", TS),  # milliseconds
    ],
)
def test_reading_timestamps(raw_ts, expected):
    payload = f'{{"ts": {raw_ts}, "temperature": 1, "count": 1, "label": "b", "ok": false}}'.encode()
    assert codec.decode_reading(payload, TEMP).ts == expected


def test_reading_without_ts_uses_receive_time_and_integral_float_is_integer():
    payload = b'{"temperature": 1, "count": 2.0, "label": "b", "ok": false}'
    reading = codec.decode_reading(payload, TEMP, now=TS)
    assert reading.ts == TS and reading.values["count"] == 2 and isinstance(reading.values["count"], int)


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_frame_round_trip_and_lazy_image(fmt):
    data = _image("jpg" if fmt == "jpeg" else "png")
    wire = codec.encode_frame(data, fmt, ts=TS, width=40, height=30)
    assert wire[:4] == b"AIFR" and len(wire) == 24 + len(data)
    spec = {"encoding": fmt, "max_bytes": 50_000}
    frame = codec.decode_frame(wire, spec)
    assert (frame.encoding, frame.ts, frame.width, frame.height, frame.data) == (fmt, TS, 40, 30, data)
    assert frame.to_bytes() == wire
    assert frame._cache == {}  # nothing decoded yet
    img = frame.image()
    assert img.shape == (30, 40, 3) and img.dtype == np.uint8
    assert img[0, 0, 2] > 200 and img[0, 0, 0] < 60  # RGB order: the blue half has blue in the last channel
    assert frame.image() is img  # decoded once


def test_frame_header_layout_is_documented_byte_by_byte():
    data = _image("jpg")
    wire = codec.encode_frame(data, "jpeg", ts=TS, width=640, height=480)
    assert wire[0:4] == b"AIFR"
    assert wire[4] == 1 and wire[5] == 1
    assert struct.unpack(">H", wire[6:8])[0] == 24
    assert struct.unpack(">q", wire[8:16])[0] == 1714566615250000
    assert struct.unpack(">HH", wire[16:20]) == (640, 480)
    assert struct.unpack(">I", wire[20:24])[0] == len(data)


def test_command_and_state_round_trip():
    wire = codec.encode_command("c1", "brightness", {"level": 5}, type_def=LAMP, ts=TS)
    assert codec.decode_command(wire, LAMP) == codec.Command("c1", "brightness", {"level": 5}, TS)
    state = codec.encode_state({"on": True, "level": 5}, cmd_id="c1", type_def=LAMP, ts=TS)
    assert codec.decode_state(state, LAMP) == codec.StateReport(TS, {"on": True, "level": 5}, "c1", None)
    hand_made = b'{"cmd_id": null, "state": {"on": false, "level": 0}}'
    assert codec.decode_state(hand_made, LAMP, now=TS).cmd_id is None
    assert codec.decode_presence(codec.encode_presence(True)) == "online"
    assert codec.decode_presence(b" OFFLINE\n") == "offline"


def test_type_definition_can_be_a_plain_dict():
    as_dict = TEMP.model_dump(mode="json", exclude_none=True)
    assert codec.decode_reading(codec.encode_reading(GOOD, TS), as_dict).values == GOOD


# ------------------------------------------------------------------------------------------- bad payloads


def _bad(payload: bytes, type_def=TEMP):
    with pytest.raises(PayloadError) as info:
        codec.decode_reading(payload, type_def)
    return info.value


@pytest.mark.parametrize(
    ("payload", "code", "field"),
    [
        (b'{"temperature": "hot", "count": 1, "label": "a", "ok": true}', "wrong_type", "temperature"),
        (b'{"temperature": true, "count": 1, "label": "a", "ok": true}', "wrong_type", "temperature"),
        (b'{"temperature": 1, "count": 1.5, "label": "a", "ok": true}', "wrong_type", "count"),
        (b'{"temperature": 1, "count": 1, "label": 3, "ok": true}', "wrong_type", "label"),
        (b'{"temperature": 1, "count": 1, "label": "a", "ok": 1}', "wrong_type", "ok"),
        (b'{"temperature": 1, "count": 1, "label": "a"}', "missing_field", "ok"),
        (b'{"temperature": 1, "count": 1, "label": "a", "ok": true, "x": 1}', "unknown_field", "x"),
        (b'{"temperature": 90, "count": 1, "label": "a", "ok": true}', "out_of_range", "temperature"),
        (b'{"temperature": 1, "count": -1, "label": "a", "ok": true}', "out_of_range", "count"),
        (b'{"temperature": 1, "count": 1, "label": "z", "ok": true}', "out_of_range", "label"),
        (b'{"temperature": NaN, "count": 1, "label": "a", "ok": true}', "undecodable", None),
        (b'{"ts": "yesterday", "temperature": 1, "count": 1, "label": "a", "ok": true}', "bad_timestamp", "ts"),
        (b'{"ts": 1e300, "temperature": 1, "count": 1, "label": "a", "ok": true}', "bad_timestamp", "ts"),
        (b"[1]", "not_an_object", None),
        (b"\xff\xfe", "undecodable", None),
        (b"{", "undecodable", None),
        (b"", "undecodable", None),
    ],
)
def test_bad_readings(payload, code, field):
    err = _bad(payload)
    assert (err.code, err.field) == (code, field)
    assert err.message


def test_frame_sent_by_json_type_is_refused():
    assert _bad(codec.encode_frame(_image("jpg"), "jpeg")).code == "not_supported"


def test_bad_frames():
    jpeg, png = _image("jpg"), _image("png")
    good = codec.encode_frame(jpeg, "jpeg", ts=TS)
    assert _bad(b"not a frame", CAM).code == "undecodable"
    assert _bad(good[:20], CAM).code == "undecodable"
    assert _bad(good[:4] + b"\x07" + good[5:], CAM).code == "bad_header"  # version 7
    assert _bad(good[:5] + b"\x09" + good[6:], CAM).code == "bad_header"  # encoding 9
    assert _bad(good[:-1], CAM).code == "bad_header"  # truncated data
    assert _bad(good[:6] + b"\xff\xff" + good[8:], CAM).code == "bad_header"  # header length beyond payload
    assert _bad(codec.encode_frame(png, "png"), CAM).code == "encoding_mismatch"  # type wants jpeg
    # header says jpeg, data is png
    lying = good[:20] + struct.pack(">I", len(png)) + png
    assert _bad(lying, CAM).code == "encoding_mismatch"
    big = b"\xff\xd8\xff" + b"\0" * 60_000
    assert _bad(codec.encode_frame(big, "jpeg"), CAM).code == "oversized"
    # valid header, undecodable image: only found when the app asks for pixels
    frame = codec.decode_frame(codec.encode_frame(b"\xff\xd8\xff" + b"junk", "jpeg"), CAM.frame)
    with pytest.raises(PayloadError) as info:
        frame.image()
    assert info.value.code == "bad_image"
    with pytest.raises(PayloadError):
        codec.encode_frame(png, "jpeg")  # encoding refuses a lie too


def test_bad_commands_and_state():
    def code_of(fn, *a, **kw):
        with pytest.raises(PayloadError) as info:
            fn(*a, **kw)
        return info.value.code

    assert code_of(codec.decode_command, b'{"cmd_id": "c", "command": "explode"}', LAMP) == "unknown_command"
    assert (
        code_of(codec.decode_command, b'{"cmd_id": "c", "command": "brightness", "args": {"level": 101}}', LAMP)
        == "out_of_range"
    )
    assert code_of(codec.decode_command, b'{"command": "off"}', LAMP) == "wrong_type"
    assert code_of(codec.decode_command, b'{"cmd_id": "c", "command": "off", "args": [1]}', LAMP) == "wrong_type"
    assert code_of(codec.encode_command, "c", "brightness", {"level": "x"}, type_def=LAMP) == "wrong_type"
    assert code_of(codec.decode_state, b'{"cmd_id": "c"}', LAMP) == "missing_field"
    assert code_of(codec.decode_state, b'{"state": {"on": true}}', LAMP) == "missing_field"
    assert code_of(codec.decode_state, b'{"state": {"on": true, "level": 1}, "error": 5}', LAMP) == "wrong_type"
    assert code_of(codec.decode_presence, b"maybe") == "wrong_type"
    assert code_of(codec.decode_presence, b"\xff") == "undecodable"
    assert code_of(codec.encode_reading, {"ts": 1}) == "unknown_field"


def test_payload_error_is_a_validation_error_with_field():
    err = _bad(b'{"temperature": "x", "count": 1, "label": "a", "ok": true}')
    from aiot.errors import ValidationFailed

    assert isinstance(err, ValidationFailed) and err.details == {"field": "temperature"}
    assert "temperature" in repr(err)


# ------------------------------------------------------------------------------------------- fuzz

_frame_prefix = st.builds(
    lambda body, v, e: codec.FRAME_HEADER.pack(b"AIFR", v, e, 24, 0, 0, 0, len(body)) + body,
    st.binary(max_size=64),
    st.integers(0, 3),
    st.integers(0, 3),
)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=256),
        _frame_prefix,
        st.text(max_size=128).map(str.encode),
        st.dictionaries(
            st.text(max_size=8),
            st.one_of(st.none(), st.booleans(), st.floats(), st.integers(), st.text(max_size=8)),
            max_size=5,
        ).map(lambda d: repr(d).encode()),
    )
)
def test_decoding_arbitrary_bytes_only_raises_payload_error(payload):
    for fn in (
        lambda p: codec.decode_reading(p, TEMP),
        lambda p: codec.decode_reading(p, CAM),
        lambda p: codec.decode_command(p, LAMP),
        lambda p: codec.decode_state(p, LAMP),
        codec.decode_presence,
    ):
        with contextlib.suppress(PayloadError):
            fn(payload)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["ts", "temperature", "count", "label", "ok", "x"]),
        st.one_of(
            st.none(), st.booleans(), st.integers(-(10**20), 10**20), st.floats(allow_nan=True), st.text(max_size=5)
        ),
        max_size=6,
    )
)
def test_decoding_arbitrary_json_objects_only_raises_payload_error(obj):
    import json

    with contextlib.suppress(PayloadError):
        codec.decode_reading(json.dumps(obj).encode(), TEMP)
