"""The few wire formats the SDK reads and writes, re-implemented from `aiot.bus.codec` and
`aiot.devices.ingest`.

Why a copy: the SDK runs inside workloads and must not import the platform (`aiot`). The formats are small
and frozen (a plain MQTT device can produce them by hand); `tests/sdk/test_wire.py` checks that this module
and the platform's codec agree byte for byte.

* Stored record (what ingest publishes on `aiot.readings.<id>` and keeps as the latest value): either the
  camera frame exactly as the device sent it (24-byte header `>4sBBHqHHI`, magic `AIFR`, then JPEG/PNG), or
  JSON `{"device_id", "channel", "ts", "received_at", "values", "cmd_id", "error"}`.
* Command (to `aiot.dev.<id>.cmd`): `{"cmd_id", "command", "args", "ts"}`.
* State (from `aiot.dev.<id>.state`): `{"cmd_id", "ts", "state", "error"}`.

Images: numpy arrays in the SDK are RGB (HxWx3) or grey (HxW) uint8, like `aiot.bus.codec.Frame.image()`.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

FRAME_MAGIC = b"AIFR"
FRAME_HEADER = struct.Struct(">4sBBHqHHI")
ENCODINGS = {1: "jpeg", 2: "png"}
IMAGE_MAGIC = {"jpeg": b"\xff\xd8\xff", "png": b"\x89PNG\r\n\x1a\n"}


class WireError(ValueError):
    """Bytes that are not a record / state message of the documented format."""


def parse_ts(value: Any) -> datetime:
    """ISO-8601 (naive = UTC, `Z` allowed) or epoch seconds/milliseconds -> aware UTC datetime."""
    if isinstance(value, bool) or value is None:
        raise WireError(f"bad timestamp {value!r}")
    if isinstance(value, int | float):
        try:  # like aiot.bus.codec: an unbounded JSON integer, NaN or a year past 9999 is a bad timestamp
            seconds = value / 1000.0 if abs(value) > 1e11 else float(value)
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise WireError(f"timestamp {repr(value)[:40]} is out of range") from exc
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError as exc:
            raise WireError(f"bad timestamp {value!r}") from exc
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    raise WireError(f"bad timestamp {value!r}")


def iso(ts: datetime | None = None) -> str:
    ts = ts or datetime.now(UTC)
    ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    return ts.isoformat().replace("+00:00", "Z")


def sniff_image(data: bytes) -> str | None:
    for name, magic in IMAGE_MAGIC.items():
        if data[: len(magic)] == magic:
            return name
    return None


@dataclass
class Reading:
    """One validated sensor reading (or controller state record) as delivered to apps.

    `values` holds the named values of JSON sensors (empty for cameras). Camera frames keep their encoded
    image in `frame_bytes` (JPEG/PNG, ready to pass to `model_call`) and decode it to a numpy array only when
    `.image` is first read (RGB HxWx3 or grey HxW, uint8; decoded with OpenCV, else Pillow).
    """

    device_id: str
    ts: datetime
    values: dict[str, Any] = field(default_factory=dict)
    channel: str = "data"
    frame_bytes: bytes | None = None
    encoding: str | None = None
    width: int | None = None
    height: int | None = None
    received_at: datetime | None = None
    cmd_id: str | None = None
    error: str | None = None
    alias: str | None = None
    _image: Any = field(default=None, repr=False, compare=False)

    @property
    def is_frame(self) -> bool:
        return self.frame_bytes is not None

    @property
    def image(self) -> Any:
        """The frame's pixels (numpy, RGB); None for JSON readings. Decoded once, on first access."""
        if self.frame_bytes is None:
            return None
        if self._image is None:
            self._image = decode_image(self.frame_bytes)
        return self._image


def decode_frame(data: bytes) -> tuple[str, datetime, bytes, int | None, int | None]:
    """(encoding, ts, image bytes, width, height) of a frame; WireError when the header is inconsistent."""
    if len(data) < FRAME_HEADER.size or data[:4] != FRAME_MAGIC:
        raise WireError("not a frame")
    _m, version, enc, header_len, ts_us, width, height, data_len = FRAME_HEADER.unpack_from(data)
    if version != 1 or header_len < FRAME_HEADER.size or header_len > len(data) or enc not in ENCODINGS:
        raise WireError(f"bad frame header (version {version}, encoding {enc}, header_len {header_len})")
    image = bytes(data[header_len:])
    if len(image) != data_len:
        raise WireError(f"frame declares {data_len} bytes but carries {len(image)}")
    try:
        ts = datetime.fromtimestamp(ts_us / 1_000_000, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise WireError(f"frame timestamp {ts_us} is out of range") from exc
    return (
        ENCODINGS[enc],
        ts,
        image,
        width or None,
        height or None,
    )


def decode_record(data: bytes, device_id: str) -> Reading:
    """A stored record (stream message or latest value) -> Reading. WireError on anything else."""
    data = bytes(data)
    if data[:4] == FRAME_MAGIC:
        enc, ts, image, w, h = decode_frame(data)
        return Reading(device_id=device_id, ts=ts, frame_bytes=image, encoding=enc, width=w, height=h)
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise WireError(f"record from {device_id} is neither a frame nor JSON") from exc
    if not isinstance(obj, dict) or "ts" not in obj:
        raise WireError(f"record from {device_id} lacks 'ts'")
    if not isinstance(obj.get("values") or {}, dict):
        raise WireError(f"record from {device_id}: 'values' must be an object")
    _check_text(obj, ("device_id", "channel", "cmd_id", "error"))
    return Reading(
        device_id=obj.get("device_id") or device_id,
        ts=parse_ts(obj["ts"]),
        values=obj.get("values") or {},
        channel=obj.get("channel") or "data",
        received_at=parse_ts(obj["received_at"]) if obj.get("received_at") else None,
        cmd_id=obj.get("cmd_id"),
        error=obj.get("error"),
    )


def encode_command(cmd_id: str, command: str, args: dict[str, Any], ts: datetime | None = None) -> bytes:
    return json.dumps(
        {"cmd_id": cmd_id, "command": command, "args": args, "ts": iso(ts)},
        separators=(",", ":"),
        allow_nan=False,
    ).encode()


def _check_text(obj: dict[str, Any], keys: tuple[str, ...]) -> None:
    for key in keys:
        if obj.get(key) is not None and not isinstance(obj[key], str):
            raise WireError(f"'{key}' must be text, got {type(obj[key]).__name__}")


@dataclass(frozen=True)
class StateMessage:
    cmd_id: str | None
    state: dict[str, Any]
    error: str | None
    ts: datetime | None


def decode_state(data: bytes) -> StateMessage:
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise WireError("state message is not JSON") from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("state"), dict):
        raise WireError("state message needs a 'state' object")
    _check_text(obj, ("cmd_id",))  # a device sends these: an unhashable cmd_id would break the waiter lookup
    error = obj.get("error")
    return StateMessage(
        cmd_id=obj.get("cmd_id"),
        state=obj["state"],
        error=None if error is None else str(error),
        ts=parse_ts(obj["ts"]) if obj.get("ts") is not None else None,
    )


# ------------------------------------------------------------------------------------------------- images


def decode_image(data: bytes) -> Any:
    """JPEG/PNG bytes -> numpy uint8 array, RGB (or grey). OpenCV when importable, else Pillow."""
    import numpy as np

    try:
        import cv2
    except ImportError:
        cv2 = None  # type: ignore[assignment]  # optional: Pillow below
    if cv2 is not None:
        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise WireError("image bytes could not be decoded")
        if img.ndim == 3 and img.shape[2] == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        elif img.ndim == 3 and img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
        return img
    import io

    try:
        from PIL import Image
    except ImportError as exc:
        raise WireError("decoding images needs opencv-python-headless or Pillow in requirements.txt") from exc
    try:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("RGB") if im.mode not in ("L", "RGB") else im
            return np.asarray(im)
    except OSError as exc:
        raise WireError(f"image bytes could not be decoded: {exc}") from exc


def encode_image(array: Any, fmt: str = "png") -> bytes:
    """numpy RGB/grey uint8 array -> PNG (lossless, default) or JPEG bytes, for image inputs of models."""
    import numpy as np

    arr = np.ascontiguousarray(array)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3):
        raise ValueError(f"an image must be an HxW or HxWx3 uint8 array, got {arr.dtype} {arr.shape}")
    try:
        import cv2
    except ImportError:
        cv2 = None  # type: ignore[assignment]  # optional: Pillow below
    if cv2 is not None:
        if arr.ndim == 3 and arr.shape[2] == 3:
            arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
        ok, buf = cv2.imencode(".png" if fmt == "png" else ".jpg", arr)
        if not ok:
            raise ValueError("OpenCV could not encode the image")
        return buf.tobytes()
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(arr).save(out, format="PNG" if fmt == "png" else "JPEG")
    return out.getvalue()
