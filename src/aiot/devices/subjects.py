"""The device subject scheme, its MQTT topics, and the server permissions each device gets.

Why here and nowhere else: the scheme is a contract between devices (some with no platform code at all), ingest,
the SDK and the server's permission configuration. Building every subject through these functions keeps the
four in step, and permission lists derived from the same builders cannot drift from what devices use.

    aiot.dev.<device_id>.data       sensor readings / frames        (MQTT aiot/dev/<device_id>/data)
    aiot.dev.<device_id>.cmd        commands to a controller        (MQTT aiot/dev/<device_id>/cmd)
    aiot.dev.<device_id>.state      controller state / command acks (MQTT aiot/dev/<device_id>/state)
    aiot.dev.<device_id>.presence   "online" / "offline"            (MQTT aiot/dev/<device_id>/presence)
    aiot.readings.<device_id>       validated copies, written by ingest only (stream AIOT_READINGS)

nats-server maps MQTT topic `a/b/c` to subject `a.b.c`, so device ids must not contain `.`, `/`, `*`, `>`,
`+`, `#` or spaces: `DEVICE_ID_RE` allows `dev_` followed by url-safe characters only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

PREFIX = "aiot.dev"
READINGS_PREFIX = "aiot.readings"
CHANNELS = ("data", "cmd", "state", "presence")
Channel = Literal["data", "cmd", "state", "presence"]
DeviceKind = Literal["sensor", "controller"]
Transport = Literal["nats", "mqtt", "any"]

DEVICE_ID_RE = re.compile(r"^dev_[A-Za-z0-9_-]{1,60}$")

# Wildcards ingest subscribes to.
ALL_DATA = f"{PREFIX}.*.data"
ALL_STATE = f"{PREFIX}.*.state"
ALL_PRESENCE = f"{PREFIX}.*.presence"
ALL_DEVICE_MESSAGES = f"{PREFIX}.*.*"
ALL_READINGS = f"{READINGS_PREFIX}.>"

# nats-server's MQTT bridge delivers QoS 1 messages to a client through internal subscriptions on
# `$MQTT.sub.<nuid>`; before nats-server 2.12 a user with subscribe permissions needed that granted explicitly
# (NATS docs, MQTT "special permissions"). Since nats-io/nats-server#7637 MQTT connections get `$MQTT.`
# implicitly (verified against 2.15.1 in tests/devices/test_permissions.py).
MQTT_INTERNAL_SUBSCRIBE = ("$MQTT.sub.>",)


def check_device_id(device_id: str) -> str:
    """Return `device_id` when it is safe inside a subject/topic, else raise ValueError saying why."""
    if not isinstance(device_id, str) or not DEVICE_ID_RE.match(device_id):
        raise ValueError(
            f"device id {device_id!r} is invalid: expected 'dev_' followed by 1-60 of [A-Za-z0-9_-] (no dots)"
        )
    return device_id


def device_subject(device_id: str, channel: Channel) -> str:
    if channel not in CHANNELS:
        raise ValueError(f"channel {channel!r} is not one of {CHANNELS}")
    return f"{PREFIX}.{check_device_id(device_id)}.{channel}"


def data_subject(device_id: str) -> str:
    return device_subject(device_id, "data")


def cmd_subject(device_id: str) -> str:
    return device_subject(device_id, "cmd")


def state_subject(device_id: str) -> str:
    return device_subject(device_id, "state")


def presence_subject(device_id: str) -> str:
    return device_subject(device_id, "presence")


def readings_subject(device_id: str) -> str:
    """Where ingest re-publishes a device's validated messages (inside the AIOT_READINGS stream)."""
    return f"{READINGS_PREFIX}.{check_device_id(device_id)}"


def parse_subject(subject: str) -> tuple[str, Channel]:
    """`aiot.dev.<id>.<channel>` -> (id, channel); ValueError for anything else (ingest counts those)."""
    parts = subject.split(".")
    if len(parts) != 4 or f"{parts[0]}.{parts[1]}" != PREFIX or parts[3] not in CHANNELS:
        raise ValueError(f"{subject!r} is not a device subject ({PREFIX}.<device_id>.<channel>)")
    return check_device_id(parts[2]), parts[3]  # type: ignore[return-value]


def to_mqtt_topic(subject: str) -> str:
    """NATS subject -> MQTT topic (`a.b.c` -> `a/b/c`; wildcards `*`/`>` become `+`/`#`)."""
    return "/".join({"*": "+", ">": "#"}.get(tok, tok) for tok in subject.split("."))


def to_nats_subject(topic: str) -> str:
    """MQTT topic -> NATS subject, the mapping nats-server applies."""
    return ".".join({"+": "*", "#": ">"}.get(tok, tok) for tok in topic.split("/"))


def mqtt_topic(device_id: str, channel: Channel) -> str:
    return to_mqtt_topic(device_subject(device_id, channel))


# ---------------------------------------------------------------------------------------------- permissions


@dataclass(frozen=True)
class DevicePermissions:
    """Subjects a device's credential may publish to and subscribe to (NATS subject syntax: the server checks
    MQTT clients against the mapped subjects too). An empty list means "nothing"."""

    publish: list[str] = field(default_factory=list)
    subscribe: list[str] = field(default_factory=list)

    def as_nats_permissions(self) -> dict[str, Any]:
        """The `permissions` map for a nats-server user (config file or auth callout JSON).

        An empty list is written as `deny: [">"]`: nats-server treats a missing or empty list as *no
        restriction*, which is the opposite of what an empty list means here."""

        def side(allowed: list[str]) -> dict[str, list[str]]:
            return {"allow": list(allowed)} if allowed else {"deny": [">"]}

        return {"publish": side(self.publish), "subscribe": side(self.subscribe)}


def device_permissions(device_id: str, kind: DeviceKind, transport: Transport = "nats") -> DevicePermissions:
    """What a device of `kind` may do: a sensor publishes only its own data and presence; a controller
    publishes its own state and presence and subscribes to its own cmd subject.

    The default (`"nats"`) list also serves MQTT clients on nats-server >= 2.12 (tested on the bundled 2.15.1),
    which grants an MQTT session's internal `$MQTT.` subjects implicitly. `"mqtt"`/`"any"` add subscribe
    `$MQTT.sub.>` for older servers; only use them with `allowed_connection_types: ["MQTT"]`, since a plain NATS
    client holding that grant could read other sessions' QoS 1 deliveries."""
    check_device_id(device_id)
    if kind == "sensor":
        publish = [data_subject(device_id), presence_subject(device_id)]
        subscribe: list[str] = []
    elif kind == "controller":
        publish = [state_subject(device_id), presence_subject(device_id)]
        subscribe = [cmd_subject(device_id)]
    else:
        raise ValueError(f"device kind {kind!r} must be 'sensor' or 'controller'")
    if transport in ("mqtt", "any") and subscribe:
        subscribe = subscribe + list(MQTT_INTERNAL_SUBSCRIBE)
    elif transport not in ("nats", "mqtt", "any"):
        raise ValueError(f"transport {transport!r} must be 'nats', 'mqtt' or 'any'")
    return DevicePermissions(publish=publish, subscribe=subscribe)
