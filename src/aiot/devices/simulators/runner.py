"""Run many simulated devices in one asyncio loop.

Scale notes (200 sensors at 5 Hz on 2 cores): each sensor is one small task sleeping to its next deadline
(deadlines advance by 1/rate, so a slow tick does not drift the rate); NATS devices that connect with the same
credentials share one connection; devices with their own credentials get one connection each (nats-py costs
a socket and three tasks per connection). MQTT devices always get their own paho client (one thread each),
which is what a fleet of real plain devices looks like, but is the expensive way to simulate hundreds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiot.bus import codec
from aiot.devices import subjects

from .controllers import CONTROLLER_SIMS, ControllerSim
from .links import Connection, Link, MqttLink, NatsLink
from .sensors import SENSOR_SIMS, SensorSim

log = logging.getLogger(__name__)

SIM_MODELS = tuple(SENSOR_SIMS) + tuple(CONTROLLER_SIMS)


@dataclass
class SimDevice:
    """One device to simulate. `model` is a simulator name (camera, light, temperature, fan, display, ac, lamp,
    alarm); `connection` overrides the runner's default (e.g. per-device credentials); `options` go to the
    simulator (rate, tz, scene, mean, ...)."""

    device_id: str
    model: str
    connection: Connection | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        subjects.check_device_id(self.device_id)
        if self.model not in SIM_MODELS:
            raise ValueError(f"unknown simulator {self.model!r} for {self.device_id}; choose from {SIM_MODELS}")


class SimulatorRunner:
    """Owns the links and tasks; `sims[device_id]` gives the simulator object (to heat a room, show a face)."""

    def __init__(self, devices: list[SimDevice], connection: Connection | None = None, *, tz: str = "UTC") -> None:
        self.devices = devices
        self.default = connection
        self.tz = tz
        self.sims: dict[str, SensorSim | ControllerSim] = {}
        self.sent: dict[str, int] = {}
        self.errors = 0
        self._links: dict[Any, Link] = {}
        self._device_links: dict[str, Link] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()

    async def _link_for(self, dev: SimDevice) -> Link:
        conn = dev.connection or self.default
        if conn is None:
            raise ValueError(f"{dev.device_id} has no connection and the runner has no default")
        if conn.transport == "mqtt":
            return await MqttLink.open(conn, dev.device_id)
        key = (conn.nats_url, conn.username, conn.password)
        if key not in self._links:
            self._links[key] = await NatsLink.open(conn)
        return self._links[key]

    async def start(self) -> None:
        # Connect devices a few at a time: hundreds of simultaneous TLS/MQTT handshakes help nobody.
        sem = asyncio.Semaphore(20)
        lock = asyncio.Lock()

        async def connect(dev: SimDevice) -> None:
            async with sem:
                if (dev.connection or self.default) and (dev.connection or self.default).transport == "nats":
                    async with lock:  # shared NATS links are created once
                        link = await self._link_for(dev)
                else:
                    link = await self._link_for(dev)
            self._device_links[dev.device_id] = link

        await asyncio.gather(*(connect(d) for d in self.devices))
        for dev in self.devices:
            link = self._device_links[dev.device_id]
            opts = dict(dev.options)
            if dev.model in SENSOR_SIMS:
                opts.setdefault("tz", self.tz)
                sim: SensorSim | ControllerSim = SENSOR_SIMS[dev.model](dev.device_id, **opts)
            else:
                sim = CONTROLLER_SIMS[dev.model](dev.device_id, **opts)
            self.sims[dev.device_id] = sim
            self.sent[dev.device_id] = 0
            await link.publish(subjects.presence_subject(dev.device_id), codec.encode_presence(True), retain=True)
            if isinstance(sim, ControllerSim):
                await self._start_controller(sim, link)
            else:
                self._tasks.append(asyncio.create_task(self._sensor_loop(sim, link), name=f"sim-{dev.device_id}"))

    async def _start_controller(self, sim: ControllerSim, link: Link) -> None:
        state_subject = subjects.state_subject(sim.device_id)

        async def on_command(payload: bytes) -> None:
            reply = sim.handle(payload)
            if reply is not None:
                await link.publish(state_subject, reply)
                self.sent[sim.device_id] += 1

        await link.subscribe(subjects.cmd_subject(sim.device_id), on_command)
        await link.publish(state_subject, sim.report())
        self.sent[sim.device_id] += 1

    async def _sensor_loop(self, sim: SensorSim, link: Link) -> None:
        subject = subjects.data_subject(sim.device_id)
        loop = asyncio.get_running_loop()
        period = 1.0 / sim.rate
        # Spread start times so 200 devices do not all fire in the same millisecond.
        next_at = loop.time() + sim.rng.random() * period
        while not self._stop.is_set():
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                await link.publish(subject, sim.payload(datetime.now(UTC)))
                self.sent[sim.device_id] += 1
            except Exception as exc:  # keep simulating through a reconnect
                self.errors += 1
                log.warning("simulator %s could not publish: %s", sim.device_id, exc)
            next_at += period
            if next_at < loop.time() - 1.0:  # fell far behind (suspended?): skip, do not burst
                next_at = loop.time()

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        # A clean shutdown says goodbye; an unclean one is covered by MQTT's Last Will.
        for device_id, link in self._device_links.items():
            with contextlib.suppress(Exception):
                await link.publish(subjects.presence_subject(device_id), codec.encode_presence(False), retain=True)
        closed: set[int] = set()
        for link in self._device_links.values():
            if id(link) not in closed:
                closed.add(id(link))
                with contextlib.suppress(Exception):
                    await link.close()
        self._device_links.clear()
        self._links.clear()


async def run_simulators(
    devices: list[SimDevice],
    connection: Connection | None = None,
    *,
    tz: str = "UTC",
    duration: float | None = None,
    stop: asyncio.Event | None = None,
) -> SimulatorRunner:
    """Run `devices` until `stop` is set or `duration` seconds pass (forever when neither); returns the runner
    (its `sent` counts per device) after a clean stop."""
    runner = SimulatorRunner(devices, connection, tz=tz)
    await runner.start()
    started = time.monotonic()
    try:
        waiter = stop or asyncio.Event()
        timeout = None if duration is None else max(0.0, duration - (time.monotonic() - started))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter.wait(), timeout)
    finally:
        await runner.stop()
    return runner
