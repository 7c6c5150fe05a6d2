"""Smart classroom: temperature + light readings -> comfort model -> fan, AC and lamp.

Entrypoint "classroom:main". The latest reading of each sensor is kept; whenever one changes (and at most
every `min_interval_s` seconds) the comfort model is asked what the fan, AC and lamp should do, and only the
controllers whose wanted state differs from the last acknowledged one get a command.
"""

from __future__ import annotations

import time

from platform_sdk import controller, get_logger, model_call, on_reading, run, sensor, settings

log = get_logger()
DEVICES = ("fan", "ac", "lamp")
FIELD = {"temperature": "temperature", "light": "illuminance"}
"""Sensor alias -> the value the comfort model needs from its readings."""

latest: dict[str, float] = {}
applied: dict[str, str] = {}
_last_call = 0.0


def decide(force: bool = False) -> None:
    """Ask the model for the wanted actions and switch what differs."""
    global _last_call
    if set(latest) != set(FIELD):
        return
    min_interval = float(settings().get("min_interval_s", 5))
    now = time.monotonic()
    if not force and now - _last_call < min_interval:
        return
    _last_call = now
    actions = model_call("comfort", {"temperature": latest["temperature"], "light": latest["light"]})
    for name in DEVICES:
        wanted = actions.get(name)
        if wanted in ("on", "off") and applied.get(name) != wanted:
            new_state = controller(name).send(wanted)
            applied[name] = wanted
            log.info(
                "%s -> %s (%.1f °C, %.0f lx); state now %s",
                name,
                wanted,
                latest["temperature"],
                latest["light"],
                new_state,
            )


def _remember(alias: str, reading) -> None:
    value = reading.values.get(FIELD[alias])
    if value is None:
        log.warning("reading from %s lacks %r: %s", reading.device_id, FIELD[alias], reading.values)
        return
    latest[alias] = float(value)
    decide()


@on_reading("temperature")
def on_temperature(reading) -> None:
    _remember("temperature", reading)


@on_reading("light")
def on_light(reading) -> None:
    _remember("light", reading)


def main() -> None:
    """Start from the sensors' latest readings (if any), then react to new ones until stopped."""
    for alias, key in FIELD.items():
        reading = sensor(alias).latest()
        if reading is not None and key in reading.values:
            latest[alias] = float(reading.values[key])
    decide(force=True)
    log.info("smart classroom running")
    run()
