"""The platform's messaging layer: one NATS engine (core NATS, JetStream streams, KV, object store, MQTT).

`EmbeddedNats` runs the private nats-server of the embedded default; `Bus` is the connection every platform
process uses, whichever server it points at. See README.md in this folder.
"""

from aiot.bus.auth import PLATFORM_USER, ConnectionType, NatsUser
from aiot.bus.binary import NatsServerNotFound, find_nats_server
from aiot.bus.client import Bus, BusUnavailable, MsgHandler, connect_from_settings
from aiot.bus.embedded import EmbeddedNats, EmbeddedNatsError

__all__ = [
    "PLATFORM_USER",
    "Bus",
    "BusUnavailable",
    "ConnectionType",
    "EmbeddedNats",
    "EmbeddedNatsError",
    "MsgHandler",
    "NatsServerNotFound",
    "NatsUser",
    "connect_from_settings",
    "find_nats_server",
]
