"""The SDK's copy of the wire formats must agree with the platform's codec and ingest, byte for byte."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiot.bus import codec
from aiot.devices import ingest
from platform_sdk import wire

from .harness import device_type


def _jpeg(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _stored_json(device_id: str, channel: str, values: dict, **extra: object) -> bytes:
    """A JSON record exactly as ingest stores it (see Ingest._store)."""
    body = {
        "device_id": device_id,
        "channel": channel,
        "ts": "2026-03-01T10:00:00.250000Z",
        "received_at": "2026-03-01T10:00:00.300000Z",
        "values": values,
        **extra,
    }
    return json.dumps(body, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    "record",
    [
        _stored_json("dev_t1", "data", {"temperature": 21.5, "humidity": 40}),
        _stored_json("dev_c1", "state", {"power": True}, cmd_id="cmd_x", error=None),
        _stored_json("dev_c1", "state", {"power": False}, cmd_id="cmd_y", error="jammed"),
    ],
)
def test_json_records_agree_with_ingest(record: bytes) -> None:
    mine = wire.decode_record(record, "dev_other")
    theirs = ingest.decode_record(record, "dev_other")
    assert (
        mine.device_id,
        mine.channel,
        mine.ts,
        mine.values,
        mine.received_at,
        mine.cmd_id,
        mine.error,
    ) == (
        theirs.device_id,
        theirs.channel,
        theirs.ts,
        theirs.values,
        theirs.received_at,
        theirs.cmd_id,
        theirs.error,
    )
    assert not mine.is_frame and mine.image is None


def test_frames_agree_with_codec() -> None:
    rgb = np.zeros((48, 64, 3), dtype=np.uint8)
    rgb[:, :32, 0] = 255  # left half red: catches a BGR/RGB mix-up
    rgb[:, 32:, 2] = 200
    ts = datetime(2026, 3, 1, 10, 0, 0, 123456, tzinfo=UTC)
    frame = codec.encode_frame(_jpeg(rgb), "jpeg", ts=ts, width=64, height=48)
    mine = wire.decode_record(frame, "dev_cam")
    theirs = ingest.decode_record(frame, "dev_cam")
    assert mine.is_frame and mine.frame_bytes == theirs.frame.data
    assert (mine.ts, mine.width, mine.height, mine.encoding) == (theirs.ts, 64, 48, "jpeg")
    np.testing.assert_array_equal(mine.image, theirs.frame.image())
    assert mine.image.shape == (48, 64, 3) and mine.image[10, 5, 0] > 200 and mine.image[10, 5, 2] < 60


def test_png_roundtrip_of_numpy_images() -> None:
    rgb = (np.arange(30 * 20 * 3) % 251).astype(np.uint8).reshape(30, 20, 3)
    png = wire.encode_image(rgb)
    assert wire.sniff_image(png) == "png"
    np.testing.assert_array_equal(codec.decode_frame(codec.encode_frame(png, "png")).image(), rgb)
    np.testing.assert_array_equal(wire.decode_image(png), rgb)


def test_bad_frames_are_wire_errors() -> None:
    frame = codec.encode_frame(_jpeg(np.zeros((8, 8, 3), np.uint8)), "jpeg")
    with pytest.raises(wire.WireError):
        wire.decode_record(frame[:-3], "dev_x")  # truncated: length disagrees with the header
    with pytest.raises(wire.WireError):
        wire.decode_record(b"\x00garbage", "dev_x")


def test_commands_and_state_agree_with_codec() -> None:
    fan = device_type("fan")
    payload = wire.encode_command("cmd_abc", "set_speed", {"speed": 2})
    cmd = codec.decode_command(payload, fan)  # validated by the platform's codec
    assert (cmd.cmd_id, cmd.command, cmd.args) == ("cmd_abc", "set_speed", {"speed": 2})
    state = wire.decode_state(codec.encode_state({"power": True, "speed": 2}, cmd_id="cmd_abc", type_def=fan))
    assert (state.cmd_id, state.state, state.error) == ("cmd_abc", {"power": True, "speed": 2}, None)
    refused = wire.decode_state(codec.encode_state({"power": False, "speed": 0}, cmd_id="cmd_1", error="no"))
    assert refused.error == "no"


@given(
    st.one_of(
        st.floats(min_value=0, max_value=4e12, allow_nan=False),
        st.integers(min_value=0, max_value=4_000_000_000_000),
        st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1)).map(lambda d: d.isoformat()),
        st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)).map(
            lambda d: d.isoformat().replace("+00:00", "Z")
        ),
    )
)
def test_timestamps_agree_with_codec(value: object) -> None:
    assert abs(wire.parse_ts(value) - codec.parse_timestamp(value)) < timedelta(microseconds=2)


def test_command_checks_match_the_codec() -> None:
    from aiot.artifacts.manifests import DeviceTypeDefinition
    from platform_sdk.devices import check_command

    fan = device_type("fan")
    # the parsed model: codec reads a plain-dict command spec without "args" as the args map itself
    fan_model = DeviceTypeDefinition.model_validate(fan)
    for command, args in (
        ("on", {}),
        ("set_speed", {"speed": 3}),
        ("set_speed", {"speed": 4}),
        ("set_speed", {}),
        ("set_speed", {"speed": 1.5}),
        ("spin", {}),
        ("on", {"x": 1}),
        ("set_speed", {"speed": True}),
    ):
        mine = check_command(fan, command, args)
        try:
            codec.encode_command("cmd_1", command, args, type_def=fan_model)
            theirs = None
        except codec.PayloadError as exc:
            theirs = exc.message
        assert (mine is None) == (theirs is None), (command, args, mine, theirs)
