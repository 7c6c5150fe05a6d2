"""Sensors and controllers bound to this app instance, by the aliases its app.json declares.

* `sensor(alias)`: readings from `aiot.readings.<device_id>` (validated copies written by the platform's
  ingest) for every device bound to the alias. `latest()` asks the registry for the stored latest value,
  `read()`/`stream()` return readings that arrive after the first call (buffered, oldest dropped beyond 1000).
* `controller(alias).send(command, **args)`: checks the command against the device type, publishes it on
  `aiot.dev.<id>.cmd` with a fresh `cmd_id` and waits for the controller's state message carrying that
  `cmd_id` on `aiot.dev.<id>.state`. An alias bound to several devices sends to all of them at once and
  returns `{device_id: state}`; if any refuses or times out, the first such error is raised after all have
  answered, with every outcome in the exception's `results` attribute.
"""

# ruff: noqa: ASYNC109 - the async API names its deadline `timeout`, exactly like the sync API

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from platform_sdk.config import DeviceBinding
from platform_sdk.errors import CommandRefused, CommandTimeout, PlatformUnavailable, UnknownAlias
from platform_sdk.mailbox import Mailbox
from platform_sdk.runtime import Runtime, _warn, runtime
from platform_sdk.wire import Reading, WireError, decode_record, decode_state, encode_command


class DeviceHub:
    """Per-process subscriptions: one per sensor device (fanned out to listeners) and per controller."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._sensor_listeners: dict[str, list[Callable[[Reading], None]]] = {}
        self._state_waiters: dict[str, dict[str, asyncio.Future[Any]]] = {}
        self._state_subs: dict[str, asyncio.Future[None]] = {}
        self.last_state: dict[str, dict[str, Any]] = {}
        self.bad_records = 0

    # sensors -------------------------------------------------------------------------------------------

    def listen(self, device_id: str, alias: str, fn: Callable[[Reading], None]) -> None:
        """Call `fn(reading)` (on the SDK thread) for every reading of `device_id` from now on."""
        first = device_id not in self._sensor_listeners
        self._sensor_listeners.setdefault(device_id, []).append(fn)
        if first:
            self.rt.spawn(lambda: self._subscribe_readings(device_id, alias))

    async def _subscribe_readings(self, device_id: str, alias: str) -> None:
        nc = await self.rt.wait_connected(None)

        async def on_msg(msg: Any) -> None:
            try:
                reading = decode_record(msg.data, device_id)
            except (WireError, ValueError, KeyError):
                self.bad_records += 1
                return
            reading.alias = alias
            for fn in list(self._sensor_listeners.get(device_id, ())):
                fn(reading)

        await nc.subscribe(f"aiot.readings.{device_id}", cb=on_msg)
        await nc.flush()

    async def latest(self, device_id: str, alias: str, timeout: float) -> Reading | None:
        import nats.errors

        nc = await self.rt.wait_connected(timeout)
        try:
            msg = await nc.request(f"aiot.registry.latest.{device_id}", b"", timeout=timeout)
        except nats.errors.NoRespondersError:
            raise PlatformUnavailable("the platform's registry service is not running") from None
        except nats.errors.TimeoutError:
            raise PlatformUnavailable(f"the registry did not answer within {timeout:g}s") from None
        status = (msg.headers or {}).get("Aiot-Status", "ok")
        if status == "not_found" or not msg.data:
            return None
        if status != "ok":
            raise PlatformUnavailable(f"latest value of {device_id}: {(msg.headers or {}).get('Aiot-Error')}")
        reading = decode_record(msg.data, device_id)
        reading.alias = alias
        return reading

    # controllers ---------------------------------------------------------------------------------------

    async def _ensure_state_sub(self, device_id: str) -> None:
        fut = self._state_subs.get(device_id)
        if fut is None:
            fut = self._state_subs[device_id] = asyncio.get_running_loop().create_future()
            try:
                nc = await self.rt.wait_connected(5.0)

                async def on_state(msg: Any) -> None:
                    await self._on_state(device_id, msg)

                await nc.subscribe(f"aiot.dev.{device_id}.state", cb=on_state)
                fut.set_result(None)
            except BaseException as exc:
                del self._state_subs[device_id]
                fut.set_exception(exc)
                fut.exception()  # mark retrieved
                raise
        await fut

    async def _on_state(self, device_id: str, msg: Any) -> None:
        try:
            state = decode_state(msg.data)
        except (WireError, ValueError):
            return
        if state.error is None:
            self.last_state[device_id] = state.state
        waiter = self._state_waiters.get(device_id, {}).pop(state.cmd_id or "", None)
        if waiter is not None and not waiter.done():
            waiter.set_result(state)

    async def send_one(self, device_id: str, command: str, args: dict[str, Any], timeout: float) -> dict[str, Any]:
        await self._ensure_state_sub(device_id)
        cmd_id = "cmd_" + secrets.token_urlsafe(12)
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._state_waiters.setdefault(device_id, {})[cmd_id] = waiter
        try:
            await self.rt.nc.publish(f"aiot.dev.{device_id}.cmd", encode_command(cmd_id, command, args))
            try:
                state = await asyncio.wait_for(waiter, timeout)
            except TimeoutError:
                raise CommandTimeout(device_id, command, timeout) from None
        finally:
            self._state_waiters.get(device_id, {}).pop(cmd_id, None)
        if state.error is not None:
            raise CommandRefused(device_id, command, state.error, state.state)
        result: dict[str, Any] = state.state
        return result


def _hub(rt: Runtime) -> DeviceHub:
    hub = rt.extensions.get("devices")
    if hub is None:
        hub = rt.extensions["devices"] = DeviceHub(rt)
    return hub


# ------------------------------------------------------------------------------------------------ sensors


class Sensor:
    """The devices bound to one sensor alias. Get it with `sensor(alias)` (one object per alias)."""

    def __init__(self, rt: Runtime, alias: str, bindings: list[DeviceBinding]) -> None:
        self.rt = rt
        self.alias = alias
        self.bindings = bindings
        self.device_ids = [b.device_id for b in bindings]
        self._mailbox: Mailbox | None = None

    def __repr__(self) -> str:
        return f"Sensor({self.alias!r}, devices={self.device_ids})"

    async def _latest(self, timeout: float) -> Reading | None:
        hub = _hub(self.rt)
        results = await asyncio.gather(*(hub.latest(d, self.alias, timeout) for d in self.device_ids))
        found = [r for r in results if r is not None]
        return max(found, key=lambda r: r.ts) if found else None

    def latest(self, timeout: float = 2.0) -> Reading | None:
        """The most recent stored reading (the newest across the alias's devices), or None if none yet.
        Raises PlatformUnavailable when the platform does not answer."""
        self.rt.liveness.checkin()
        return self.rt.call(self._latest(timeout), timeout)

    async def alatest(self, timeout: float = 2.0) -> Reading | None:
        return await self.rt.acall(self._latest(timeout))

    def _box(self) -> Mailbox:
        if self._mailbox is None:
            self._mailbox = Mailbox()
            hub = _hub(self.rt)
            for device_id in self.device_ids:
                hub.listen(device_id, self.alias, self._mailbox.put)
        return self._mailbox

    def read(self, timeout: float | None = None) -> Reading:
        """The next reading not yet returned (buffered since the first read/stream call); TimeoutError after
        `timeout` seconds (None: wait for ever)."""
        box = self._box()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = 1.0 if deadline is None else min(1.0, max(0.0, deadline - time.monotonic()))
            with self.rt.liveness.waiting(step):
                ok, item = box.get(step)
            if ok:
                reading: Reading = item
                return reading
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"no reading from sensor {self.alias!r} within {timeout:g}s")

    async def aread(self, timeout: float | None = None) -> Reading:
        self.rt.liveness.checkin()
        ok, item = await self._box().aget(timeout)
        if not ok:
            raise TimeoutError(f"no reading from sensor {self.alias!r} within {timeout:g}s")
        reading: Reading = item
        return reading

    def stream(self) -> Iterator[Reading]:
        """Readings as they arrive, for ever (a blocking iterator)."""
        while True:
            yield self.read(None)

    async def astream(self) -> AsyncIterator[Reading]:
        """Readings as they arrive, for ever (`async for r in sensor("camera").astream(): ...`)."""
        while True:
            yield await self.aread(None)


# ------------------------------------------------------------------------------------------------ controllers


def _check_value(name: str, spec: dict[str, Any], value: Any) -> str | None:
    kind = spec.get("type", "number")
    if kind in ("number", "integer"):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return f"argument {name!r} must be a number, got {value!r}"
        if kind == "integer" and not float(value).is_integer():
            return f"argument {name!r} must be an integer, got {value!r}"
        if spec.get("min") is not None and value < spec["min"]:
            return f"argument {name!r} = {value} is below its minimum {spec['min']}"
        if spec.get("max") is not None and value > spec["max"]:
            return f"argument {name!r} = {value} is above its maximum {spec['max']}"
    elif kind == "string":
        if not isinstance(value, str):
            return f"argument {name!r} must be a string, got {value!r}"
        if spec.get("enum") and value not in spec["enum"]:
            return f"argument {name!r} = {value!r} is not one of {spec['enum']}"
    elif kind == "boolean" and not isinstance(value, bool):
        return f"argument {name!r} must be true or false, got {value!r}"
    return None


def check_command(device_type: dict[str, Any], command: str, args: dict[str, Any]) -> str | None:
    """Why `command(args)` is invalid for `device_type`, or None (None also when the type is unknown)."""
    commands = device_type.get("commands")
    if not commands:
        return None
    if command not in commands:
        return f"unknown command (known: {', '.join(sorted(commands))})"
    spec = commands[command] or {}
    fields = spec.get("args") or {}
    for name, value in args.items():
        if name not in fields:
            return f"unknown argument {name!r} (known: {', '.join(sorted(fields)) or 'none'})"
        problem = _check_value(name, fields[name] or {}, value)
        if problem:
            return problem
    for name, fspec in fields.items():
        if name not in args and (fspec or {}).get("required", True):
            return f"required argument {name!r} is missing"
    return None


class Controller:
    """The devices bound to one controller alias. Get it with `controller(alias)`."""

    def __init__(self, rt: Runtime, alias: str, bindings: list[DeviceBinding]) -> None:
        self.rt = rt
        self.alias = alias
        self.bindings = bindings
        self.device_ids = [b.device_id for b in bindings]
        self._failure_logged_at = -math.inf  # one-way commands' failures (see _log_failure)
        self._failures_unlogged = 0

    def __repr__(self) -> str:
        return f"Controller({self.alias!r}, devices={self.device_ids})"

    @property
    def state(self) -> dict[str, Any] | dict[str, dict[str, Any]] | None:
        """Last acknowledged state (per device id when the alias has several devices)."""
        known = _hub(self.rt).last_state
        if len(self.device_ids) == 1:
            return known.get(self.device_ids[0])
        return {d: known[d] for d in self.device_ids if d in known}

    def _check(self, command: str, args: dict[str, Any]) -> None:
        """CommandRefused, before anything is sent, for a command or argument the device type does not accept."""
        for b in self.bindings:
            problem = check_command(b.device_type, command, args)
            if problem:
                raise CommandRefused(b.device_id, command, problem)

    async def _send(self, command: str, args: dict[str, Any], timeout: float) -> Any:
        self._check(command, args)
        hub = _hub(self.rt)
        results = await asyncio.gather(
            *(hub.send_one(d, command, args, timeout) for d in self.device_ids), return_exceptions=True
        )
        if len(self.device_ids) == 1:
            if isinstance(results[0], BaseException):
                raise results[0]
            return results[0]
        outcome = dict(zip(self.device_ids, results, strict=True))
        for value in results:
            if isinstance(value, BaseException):
                value.results = outcome  # type: ignore[attr-defined]
                raise value
        return outcome

    def send(self, command: str, timeout: float = 5.0, *, args: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        """Send `command` with arguments (`send("set_speed", speed=2)`) and return the acknowledged state dict
        (`{device_id: state}` for an alias with several devices); CommandRefused / CommandTimeout else."""
        merged = {**(args or {}), **kwargs}
        return self.rt.call(self._send(command, merged, timeout), timeout)

    async def asend(
        self, command: str, timeout: float = 5.0, *, args: dict[str, Any] | None = None, **kwargs: Any
    ) -> Any:
        return await self.rt.acall(self._send(command, {**(args or {}), **kwargs}, timeout))

    def send_nowait(
        self, command: str, timeout: float = 5.0, *, args: dict[str, Any] | None = None, **kwargs: Any
    ) -> concurrent.futures.Future[Any]:
        """A one-way command (ThingsBoard's one-way RPC): checked at once (CommandRefused before anything is
        sent), then published without waiting for the acknowledgement. Returns a Future of what `send` would
        return; `.result()` waits for it. A callback that commands a device for every reading then costs a
        publish, not a round trip, so the next reading does not wait behind this one's acknowledgement.
        Commands are published in the order given; a command that fails (refused, no acknowledgement within
        `timeout`) is logged, whether or not anyone looks at its Future."""
        merged = {**(args or {}), **kwargs}
        self._check(command, merged)
        self.rt.liveness.checkin()
        future = self.rt.submit(self._send(command, merged, timeout))
        future.add_done_callback(self._log_failure)
        return future

    def _log_failure(self, future: concurrent.futures.Future[Any]) -> None:
        """Log a failed one-way command (to stderr: the app's log), at most one line a second: a controller that
        is gone fails every command, and thousands of identical lines a second would bury the app's own logs."""
        if future.cancelled() or future.exception() is None:
            return
        self._failures_unlogged += 1
        now = time.monotonic()
        if now - self._failure_logged_at < 1.0:
            return
        more = (
            f" (and {self._failures_unlogged - 1} more since the last such line)" if self._failures_unlogged > 1 else ""
        )
        self._failure_logged_at, self._failures_unlogged = now, 0
        _warn(f"one-way command to {self.alias!r} failed: {future.exception()}{more}")


_sensors: dict[str, Sensor] = {}
_controllers: dict[str, Controller] = {}


def sensor(alias: str) -> Sensor:
    """The sensor(s) bound to `alias` (from app.json's context.sensors). UnknownAlias if not bound."""
    rt = runtime()
    rt.liveness.checkin()
    if alias not in _sensors:
        bound = rt.cfg.sensors
        if alias not in bound or not bound[alias]:
            raise UnknownAlias("sensor", alias, list(bound))
        _sensors[alias] = Sensor(rt, alias, bound[alias])
    return _sensors[alias]


def controller(alias: str) -> Controller:
    """The controller(s) bound to `alias` (from app.json's context.controllers). UnknownAlias if not bound."""
    rt = runtime()
    rt.liveness.checkin()
    if alias not in _controllers:
        bound = rt.cfg.controllers
        if alias not in bound or not bound[alias]:
            raise UnknownAlias("controller", alias, list(bound))
        _controllers[alias] = Controller(rt, alias, bound[alias])
    return _controllers[alias]
