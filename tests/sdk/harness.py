"""Test scaffolding: a real embedded nats-server + the registry service + ingest, on a background loop thread,
plus fake controllers that acknowledge commands on their state subject, and workload users whose NATS
permissions are exactly the ones docs/workload-contract.md lists (so an SDK that used any other subject
would fail here)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry

from aiot.artifacts.manifests import DeviceTypeDefinition
from aiot.bus import codec
from aiot.bus.auth import NatsUser
from aiot.bus.client import Bus
from aiot.bus.embedded import EmbeddedNats
from aiot.devices.ingest import Ingest, IngestConfig
from aiot.registry import RegistryService

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

COMFORT_ID, FACE_ID = "mdl_comfort01", "mdl_face01"
DEVICES = {  # device id -> device type file
    "dev_temp01": "temperature",
    "dev_light01": "light",
    "dev_cam01": "camera",
    "dev_fan01": "fan",
    "dev_ac01": "ac",
    "dev_lamp01": "lamp",
    "dev_alarm01": "alarm",
    "dev_display01": "display",
    "dev_fandead": "fan",
    "dev_spare01": "temperature",
}
INITIAL_STATE = {
    "fan": {"power": False, "speed": 0},
    "ac": {"power": False, "target": 24},
    "lamp": {"power": False},
    "alarm": {"power": False, "reason": ""},
    "display": {"text": "", "level": "info"},
}


def device_type(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / "device-types" / f"{name}.json").read_text())


class DictDirectory:
    def __init__(self) -> None:
        self.types = {d: DeviceTypeDefinition.model_validate(device_type(t)) for d, t in DEVICES.items()}

    async def lookup(self, device_id: str) -> Any:
        return self.types.get(device_id)


def workload_user(
    workload_id: str,
    password: str,
    *,
    model_id: str | None = None,
    models: list[str] = (),
    sensors: list[str] = (),
    controllers: list[str] = (),
) -> NatsUser:
    """The subjects table of docs/workload-contract.md, and nothing more."""
    publish = [f"aiot.logs.{workload_id}", f"aiot.hb.{workload_id}"]
    subscribe = [f"_INBOX_{workload_id}.>"]
    if model_id:
        publish.append(f"aiot.registry.announce.{model_id}.{workload_id}")
    publish += [f"aiot.registry.resolve.{m}" for m in models]
    for d in sensors:
        subscribe.append(f"aiot.readings.{d}")
        publish.append(f"aiot.registry.latest.{d}")
    for d in controllers:
        publish.append(f"aiot.dev.{d}.cmd")
        subscribe.append(f"aiot.dev.{d}.state")
    return NatsUser(
        username=workload_id,
        password=password,
        publish=publish,
        subscribe=subscribe,
        connection_types=["STANDARD"],
    )


@dataclass
class FakeController:
    """Acknowledges every command by publishing its new state with the command's cmd_id (unless `silent`);
    refuses commands listed in `refuse` with an error."""

    device_id: str
    kind: str
    state: dict[str, Any]
    received: list[dict[str, Any]] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)
    silent: bool = False

    def apply(self, command: str, args: dict[str, Any]) -> None:
        if command == "on":
            self.state["power"] = True
            if self.kind == "fan":
                self.state["speed"] = max(1, self.state.get("speed", 0))
            if "reason" in args:
                self.state["reason"] = args["reason"]
        elif command == "off":
            self.state["power"] = False
        elif command == "set_speed":
            self.state.update(speed=args["speed"], power=args["speed"] > 0)
        elif command == "show":
            self.state.update(text=args["text"], level=args.get("level", "info"))
        elif command == "clear":
            self.state.update(text="", level="info")
        elif command == "set_target":
            self.state["target"] = args["celsius"]


class Platform:
    """Everything runs on one event-loop thread (nats-server is bound to that thread's life)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-platform", daemon=True)
        self.thread.start()
        self.nats = EmbeddedNats(tmp / "data")
        self.passwords: dict[str, str] = {}
        self.controllers: dict[str, FakeController] = {}
        self.registry = RegistryService(ttl=5.0)  # the platform's default is 10 s; shorter keeps tests fast
        self.bus: Bus | None = None
        self.ingest: Ingest | None = None

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def start(self, users: list[NatsUser]) -> None:
        await self.nats.start()
        await self.nats.set_users(users)
        self.bus = await Bus.connect(
            self.nats.url,
            user=self.nats.platform_user,
            password=self.nats.platform_password,
            name="test-platform",
        )
        self.ingest = Ingest(
            self.bus.nc,
            DictDirectory(),
            IngestConfig(history_max_bytes=64 * 1024 * 1024),
            registry=CollectorRegistry(),
        )
        await self.ingest.start()
        await self.registry.attach(self.bus)
        for device_id, type_name in DEVICES.items():
            if type_name in INITIAL_STATE and device_id != "dev_fandead":
                await self.add_controller(device_id, type_name)

    async def add_controller(self, device_id: str, kind: str) -> None:
        assert self.bus is not None
        fake = FakeController(device_id, kind, dict(INITIAL_STATE[kind]))
        self.controllers[device_id] = fake

        async def on_cmd(msg: Any) -> None:
            cmd = codec.decode_command(msg.data)
            fake.received.append({"command": cmd.command, "args": cmd.args, "cmd_id": cmd.cmd_id})
            if fake.silent:
                return
            if cmd.command in fake.refuse:
                body = codec.encode_state(fake.state, cmd_id=cmd.cmd_id, error=fake.refuse[cmd.command])
            else:
                fake.apply(cmd.command, cmd.args)
                body = codec.encode_state(fake.state, cmd_id=cmd.cmd_id)
            await self.bus.publish(f"aiot.dev.{device_id}.state", body)

        await self.bus.subscribe(f"aiot.dev.{device_id}.cmd", on_cmd)
        await self.bus.flush()

    async def publish_reading(self, device_id: str, values: dict[str, Any]) -> None:
        assert self.bus is not None
        await self.bus.publish(f"aiot.dev.{device_id}.data", codec.encode_reading(values))

    async def publish_frame(self, device_id: str, jpeg: bytes) -> None:
        assert self.bus is not None
        await self.bus.publish(f"aiot.dev.{device_id}.data", codec.encode_frame(jpeg, "jpeg"))

    async def collect(self, subject: str) -> list[Any]:
        """Subscribe and append every message to the returned list (test helper)."""
        assert self.bus is not None
        got: list[Any] = []

        async def cb(msg: Any) -> None:
            got.append(msg)

        await self.bus.subscribe(subject, cb)
        await self.bus.flush()
        return got

    async def stop(self) -> None:
        if self.ingest is not None:
            await self.ingest.stop()
        await self.registry.stop()
        if self.bus is not None:
            await self.bus.close()
        await self.nats.stop()

    def close(self) -> None:
        try:
            self.run(self.stop(), 30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
