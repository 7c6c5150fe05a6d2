"""Controller simulators: obey commands and report their full new state with the command's `cmd_id` (the
acknowledgement the SDK waits for). A command that fails validation is acknowledged with `error` set and the
state unchanged, so a caller learns why instead of timing out. Commands and state follow the sample device
types (`SIM_TYPES`): `on`/`off` switch `power`; fan `set_speed`, AC `set_target`, display `show`/`clear`,
alarm `on` with an optional `reason`.
"""

from __future__ import annotations

import json
from typing import Any

from aiot.bus import codec
from aiot.bus.codec import PayloadError

from .types import SIM_TYPES


class ControllerSim:
    type_name = ""
    initial: dict[str, Any] = {}

    def __init__(self, device_id: str, **_: object) -> None:
        self.device_id = device_id
        self.state: dict[str, Any] = dict(self.initial)
        self.type_def = SIM_TYPES[self.type_name]
        self.history: list[codec.Command] = []

    def apply(self, command: str, args: dict[str, Any]) -> None:
        """Change `self.state` for a validated command; subclasses add their own commands."""
        if command in ("on", "off"):
            self.state["power"] = command == "on"
        else:  # pragma: no cover - every declared command is handled by a subclass
            raise PayloadError(codec.UNKNOWN_COMMAND, f"{command} not implemented", "command")

    def handle(self, payload: bytes) -> bytes | None:
        """Raw command bytes -> state message bytes to publish (None when the message has no usable cmd_id)."""
        try:
            cmd = codec.decode_command(payload, self.type_def)
        except PayloadError as exc:
            cmd_id = _salvage_cmd_id(payload)
            if cmd_id is None:
                return None
            return codec.encode_state(self.state, cmd_id=cmd_id, error=f"{exc.code}: {exc.message}")
        self.history.append(cmd)
        self.apply(cmd.command, cmd.args)
        return codec.encode_state(self.state, cmd_id=cmd.cmd_id, type_def=self.type_def)

    def report(self) -> bytes:
        """The current state without a cmd_id (sent at start-up)."""
        return codec.encode_state(self.state, type_def=self.type_def)


def _salvage_cmd_id(payload: bytes) -> str | None:
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    cmd_id = obj.get("cmd_id") if isinstance(obj, dict) else None
    return cmd_id if isinstance(cmd_id, str) and 0 < len(cmd_id) <= 128 else None


class FanSim(ControllerSim):
    type_name = "fan"
    initial = {"power": False, "speed": 0}

    def __init__(self, device_id: str, **kw: object) -> None:
        super().__init__(device_id, **kw)
        self._last_speed = 1

    def apply(self, command: str, args: dict[str, Any]) -> None:
        if command == "set_speed":
            self.state.update(speed=args["speed"], power=args["speed"] > 0)
        elif command == "on":
            self.state.update(power=True, speed=self._last_speed)
        else:
            super().apply(command, args)
            self.state["speed"] = 0
        if self.state["speed"]:
            self._last_speed = self.state["speed"]


class DisplaySim(ControllerSim):
    type_name = "display"
    initial = {"text": "", "level": "info"}

    def apply(self, command: str, args: dict[str, Any]) -> None:
        if command == "show":
            self.state.update(text=args["text"], level=args.get("level", "info"))
        else:
            self.state.update(text="", level="info")


class AcSim(ControllerSim):
    type_name = "ac"
    initial = {"power": False, "target": 24.0}

    def apply(self, command: str, args: dict[str, Any]) -> None:
        if command == "set_target":
            self.state["target"] = args["celsius"]
        else:
            super().apply(command, args)


class LampSim(ControllerSim):
    type_name = "lamp"
    initial = {"power": False}


class AlarmSim(ControllerSim):
    type_name = "alarm"
    initial = {"power": False, "reason": ""}

    def apply(self, command: str, args: dict[str, Any]) -> None:
        super().apply(command, args)
        self.state["reason"] = args.get("reason", "") if command == "on" else ""


CONTROLLER_SIMS: dict[str, type[ControllerSim]] = {
    "fan": FanSim,
    "display": DisplaySim,
    "ac": AcSim,
    "lamp": LampSim,
    "alarm": AlarmSim,
}
