"""Exceptions the SDK raises. One base class, so app code can catch everything from the platform at once."""

from __future__ import annotations

from typing import Any


class PlatformError(Exception):
    """Base of every SDK exception."""


class ConfigError(PlatformError):
    """The workload configuration is missing or malformed (names the file and the field)."""


class NotOnPlatform(ConfigError):
    """`AIOT_WORKLOAD_CONFIG` is not set: the code is not running under the platform's node agent."""


class UnknownAlias(PlatformError, KeyError):
    """An alias (model, sensor, controller) the app's config does not bind."""

    def __init__(self, kind: str, alias: str, known: list[str]) -> None:
        self.kind, self.alias, self.known = kind, alias, known
        shown = ", ".join(sorted(known)) or "none"
        super().__init__(
            f"unknown {kind} alias {alias!r}: this workload binds {shown} "
            f"(declare it in app.json 'context.{kind}s' and bind it when scheduling)"
        )

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class PlatformUnavailable(PlatformError):
    """The platform (NATS or one of its services) did not answer in time."""


class ModelUnavailable(PlatformError):
    """No replica of the model could be reached (none registered, all refused connections, or timed out)."""


class ModelError(PlatformError):
    """The model answered with an error: `status` is the HTTP status, `field` the bad input (for 422)."""

    def __init__(self, message: str, *, status: int, field: str | None = None, model: str = "") -> None:
        super().__init__(message)
        self.message, self.status, self.field, self.model = message, status, field, model


class CommandRefused(PlatformError):
    """A controller refused a command (its acknowledgement carried an error), or the command is not valid
    for the controller's type (checked before sending)."""

    def __init__(self, device_id: str, command: str, reason: str, state: dict[str, Any] | None = None) -> None:
        super().__init__(f"controller {device_id} refused {command!r}: {reason}")
        self.device_id, self.command, self.reason, self.state = device_id, command, reason, state


class CommandTimeout(PlatformError):
    """No acknowledgement (state message with the command's cmd_id) arrived in time."""

    def __init__(self, device_id: str, command: str, timeout: float) -> None:
        super().__init__(f"controller {device_id} did not acknowledge {command!r} within {timeout:g}s")
        self.device_id, self.command, self.timeout = device_id, command, timeout
