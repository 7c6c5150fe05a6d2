"""Device payload codecs under hostile input, beyond tests/bus/test_codec.py: random device types (not just
the fixed ones there), round trips for every message kind, unbounded integers, deep nesting, and mutations
(bit flips, truncations) of valid wire payloads. The contract under test: decoding raises only PayloadError,
and whatever encodes with a type definition decodes with it to the same values."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from aiot.artifacts.manifests import DeviceTypeDefinition
from aiot.bus import codec
from aiot.bus.codec import PayloadError

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True)


@st.composite
def value_spec(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["number", "integer", "string", "boolean"]))
    spec: dict[str, Any] = {"type": kind, "required": draw(st.booleans())}
    if kind in ("number", "integer"):
        lo = draw(st.none() | st.integers(-1000, 1000))
        hi = draw(st.none() | st.integers(-1000, 1000))
        if lo is not None and hi is not None and lo > hi:
            lo, hi = hi, lo
        spec.update({k: v for k, v in (("min", lo), ("max", hi)) if v is not None})
    if kind == "string" and draw(st.booleans()):
        spec["enum"] = draw(st.lists(st.text(max_size=6), min_size=1, max_size=4, unique=True))
    return spec


FIELDS = st.dictionaries(NAMES, value_spec(), min_size=1, max_size=5)


@st.composite
def sensor_type(draw: st.DrawFn) -> DeviceTypeDefinition:
    data = {"name": "fuzz-sensor", "kind": "sensor", "fields": draw(FIELDS)}
    return DeviceTypeDefinition.model_validate(data)


@st.composite
def controller_type(draw: st.DrawFn) -> DeviceTypeDefinition:
    commands = draw(
        st.dictionaries(
            NAMES,
            st.builds(lambda a: {"args": a}, st.dictionaries(NAMES, value_spec(), max_size=3)),
            min_size=1,
            max_size=3,
        )
    )
    return DeviceTypeDefinition.model_validate(
        {"name": "fuzz-ctl", "kind": "controller", "commands": commands, "state": draw(FIELDS)}
    )


def value_for(spec: Any) -> st.SearchStrategy[Any]:
    """Mostly valid values for a field spec, sometimes anything at all (including unbounded integers)."""
    kind = spec.type
    wild = st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5), st.lists(st.integers(), max_size=2)
    )
    if kind == "number":
        lo = spec.min if spec.min is not None else -1e6
        hi = spec.max if spec.max is not None else 1e6
        good = st.floats(lo, hi, allow_nan=False) | st.integers(int(lo), int(hi))
    elif kind == "integer":
        good = st.integers(
            int(spec.min if spec.min is not None else -(10**6)), int(spec.max if spec.max is not None else 10**6)
        )
    elif kind == "string":
        good = st.sampled_from(spec.enum) if spec.enum else st.text(max_size=10)
    else:
        good = st.booleans()
    return st.one_of(good, good, good, wild)


def values_for(fields: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional={name: value_for(spec) for name, spec in fields.items()})


TIMESTAMPS = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC))


@FUZZ
@given(st.data(), sensor_type(), TIMESTAMPS)
def test_random_sensor_types_round_trip_or_refuse_cleanly(
    data: st.DataObject, type_def: DeviceTypeDefinition, ts: datetime
) -> None:
    values = data.draw(values_for(type_def.fields))
    try:
        wire = codec.encode_reading(values, ts, type_def)
    except PayloadError:
        with pytest.raises(PayloadError):  # what the encoder refuses, the decoder refuses too
            codec.decode_reading(json.dumps({**values}, default=str).encode(), type_def)
        return
    decoded = codec.decode_reading(wire, type_def)
    assert isinstance(decoded, codec.Reading)
    assert decoded.values == json.loads(json.dumps(values))
    assert abs(decoded.ts - ts) < timedelta(milliseconds=1)


@FUZZ
@given(st.data(), controller_type())
def test_random_commands_and_states_round_trip(data: st.DataObject, type_def: DeviceTypeDefinition) -> None:
    name = data.draw(st.sampled_from(sorted(type_def.commands)))
    args = data.draw(values_for(type_def.commands[name].args))
    cmd_id = data.draw(st.text(min_size=0, max_size=130))
    try:
        wire = codec.encode_command(cmd_id, name, args, type_def=type_def)
    except PayloadError:
        pass
    else:
        back = codec.decode_command(wire, type_def)
        assert (back.cmd_id, back.command, back.args) == (cmd_id, name, json.loads(json.dumps(args)))
    state = data.draw(values_for(type_def.state))
    try:
        wire = codec.encode_state(state, cmd_id=cmd_id or None, type_def=type_def)
    except PayloadError:
        return
    report = codec.decode_state(wire, type_def)
    assert report.state == json.loads(json.dumps(state)) and report.cmd_id == (cmd_id or None)


@FUZZ
@given(
    st.sampled_from(["jpeg", "png"]),
    st.binary(max_size=200),
    TIMESTAMPS,
    st.integers(1, 0xFFFF),
    st.integers(1, 0xFFFF),
    st.data(),
)
def test_frames_round_trip_and_every_truncation_or_flip_is_a_payload_error(
    encoding: str, body: bytes, ts: datetime, width: int, height: int, data: st.DataObject
) -> None:
    image = {"jpeg": b"\xff\xd8\xff", "png": b"\x89PNG\r\n\x1a\n"}[encoding] + body
    wire = codec.encode_frame(image, encoding, ts=ts, width=width, height=height)
    spec = {"encoding": encoding, "max_bytes": len(image)}
    frame = codec.decode_frame(wire, spec)
    assert (frame.encoding, frame.data, frame.width, frame.height) == (encoding, image, width, height)
    assert frame.to_bytes() == wire
    cut = data.draw(st.integers(0, len(wire) - 1))
    with pytest.raises(PayloadError):
        codec.decode_frame(wire[:cut], spec)
    flipped = bytearray(wire)
    pos = data.draw(st.integers(0, len(wire) - 1))
    flipped[pos] ^= data.draw(st.integers(1, 255))
    try:
        codec.decode_frame(bytes(flipped), spec)
    except PayloadError:
        return
    assert pos >= 8  # magic, version, encoding and header length are always checked


_TEMP = DeviceTypeDefinition.model_validate(
    {
        "name": "tt",
        "kind": "sensor",
        "fields": {"x": {"type": "number", "min": -100, "max": 100}, "n": {"type": "integer", "required": False}},
    }
)
_LAMP = DeviceTypeDefinition.model_validate(
    {
        "name": "ll",
        "kind": "controller",
        "commands": {"set": {"args": {"level": {"type": "integer"}}}},
        "state": {"level": {"type": "integer"}},
    }
)


@FUZZ
@given(st.integers(), st.integers(), st.sampled_from(["ts", "x", "n"]))
def test_unbounded_integers_anywhere_are_payload_errors(big: int, other: int, where: str) -> None:
    """JSON integers have no size limit; a device may send 10**400 as a value or a timestamp."""
    obj: dict[str, Any] = {"x": 1, "n": other}
    obj[where] = big
    for fn in (
        lambda p: codec.decode_reading(p, _TEMP),
        lambda p: codec.decode_command(p, _LAMP),
        lambda p: codec.decode_state(p, _LAMP),
    ):
        payload = json.dumps(
            {**obj, "cmd_id": "c", "command": "set", "args": {"level": big}, "state": {"level": big}}
        ).encode()
        with contextlib.suppress(PayloadError):
            fn(payload)


@pytest.mark.parametrize("digits", [20, 309, 400, 4000])
@pytest.mark.parametrize("where", ["ts", "x", "args", "state"])
def test_huge_integer_literals(digits: int, where: str) -> None:
    big = "9" * digits
    payloads = {
        "ts": f'{{"ts": {big}, "x": 1}}',
        "x": f'{{"x": {big}}}',
        "args": f'{{"cmd_id": "c", "command": "set", "args": {{"level": {big}}}, "ts": {big}}}',
        "state": f'{{"state": {{"level": {big}}}, "ts": -{big}}}',
    }
    fn = {
        "ts": codec.decode_reading,
        "x": codec.decode_reading,
        "args": codec.decode_command,
        "state": codec.decode_state,
    }[where]
    type_def = _TEMP if where in ("ts", "x") else _LAMP
    try:
        fn(payloads[where].encode(), type_def)
    except PayloadError as exc:
        assert exc.message


@pytest.mark.parametrize("depth", [10, 1000, 100_000])
def test_deeply_nested_json_is_a_payload_error(depth: int) -> None:
    for opener, closer in (("[", "]"), ('{"a":', "}")):
        payload = ('{"x": ' + opener * depth + "1" + closer * depth + "}").encode()
        for fn, type_def in ((codec.decode_reading, _TEMP), (codec.decode_command, _LAMP), (codec.decode_state, _LAMP)):
            with pytest.raises(PayloadError):
                fn(payload, type_def)


@FUZZ
@given(st.data(), sensor_type())
def test_bit_flipped_readings_only_raise_payload_error(data: st.DataObject, type_def: DeviceTypeDefinition) -> None:
    values = data.draw(values_for(type_def.fields))
    try:
        wire = bytearray(codec.encode_reading(values, None, type_def))
    except PayloadError:
        assume(False)
        return
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(wire) - 1))
        wire[pos] = data.draw(st.integers(0, 255))
    try:
        reading = codec.decode_reading(bytes(wire), type_def)
    except PayloadError as exc:
        assert exc.code and exc.message
        return
    assert isinstance(reading, codec.Reading)
    assert set(reading.values) <= set(type_def.fields)


# ------------------------------------------------------------------------------ the SDK's copy of the formats
# platform_sdk.wire decodes what apps receive: stored records (already checked by ingest) and, for controllers,
# state messages straight from the device (`aiot.dev.<id>.state`), which nothing checked before. Its callers
# (platform_sdk.devices) catch WireError and ValueError; anything else escapes into the app's NATS callback.

from platform_sdk import wire  # noqa: E402

ANY_TS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=30),
    st.lists(st.integers(), max_size=2),
    TIMESTAMPS.map(lambda t: t.isoformat()),
    st.integers(-(10**20), 10**20),
)
JSONISH = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)


def _sdk_payload(data: st.DataObject, keys: list[str]) -> bytes:
    obj = data.draw(
        st.fixed_dictionaries({}, optional={k: (ANY_TS if k in ("ts", "received_at") else JSONISH) for k in keys})
    )
    return json.dumps(obj, allow_nan=True).encode()


@FUZZ
@given(st.data())
def test_sdk_state_messages_from_devices_raise_only_wire_errors(data: st.DataObject) -> None:
    if data.draw(st.integers(0, 9)) == 0:
        raw = data.draw(st.binary(max_size=60))
    else:
        raw = _sdk_payload(data, ["cmd_id", "state", "ts", "error"])
    try:
        message = wire.decode_state(raw)
    except wire.WireError:
        return
    assert isinstance(message.state, dict)
    assert message.cmd_id is None or isinstance(message.cmd_id, str)
    assert message.ts is None or message.ts.tzinfo is not None


@FUZZ
@given(st.data())
def test_sdk_records_raise_only_wire_errors(data: st.DataObject) -> None:
    raw = _sdk_payload(data, ["device_id", "channel", "ts", "received_at", "values", "cmd_id", "error"])
    try:
        reading = wire.decode_record(raw, "dev_x")
    except wire.WireError:
        return
    assert isinstance(reading.values, dict) and isinstance(reading.device_id, str)
    assert reading.ts.tzinfo is not None


@FUZZ
@given(st.binary(min_size=24, max_size=64), st.integers(-(2**63), 2**63 - 1))
def test_sdk_frames_raise_only_wire_errors(tail: bytes, ts_us: int) -> None:
    header = wire.FRAME_HEADER.pack(wire.FRAME_MAGIC, 1, 1, 24, ts_us, 2, 2, len(tail) - 24)
    for raw in (header + tail[24:], wire.FRAME_MAGIC + tail):
        with contextlib.suppress(wire.WireError):
            wire.decode_record(raw, "dev_x")


def test_sdk_deeply_nested_messages_are_wire_errors() -> None:
    """100 000 levels overflow the JSON parser's recursion: a WireError, not a RecursionError in the app."""
    nested = '{"a":' * 100_000 + "1" + "}" * 100_000
    with pytest.raises(wire.WireError):
        wire.decode_state(f'{{"state": {nested}}}'.encode())
    with pytest.raises(wire.WireError):
        wire.decode_record(f'{{"ts": 1, "values": {nested}}}'.encode(), "dev_x")
