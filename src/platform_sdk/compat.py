"""The original platform's SDK functions, mapped on this SDK, so an imported app's code runs unchanged.

`aiot import` converts an original app's `config/sensors.json`, `controllers.json` and `models.json` into
one alias per index: index i of each file becomes the alias `sensor_<i>`, `controller_<i>`, `model_<i>` in
app.json. These functions take the old index and use that alias:

* `get_sensor_data(i)` - the sensor's newest value not yet returned (waits for the next reading when none is
  buffered, as the old Kafka consumer did): the value itself for a one-value sensor, a list in the device
  type's field order for several; `get_sensor_image(i)` - the newest frame's encoded bytes (JPEG/PNG);
  `get_stream_image(i, n)` - the next `n` frames' bytes, a list.
* `send_controller_data(i, *args)` - the converted controller types take one command, `set`, whose arguments
  are the original parameters in order; the positional args map onto them. For one of this platform's own
  controller types, `send_controller_data(i, "on")` sends the command named by a single string. Returns the
  acknowledged state.
* `get_prediction(i, json_dict)` - calls the model and returns its `output` (converted models answer
  `{"output": ...}`; a model of this platform without an `output` field returns its whole outputs dict);
  `get_prediction_using_image(i, image_bytes)` - the same with the image as the model's `image` input.
* `get_logger(name, host_port=None, level=...)` - the platform logger; `host_port` (the old Kafka address)
  is ignored.
* Not provided by this platform, raising `NotProvided` with the reason: `send_email_notification` (apps cannot
  send mail: an app's users get its address by e-mail from the platform itself; use a web page or a
  controller to tell people something) and `get_mongo_db_uri` / `get_mongo_db_database` (no database service
  is given to apps; keep state in files of the app's working folder or an external service you configure).
"""

from __future__ import annotations

import logging
from typing import Any

from platform_sdk.devices import controller, sensor
from platform_sdk.errors import CommandRefused, PlatformError, UnknownAlias
from platform_sdk.logs import get_logger as _platform_logger
from platform_sdk.models import model_call
from platform_sdk.runtime import config
from platform_sdk.wire import Reading

ALIAS_FORMAT = "{kind}_{index}"
"""Index -> alias naming; must match `aiot.artifacts.legacy.app.ALIAS_FORMAT` (a test checks)."""


class NotProvided(PlatformError, NotImplementedError):
    """An original SDK function this platform deliberately does not provide; the message says what to use."""


def alias(kind: str, index: int) -> str:
    """The alias `aiot import` gave index `index` of the original `config/<kind>s.json`."""
    return ALIAS_FORMAT.format(kind=kind, index=index)


def _alias(kind: str, index: Any) -> str:
    if isinstance(index, bool) or not isinstance(index, int):
        raise TypeError(f"{kind} index must be an integer (its position in config/{kind}s.json), got {index!r}")
    name = alias(kind, index)
    cfg = config()
    bound: dict[str, Any] = {"sensor": cfg.sensors, "controller": cfg.controllers, "model": cfg.models}[kind]  # type: ignore[assignment]  # three dict types
    if name not in bound:
        count = sum(1 for a in bound if a.startswith(f"{kind}_"))
        raise (
            UnknownAlias(kind, name, list(bound))
            if count == 0
            else IndexError(
                f"{kind} index {index} is out of range: this app has {count} {kind}(s) (indexes 0..{count - 1} of "
                f"config/{kind}s.json)"
            )
        )
    return name


def _newest(alias_name: str, timeout: float | None) -> Reading:
    """The newest buffered reading of the alias (dropping older ones), else the next one to arrive."""
    s = sensor(alias_name)
    box = s._box()  # noqa: SLF001 - same package; the mailbox is the buffer read() uses
    newest = None
    while True:
        ok, item = box.get(0)
        if not ok:
            break
        newest = item
    return newest if newest is not None else s.read(timeout)


def _value(reading: Reading, device_type: dict[str, Any]) -> Any:
    if reading.frame_bytes is not None:
        return reading.frame_bytes
    order = list((device_type or {}).get("fields") or reading.values)
    if len(order) == 1:
        return reading.values.get(order[0])
    return [reading.values.get(name) for name in order]


def get_sensor_data(sensor_index: int, timeout: float | None = None) -> Any:
    """The sensor's current value: one value, or a list for a several-value sensor (old return shape)."""
    name = _alias("sensor", sensor_index)
    binding = sensor(name).bindings[0]
    return _value(_newest(name, timeout), binding.device_type)


def get_sensor_image(sensor_index: int, timeout: float | None = None) -> bytes:
    """The camera's current frame, encoded (JPEG/PNG bytes), as the old SDK returned it."""
    reading = _newest(_alias("sensor", sensor_index), timeout)
    if reading.frame_bytes is None:
        raise TypeError(f"sensor index {sensor_index} sends values, not images: use get_sensor_data")
    return reading.frame_bytes


def get_stream_image(sensor_index: int, count: int = 1, timeout: float | None = None) -> list[bytes]:
    """The next `count` frames of the camera, encoded, oldest first."""
    s = sensor(_alias("sensor", sensor_index))
    frames: list[bytes] = []
    while len(frames) < count:
        reading = s.read(timeout)
        if reading.frame_bytes is None:
            raise TypeError(f"sensor index {sensor_index} sends values, not images: use get_sensor_data")
        frames.append(reading.frame_bytes)
    return frames


def send_controller_data(controller_index: int, *args: Any) -> Any:
    """Send the old positional data to the controller; returns its acknowledged state."""
    c = controller(_alias("controller", controller_index))
    commands = (c.bindings[0].device_type or {}).get("commands") or {}
    if "set" in commands:
        names = list((commands["set"] or {}).get("args") or {})
        if len(args) != len(names):
            raise CommandRefused(
                c.device_ids[0], "set", f"expected {len(names)} value(s) ({', '.join(names)}), got {len(args)}"
            )
        return c.send("set", args=dict(zip(names, args, strict=True)))
    if len(args) == 1 and isinstance(args[0], str) and args[0] in commands:
        return c.send(args[0])
    raise CommandRefused(
        c.device_ids[0],
        str(args[0]) if args else "",
        "this controller type takes the commands "
        f"{', '.join(sorted(commands))}: send_controller_data(i, '<command>') or use "
        "controller(alias).send(command, **args)",
    )


def _output(outputs: dict[str, Any]) -> Any:
    return outputs["output"] if isinstance(outputs, dict) and "output" in outputs else outputs


def get_prediction(model_index: int, json_obj: Any, timeout: float = 30.0) -> Any:
    """Call the model with the old request (a dict of its input params); returns its `output`."""
    return _output(model_call(_alias("model", model_index), json_obj, timeout))


def get_prediction_using_image(model_index: int, image: bytes, timeout: float = 30.0) -> Any:
    """Call an image model with the encoded image bytes; returns its `output`."""
    return _output(model_call(_alias("model", model_index), {"image": bytes(image)}, timeout))


def get_logger(name: str | None = None, host_port: Any = None, level: int | None = None) -> logging.Logger:
    """The platform logger (records reach the platform's log stream). The old `host_port` is not needed."""
    logger = _platform_logger(name)
    if level is not None:
        logger.setLevel(level)
    return logger


def send_email_notification(email: str, subject: str, body: str) -> None:
    raise NotProvided(
        "send_email_notification is not provided by this platform: apps cannot send e-mail "
        "(the platform mails an app's users its address itself); show the message on the app's "
        "web page or through a controller instead"
    )


def get_mongo_db_uri() -> str:
    raise NotProvided(
        "get_mongo_db_uri is not provided by this platform: no MongoDB is given to apps; keep "
        "state in the app's working folder or use a database you run and configure in settings"
    )


def get_mongo_db_database() -> Any:
    raise NotProvided(
        "get_mongo_db_database is not provided by this platform: no MongoDB is given to apps; "
        "keep state in the app's working folder or use a database you run and configure in settings"
    )


__all__ = [
    "NotProvided",
    "get_mongo_db_database",
    "get_mongo_db_uri",
    "get_prediction",
    "get_prediction_using_image",
    "get_sensor_data",
    "get_sensor_image",
    "get_stream_image",
    "send_controller_data",
    "send_email_notification",
]
