"""`@on_reading(alias)` callbacks and `run()`, the loop that runs them (and earns the heartbeat).

`run()` blocks the calling thread (normally the main thread): readings of every alias with callbacks are
queued by the SDK's I/O thread and the callbacks run one at a time, in order, in the thread that called
`run()` (async callbacks on a private event loop of that thread). An exception in a callback is logged with
its traceback and the loop goes on. `run()` returns after SIGTERM/SIGINT or `stop()`.

The heartbeat: see `platform_sdk.heartbeat` - with `run()` active, beats depend on this loop's check-ins.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import signal
import threading
from collections.abc import Callable
from typing import Any

from platform_sdk.devices import _hub
from platform_sdk.errors import UnknownAlias
from platform_sdk.mailbox import Mailbox
from platform_sdk.runtime import config, runtime

Callback = Callable[[Any], Any]
_callbacks: dict[str, list[Callback]] = {}
_stop = threading.Event()
_active: list[Mailbox] = []
_errors = 0


def on_reading(alias: str) -> Callable[[Callback], Callback]:
    """Register `fn(reading)` (sync or async) for every new reading of the sensor(s) bound to `alias`."""
    bound = config().sensors
    if alias not in bound or not bound[alias]:
        raise UnknownAlias("sensor", alias, list(bound))

    def register(fn: Callback) -> Callback:
        _callbacks.setdefault(alias, []).append(fn)
        return fn

    return register


def heartbeat() -> None:
    """Tell the platform the calling code still makes progress (long computations; see heartbeat.py)."""
    runtime().liveness.checkin()


def stop() -> None:
    """Make `run()` / `arun()` return (from a callback or any thread)."""
    _stop.set()
    for box in list(_active):
        box.wake()


def _on_sigterm(_signum: int, _frame: Any) -> None:
    """First SIGTERM: finish the current callback, then return from run(). Second: exit at once."""
    if _stop.is_set():
        raise SystemExit(0)
    stop()


def _log_failure(fn: Callback, reading: Any, exc: BaseException) -> None:
    global _errors
    _errors += 1
    runtime().callbacks.failed(exc)
    from platform_sdk.logs import get_logger

    get_logger("platform_sdk").exception(
        "callback %s failed on a reading from %s",
        getattr(fn, "__name__", fn),
        getattr(reading, "device_id", "?"),
    )


RUN_BUFFER = 20_000
"""Readings of "every" sensors that may wait for the app's callbacks (beyond: the oldest dropped, counted)."""
RUN_BUFFER_BYTES = 64 << 20
"""...and at most this much of camera frames (20,000 frames would be gigabytes)."""


def delivery(alias: str) -> str:
    """The delivery policy app.json declares for sensor `alias`: "every" (default) or "latest"."""
    context = config().manifest.get("context") or {}
    ref = (context.get("sensors") or {}).get(alias) or {}
    return "latest" if ref.get("delivery") == "latest" else "every"


def delivery_stats() -> dict[str, int]:
    """Readings waiting for callbacks, coalesced by a "latest" policy (delivered by design) and dropped from
    a full "every" buffer (lost: the app was slower than its sensors for too long)."""
    return {
        "waiting": sum(len(box) for box in _active),
        "coalesced": sum(box.coalesced for box in _active),
        "dropped": sum(box.dropped for box in _active),
    }


def _coalescing(box: Mailbox, key: tuple[str, str]) -> Callable[[Any], None]:
    """A listener that puts each reading under `key`: a newer one replaces it while it waits ("latest")."""

    def put(reading: Any) -> None:
        box.put(reading, key=key)

    return put


def _subscribe_all(box: Mailbox) -> None:
    rt = runtime()
    hub = _hub(rt)
    for alias in _callbacks:
        latest = delivery(alias) == "latest"
        for binding in rt.cfg.sensors.get(alias, []):
            hub.listen(binding.device_id, alias, _coalescing(box, (alias, binding.device_id)) if latest else box.put)


def run() -> None:
    """Run the registered callbacks until SIGTERM/SIGINT or `stop()`; keeps the heartbeat going."""
    rt = runtime()
    box = Mailbox(RUN_BUFFER, RUN_BUFFER_BYTES)
    _active.append(box)
    _subscribe_all(box)
    tick = min(0.5, rt.cfg.heartbeat_interval / 2)
    rt.liveness.run_thread = threading.get_ident()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    runner: asyncio.Runner | None = None
    _stop.clear()
    try:
        while not _stop.is_set():
            rt.liveness.checkin()
            ok, reading = box.get(tick)
            if not ok:
                continue
            for fn in list(_callbacks.get(reading.alias, ())):
                rt.liveness.checkin()
                try:
                    result = fn(reading)
                    if inspect.isawaitable(result):
                        if runner is None:
                            runner = asyncio.Runner()
                        runner.run(_await(result))
                    rt.callbacks.succeeded()
                except Exception as exc:  # noqa: BLE001 - one bad reading must not stop the app
                    _log_failure(fn, reading, exc)
    except KeyboardInterrupt:
        pass
    finally:
        rt.liveness.run_thread = None
        _active.remove(box)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if runner is not None:
            runner.close()


async def _await(awaitable: Any) -> Any:
    return await awaitable


async def arun() -> None:
    """`run()` for async apps: `asyncio.run(main())` with `await platform_sdk.arun()` at its end.
    Sync callbacks run on the app's loop (keep them short), async ones are awaited in order."""
    rt = runtime()
    box = Mailbox(RUN_BUFFER, RUN_BUFFER_BYTES)
    _active.append(box)
    _subscribe_all(box)
    tick = min(0.5, rt.cfg.heartbeat_interval / 2)
    rt.liveness.run_thread = threading.get_ident()
    _stop.clear()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGTERM, stop)
    try:
        while not _stop.is_set():
            rt.liveness.checkin()
            ok, reading = await box.aget(tick)
            if not ok:
                continue
            for fn in list(_callbacks.get(reading.alias, ())):
                rt.liveness.checkin()
                try:
                    result = fn(reading)
                    if inspect.isawaitable(result):
                        await result
                    rt.callbacks.succeeded()
                except Exception as exc:  # noqa: BLE001
                    _log_failure(fn, reading, exc)
    finally:
        rt.liveness.run_thread = None
        _active.remove(box)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGTERM)
