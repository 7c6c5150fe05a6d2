"""Fixtures for device tests: a real nats-server with JetStream and an MQTT listener, device types, a
directory of registered devices."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from aiot.artifacts.manifests import DeviceTypeDefinition

from .nats_fixture import NatsServer, start_nats

TEMPERATURE = DeviceTypeDefinition.model_validate(
    {
        "name": "temperature",
        "kind": "sensor",
        "fields": {
            "temperature": {"type": "number", "unit": "°C", "min": -50, "max": 80},
            "humidity": {"type": "integer", "unit": "%", "min": 0, "max": 100},
        },
    }
)
CAMERA = DeviceTypeDefinition.model_validate(
    {"name": "camera", "kind": "sensor", "frame": {"encoding": "jpeg", "max_bytes": 200_000}}
)
LAMP = DeviceTypeDefinition.model_validate(
    {
        "name": "lamp",
        "kind": "controller",
        "commands": {
            "set": {"args": {"on": {"type": "boolean"}}},
            "brightness": {"args": {"level": {"type": "integer", "min": 0, "max": 100}}},
        },
        "state": {"on": {"type": "boolean"}, "level": {"type": "integer", "min": 0, "max": 100}},
    }
)


class DictDirectory:
    """A DeviceDirectory over a dict (the real one reads the database)."""

    def __init__(self, devices: dict[str, Any] | None = None) -> None:
        self.devices: dict[str, Any] = dict(devices or {})
        self.lookups = 0

    async def lookup(self, device_id: str) -> Any:
        self.lookups += 1
        return self.devices.get(device_id)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = start_nats(tmp_path / "nats")
    yield server
    server.stop()


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[nats.NATS]:
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


PLATFORM_USER, PLATFORM_PASSWORD = "aiot-platform", "platform-secret"


@pytest.fixture
def secured_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[NatsServer]:
    """A nats-server whose users are the platform (everything) plus the devices passed by indirect
    parametrisation or the `device_users` marker-free default: list of (device_id, kind, transport, password)."""
    from aiot.devices.subjects import device_permissions

    devices = getattr(request, "param", None) or DEFAULT_DEVICE_USERS
    users: list[dict[str, Any]] = [{"user": PLATFORM_USER, "password": PLATFORM_PASSWORD}]
    for device_id, kind, transport, password in devices:
        perms = device_permissions(device_id, kind, transport)
        users.append({"user": device_id, "password": password, "permissions": perms.as_nats_permissions()})
    server = start_nats(tmp_path / "nats-secured", users=users)
    yield server
    server.stop()


SENSOR_ID, CONTROLLER_ID, OTHER_ID = "dev_mqttsens01", "dev_mqttctrl01", "dev_other00001"
DEFAULT_DEVICE_USERS = [
    (SENSOR_ID, "sensor", "any", "sensor-pw"),
    (CONTROLLER_ID, "controller", "any", "ctrl-pw"),
    (OTHER_ID, "controller", "any", "other-pw"),
]


@pytest.fixture
async def platform_nc(secured_server: NatsServer) -> AsyncIterator[nats.NATS]:
    client = await nats.connect(secured_server.url, user=PLATFORM_USER, password=PLATFORM_PASSWORD)
    yield client
    await client.close()
