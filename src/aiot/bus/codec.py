"""Wire formats of device messages: JSON readings, binary image frames, commands, state and presence.

Why one module: devices, ingest, the SDK and tests must agree byte for byte, and a plain MQTT device (no
platform code) must be able to produce every message by hand. So the formats are deliberately small:

* **Reading** (sensor -> `aiot.dev.<id>.data`): a JSON object `{"ts": <optional>, "<field>": <value>, ...}`.
  `ts` is ISO-8601 (naive means UTC) or Unix epoch seconds (values above 1e11 are taken as milliseconds);
  missing means "when it was received".
* **Frame** (camera -> `aiot.dev.<id>.data`): a 24-byte header followed by the JPEG/PNG file bytes. Layout
  (big-endian) in `FRAME_HEADER`, described byte by byte in `docs/devices.md`.
* **Command** (platform -> `aiot.dev.<id>.cmd`): `{"cmd_id": str, "command": str, "args": {...}, "ts": ...}`.
* **State** (controller -> `aiot.dev.<id>.state`): `{"cmd_id": str|null, "ts": ..., "state": {...},
  "error": str|null}`. Publishing its new state with the command's `cmd_id` is how a controller acknowledges.
* **Presence** (`aiot.dev.<id>.presence`): the bare text `online` or `offline`.

Every decoding failure raises `PayloadError(code, message, field)` and nothing else, so a consumer needs one
`except` to survive any bytes a device sends. Decoded images stay bytes until `Frame.image()` is called:
ingest validates and stores frames without paying for pixel decoding.

Validation reads the device type by attribute (`fields`, `frame`, `commands`, `state`; each field having
`type`, optional `min`/`max`/`enum`, and `required` defaulting to true) so it takes
`aiot.artifacts.manifests.DeviceTypeDefinition` and equally a plain dict of the same JSON shape (handy for
tests and for the device type JSON files before they are parsed).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from aiot.errors import ValidationFailed

if TYPE_CHECKING:  # numpy is imported lazily by Frame.image()
    import numpy as np

__all__ = [
    "FRAME_HEADER",
    "FRAME_MAGIC",
    "FRAME_VERSION",
    "Command",
    "Frame",
    "PayloadError",
    "Reading",
    "StateReport",
    "decode_command",
    "decode_frame",
    "decode_presence",
    "decode_reading",
    "decode_state",
    "encode_command",
    "encode_frame",
    "encode_presence",
    "encode_reading",
    "encode_state",
    "is_frame",
    "parse_timestamp",
    "validate_values",
]

# ---------------------------------------------------------------------------------------------- errors


class PayloadError(ValidationFailed):
    """A device message that cannot be accepted. `code` is a stable machine-readable reason (used as the
    metric label by ingest), `field` names the offending field when there is one."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.code = code
        self.field = field

    def __repr__(self) -> str:
        return f"PayloadError({self.code!r}, {self.message!r}, field={self.field!r})"


# Reason codes (also the `reason` label values of ingest's bad-reading counter).
UNDECODABLE = "undecodable"  # not UTF-8 / not JSON / not a frame
NOT_AN_OBJECT = "not_an_object"
MISSING_FIELD = "missing_field"
UNKNOWN_FIELD = "unknown_field"
WRONG_TYPE = "wrong_type"
OUT_OF_RANGE = "out_of_range"
BAD_TIMESTAMP = "bad_timestamp"
BAD_HEADER = "bad_header"
ENCODING_MISMATCH = "encoding_mismatch"
OVERSIZED = "oversized"
UNKNOWN_COMMAND = "unknown_command"
BAD_IMAGE = "bad_image"
NOT_SUPPORTED = "not_supported"  # e.g. a frame sent by a type that declares JSON fields

# ---------------------------------------------------------------------------------------------- type shape


def spec_attr(obj: Any, name: str, default: Any = None) -> Any:
    """Read `name` from a Pydantic model, a dataclass or a plain dict (tests and JSON specs use dicts)."""
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


# ---------------------------------------------------------------------------------------------- time


def parse_timestamp(value: Any, *, field_name: str = "ts") -> datetime:
    """ISO-8601 string or epoch seconds/milliseconds -> aware UTC datetime, else PayloadError."""
    if isinstance(value, bool) or value is None:
        raise PayloadError(BAD_TIMESTAMP, f"{field_name} must be ISO-8601 text or epoch seconds", field_name)
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise PayloadError(BAD_TIMESTAMP, f"{field_name} is not a finite number", field_name)
        try:  # an unbounded JSON integer overflows the float conversion itself
            seconds = value / 1000.0 if abs(value) > 1e11 else float(value)
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise PayloadError(BAD_TIMESTAMP, f"{field_name} {repr(value)[:40]} is out of range", field_name) from exc
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError as exc:
            raise PayloadError(
                BAD_TIMESTAMP, f"{field_name} {value!r} is not ISO-8601 (e.g. 2024-05-01T12:00:00Z)", field_name
            ) from exc
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    raise PayloadError(BAD_TIMESTAMP, f"{field_name} must be ISO-8601 text or epoch seconds", field_name)


def _iso(ts: datetime) -> str:
    ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    return ts.isoformat().replace("+00:00", "Z")


def _now() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------------------------------------- values


def _check_value(name: str, spec: Any, value: Any) -> Any:
    """One field value against its spec: returns the normalised value or raises PayloadError."""
    kind = spec_attr(spec, "type", "number")
    kind = getattr(kind, "value", kind)  # tolerate Enum members
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PayloadError(WRONG_TYPE, f"field {name!r} must be a number, got {type(value).__name__}", name)
        try:
            finite = math.isfinite(value)
        except OverflowError:  # an integer literal beyond the float range (JSON sets no size limit)
            raise PayloadError(OUT_OF_RANGE, f"field {name!r} is too large for a number", name) from None
        if not finite:
            raise PayloadError(WRONG_TYPE, f"field {name!r} must be a finite number", name)
    elif kind == "integer":
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise PayloadError(WRONG_TYPE, f"field {name!r} must be an integer, got {value!r}", name)
    elif kind == "string":
        if not isinstance(value, str):
            raise PayloadError(WRONG_TYPE, f"field {name!r} must be a string, got {type(value).__name__}", name)
        allowed = spec_attr(spec, "enum")
        if allowed and value not in allowed:
            raise PayloadError(OUT_OF_RANGE, f"field {name!r} = {value!r} is not one of {list(allowed)}", name)
    elif kind == "boolean":
        if not isinstance(value, bool):
            raise PayloadError(WRONG_TYPE, f"field {name!r} must be true or false, got {value!r}", name)
    else:
        raise PayloadError(NOT_SUPPORTED, f"field {name!r} has unsupported type {kind!r} in its definition", name)
    if kind in ("number", "integer"):
        lo, hi = spec_attr(spec, "min"), spec_attr(spec, "max")
        if lo is not None and value < lo:
            raise PayloadError(OUT_OF_RANGE, f"field {name!r} = {value} is below its minimum {lo}", name)
        if hi is not None and value > hi:
            raise PayloadError(OUT_OF_RANGE, f"field {name!r} = {value} is above its maximum {hi}", name)
    return value


def validate_values(
    values: Mapping[str, Any], fields: Mapping[str, Any] | None, *, partial: bool = False, where: str = ""
) -> dict[str, Any]:
    """Check `values` against a field map: every field's type and range, required fields present (unless
    `partial`), no unknown fields (a typo in a plain device's firmware should be loud, not silently dropped)."""
    fields = fields or {}
    prefix = f"{where}." if where else ""
    out: dict[str, Any] = {}
    for name, value in values.items():
        spec = fields.get(name)
        if spec is None:
            known = ", ".join(sorted(fields)) or "none"
            raise PayloadError(UNKNOWN_FIELD, f"unknown field {prefix}{name!r} (known: {known})", prefix + name)
        out[name] = _check_value(prefix + name, spec, value)
    if not partial:
        for name, spec in fields.items():
            if name not in values and spec_attr(spec, "required", True):
                raise PayloadError(MISSING_FIELD, f"required field {prefix}{name!r} is missing", prefix + name)
    return out


def _loads_object(payload: bytes | str, what: str) -> dict[str, Any]:
    if isinstance(payload, bytes | bytearray | memoryview):
        try:
            payload = bytes(payload).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PayloadError(UNDECODABLE, f"{what} is not UTF-8 text") from exc

    def _reject_constant(name: str) -> Any:
        raise PayloadError(UNDECODABLE, f"{what} contains {name}, which is not JSON")

    try:
        obj = json.loads(payload, parse_constant=_reject_constant)
    except PayloadError:
        raise
    except (ValueError, RecursionError) as exc:
        raise PayloadError(UNDECODABLE, f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise PayloadError(NOT_AN_OBJECT, f"{what} must be a JSON object, got {type(obj).__name__}")
    return obj


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


# ---------------------------------------------------------------------------------------------- readings


@dataclass(frozen=True, slots=True)
class Reading:
    """A validated JSON sensor reading."""

    ts: datetime
    values: dict[str, Any]


def encode_reading(values: Mapping[str, Any], ts: datetime | None = None, type_def: Any = None) -> bytes:
    """JSON bytes of one reading; validated first when `type_def` is given (so devices fail early)."""
    if "ts" in values:
        raise PayloadError(UNKNOWN_FIELD, "'ts' is reserved for the timestamp; pass it as ts=", "ts")
    if type_def is not None:
        values = validate_values(values, spec_attr(type_def, "fields"))
    body: dict[str, Any] = {"ts": _iso(ts or _now())}
    body.update(values)
    try:
        return _dumps(body)
    except (TypeError, ValueError) as exc:
        raise PayloadError(WRONG_TYPE, f"reading cannot be encoded as JSON: {exc}") from exc


def decode_reading(payload: bytes, type_def: Any, *, now: datetime | None = None) -> Reading | Frame:
    """Decode a sensor message for `type_def`: a `Frame` for frame sensors, else a validated `Reading`."""
    frame_spec = spec_attr(type_def, "frame")
    if frame_spec is not None:
        return decode_frame(payload, frame_spec)
    if is_frame(payload):
        raise PayloadError(NOT_SUPPORTED, f"device type {spec_attr(type_def, 'name')!r} sends JSON, got a frame")
    obj = _loads_object(payload, "reading")
    raw_ts = obj.pop("ts", None)
    ts = parse_timestamp(raw_ts) if raw_ts is not None else (now or _now())
    return Reading(ts=ts, values=validate_values(obj, spec_attr(type_def, "fields")))


# ---------------------------------------------------------------------------------------------- frames

FRAME_MAGIC = b"AIFR"
FRAME_VERSION = 1
# magic(4s) version(B) encoding(B) header_len(H) ts_us(q) width(H) height(H) data_len(I)  -> 24 bytes
FRAME_HEADER = struct.Struct(">4sBBHqHHI")
ENCODING_CODES: dict[str, int] = {"jpeg": 1, "png": 2}
_ENCODING_NAMES = {v: k for k, v in ENCODING_CODES.items()}
_IMAGE_MAGIC: dict[str, bytes] = {"jpeg": b"\xff\xd8\xff", "png": b"\x89PNG\r\n\x1a\n"}


def sniff_image_encoding(data: bytes) -> str | None:
    """'jpeg' / 'png' from the image's own magic bytes, None when neither."""
    for name, magic in _IMAGE_MAGIC.items():
        if data[: len(magic)] == magic:
            return name
    return None


def is_frame(payload: bytes) -> bool:
    """True when `payload` starts with the frame magic (cheap: how stored records are told apart)."""
    return bytes(payload[:4]) == FRAME_MAGIC


@dataclass(frozen=True, slots=True)
class Frame:
    """A validated image frame. `data` is the JPEG/PNG file; pixels are decoded only by `image()`."""

    encoding: Literal["jpeg", "png"]
    ts: datetime
    data: bytes
    width: int | None = None
    height: int | None = None
    _cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def image(self) -> np.ndarray:
        """Pixels as an RGB (or grey) uint8 array HxWx3 (HxW); decoded once, on first call."""
        if "img" not in self._cache:
            self._cache["img"] = _decode_image(self.data)
        img: np.ndarray = self._cache["img"]
        return img

    def to_bytes(self) -> bytes:
        """The wire form (header + data) again; byte-identical to what `encode_frame` produced."""
        return encode_frame(self.data, self.encoding, ts=self.ts, width=self.width, height=self.height)


def _decode_image(data: bytes) -> np.ndarray:
    import numpy as np

    try:
        import cv2
    except ImportError:  # Pillow fallback keeps the codec usable without OpenCV
        cv2 = None  # type: ignore[assignment]  # optional: Pillow below
    if cv2 is not None:
        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise PayloadError(BAD_IMAGE, "image bytes could not be decoded")
        if img.ndim == 3 and img.shape[2] == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        elif img.ndim == 3 and img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
        return img
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("RGB") if im.mode not in ("L", "RGB") else im
            return np.asarray(im)
    except (UnidentifiedImageError, OSError) as exc:
        raise PayloadError(BAD_IMAGE, f"image bytes could not be decoded: {exc}") from exc


def encode_frame(
    data: bytes,
    encoding: str,
    *,
    ts: datetime | None = None,
    width: int | None = None,
    height: int | None = None,
) -> bytes:
    """Header + image bytes. Refuses data whose own magic disagrees with `encoding`."""
    if encoding not in ENCODING_CODES:
        raise PayloadError(NOT_SUPPORTED, f"frame encoding must be one of {sorted(ENCODING_CODES)}", "encoding")
    if sniff_image_encoding(data) != encoding:
        raise PayloadError(ENCODING_MISMATCH, f"image data is not {encoding}", "encoding")
    for name, dim in (("width", width), ("height", height)):
        if dim is not None and not 0 < dim <= 0xFFFF:
            raise PayloadError(OUT_OF_RANGE, f"{name} must be 1..65535", name)
    stamp = ts or _now()
    stamp = stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp
    ts_us = round(stamp.timestamp() * 1_000_000)
    header = FRAME_HEADER.pack(
        FRAME_MAGIC,
        FRAME_VERSION,
        ENCODING_CODES[encoding],
        FRAME_HEADER.size,
        ts_us,
        width or 0,
        height or 0,
        len(data),
    )
    return header + bytes(data)


def decode_frame(payload: bytes, frame_spec: Any = None) -> Frame:
    """Parse and check a frame: header sane, declared length exact, image magic agrees with the declared
    encoding (and with the type's `frame.encoding` when a spec is given), data within `frame.max_bytes`."""
    payload = bytes(payload)
    if len(payload) < FRAME_HEADER.size or not is_frame(payload):
        raise PayloadError(UNDECODABLE, f"not a frame (expected magic {FRAME_MAGIC!r} and a 24-byte header)")
    _magic, version, enc_code, header_len, ts_us, width, height, data_len = FRAME_HEADER.unpack_from(payload)
    if version != FRAME_VERSION:
        raise PayloadError(
            BAD_HEADER, f"frame version {version} is not supported (expected {FRAME_VERSION})", "version"
        )
    if header_len < FRAME_HEADER.size or header_len > len(payload):
        raise PayloadError(BAD_HEADER, f"frame header length {header_len} is invalid", "header_len")
    encoding = _ENCODING_NAMES.get(enc_code)
    if encoding is None:
        raise PayloadError(BAD_HEADER, f"frame encoding code {enc_code} is unknown (1=jpeg, 2=png)", "encoding")
    data = payload[header_len:]
    if data_len != len(data):
        raise PayloadError(BAD_HEADER, f"frame declares {data_len} data bytes but carries {len(data)}", "data_len")
    if frame_spec is not None:
        max_bytes = spec_attr(frame_spec, "max_bytes")
        if max_bytes is not None and len(data) > max_bytes:
            raise PayloadError(OVERSIZED, f"frame has {len(data)} bytes, more than max_bytes {max_bytes}", "data")
        expected = spec_attr(frame_spec, "encoding")
        expected = getattr(expected, "value", expected)
        if expected is not None and expected != encoding:
            raise PayloadError(
                ENCODING_MISMATCH, f"frame is {encoding} but the device type sends {expected}", "encoding"
            )
    if sniff_image_encoding(data) != encoding:
        raise PayloadError(ENCODING_MISMATCH, f"frame declares {encoding} but its data is not {encoding}", "encoding")
    try:
        ts = datetime.fromtimestamp(ts_us / 1_000_000, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise PayloadError(BAD_TIMESTAMP, f"frame timestamp {ts_us} is out of range", "ts") from exc
    return Frame(encoding=encoding, ts=ts, data=data, width=width or None, height=height or None)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True)
class Command:
    cmd_id: str
    command: str
    args: dict[str, Any]
    ts: datetime


def _commands_of(type_def: Any) -> Mapping[str, Any]:
    return spec_attr(type_def, "commands") or {}


def _command_fields(spec: Any) -> Mapping[str, Any]:
    """A command spec may be the args map itself or an object with an `args` map."""
    if spec is None:
        return {}
    args: Mapping[str, Any] | None = spec_attr(spec, "args")
    if args is not None:
        return args
    if isinstance(spec, Mapping) and set(spec) <= {"description", "args"}:
        return {}  # a CommandSpec written as a plain dict, with no arguments
    return spec if isinstance(spec, Mapping) else {}


def _check_cmd_id(cmd_id: Any) -> str:
    if not isinstance(cmd_id, str) or not 0 < len(cmd_id) <= 128:
        raise PayloadError(WRONG_TYPE, "cmd_id must be a non-empty string of at most 128 characters", "cmd_id")
    return cmd_id


def encode_command(
    cmd_id: str,
    command: str,
    args: Mapping[str, Any] | None = None,
    *,
    type_def: Any = None,
    ts: datetime | None = None,
) -> bytes:
    """JSON bytes of a command; validated against the type's command list when `type_def` is given."""
    _check_cmd_id(cmd_id)
    args = dict(args or {})
    if type_def is not None:
        args = _validate_command(command, args, type_def)
    return _dumps({"cmd_id": cmd_id, "command": command, "args": args, "ts": _iso(ts or _now())})


def _validate_command(command: Any, args: Any, type_def: Any) -> dict[str, Any]:
    commands = _commands_of(type_def)
    if not isinstance(command, str) or command not in commands:
        known = ", ".join(sorted(commands)) or "none"
        raise PayloadError(UNKNOWN_COMMAND, f"unknown command {command!r} (known: {known})", "command")
    if not isinstance(args, Mapping):
        raise PayloadError(WRONG_TYPE, "args must be a JSON object", "args")
    return validate_values(args, _command_fields(commands[command]), where="args")


def decode_command(payload: bytes, type_def: Any = None, *, now: datetime | None = None) -> Command:
    obj = _loads_object(payload, "command")
    cmd_id = _check_cmd_id(obj.get("cmd_id"))
    command = obj.get("command")
    if not isinstance(command, str) or not command:
        raise PayloadError(MISSING_FIELD, "command must name the command to run", "command")
    args = obj.get("args") or {}
    if not isinstance(args, dict):
        raise PayloadError(WRONG_TYPE, "args must be a JSON object", "args")
    if type_def is not None:
        args = _validate_command(command, args, type_def)
    ts = parse_timestamp(obj["ts"]) if obj.get("ts") is not None else (now or _now())
    return Command(cmd_id=cmd_id, command=command, args=args, ts=ts)


# ---------------------------------------------------------------------------------------------- state


@dataclass(frozen=True, slots=True)
class StateReport:
    """A controller's (validated) state; `cmd_id` set when it acknowledges a command, `error` when the
    controller refused or failed that command."""

    ts: datetime
    state: dict[str, Any]
    cmd_id: str | None = None
    error: str | None = None


def encode_state(
    state: Mapping[str, Any],
    *,
    cmd_id: str | None = None,
    error: str | None = None,
    type_def: Any = None,
    ts: datetime | None = None,
) -> bytes:
    if cmd_id is not None:
        _check_cmd_id(cmd_id)
    if type_def is not None:
        state = validate_values(state, spec_attr(type_def, "state"), where="state")
    return _dumps({"cmd_id": cmd_id, "ts": _iso(ts or _now()), "state": dict(state), "error": error})


def decode_state(payload: bytes, type_def: Any = None, *, now: datetime | None = None) -> StateReport:
    obj = _loads_object(payload, "state message")
    cmd_id = obj.get("cmd_id")
    if cmd_id is not None:
        _check_cmd_id(cmd_id)
    state = obj.get("state")
    if not isinstance(state, dict):
        raise PayloadError(MISSING_FIELD, "state message needs a 'state' object", "state")
    if type_def is not None:
        state = validate_values(state, spec_attr(type_def, "state"), where="state")
    error = obj.get("error")
    if error is not None and not isinstance(error, str):
        raise PayloadError(WRONG_TYPE, "error must be a string or null", "error")
    ts = parse_timestamp(obj["ts"]) if obj.get("ts") is not None else (now or _now())
    return StateReport(ts=ts, state=state, cmd_id=cmd_id, error=error)


# ---------------------------------------------------------------------------------------------- presence

PRESENCE_VALUES = ("online", "offline")


def encode_presence(online: bool) -> bytes:
    return b"online" if online else b"offline"


def decode_presence(payload: bytes) -> Literal["online", "offline"]:
    try:
        text = bytes(payload).decode("ascii").strip().lower()
    except UnicodeDecodeError as exc:
        raise PayloadError(UNDECODABLE, "presence must be the text 'online' or 'offline'") from exc
    if text not in PRESENCE_VALUES:
        raise PayloadError(WRONG_TYPE, f"presence must be 'online' or 'offline', got {text[:32]!r}", "presence")
    return text  # type: ignore[return-value]
