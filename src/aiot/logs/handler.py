"""A stdlib `logging.Handler` for platform processes: records go to `aiot.logs.platform.<service>` on NATS.

Never blocks the caller: `emit` (any thread) only formats, redacts and appends to a bounded buffer; one asyncio
task publishes. When the buffer is full the oldest record is dropped and counted (`dropped`), because a
logging call must never stall the control plane waiting for NATS. Records the publisher itself causes (nats-py
logging while it publishes) are not shipped, so there is no feedback loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import threading
from collections import deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiot.logs.records import platform_subject
from aiot.logs.redact import redact, redact_text

if TYPE_CHECKING:
    from aiot.bus.client import Bus

# Attributes every LogRecord has; anything else was passed with `extra=` and is shipped in "extra".
_STANDARD = set(vars(logging.LogRecord("x", logging.INFO, "x", 0, "", (), None))) | {"message", "asctime", "taskName"}
_publishing: contextvars.ContextVar[bool] = contextvars.ContextVar("aiot_log_publishing", default=False)


class PlatformLogHandler(logging.Handler):
    """Ships records of one platform service to the log stream (start with `start()` inside the event loop)."""

    def __init__(
        self, bus: Bus, service: str, *, node_id: str | None = None, level: int = logging.INFO, capacity: int = 10_000
    ) -> None:
        super().__init__(level)
        self.bus = bus
        self.service = service
        self.node_id = node_id
        self.subject = platform_subject(service)
        self.capacity = capacity
        self.published = 0
        self.dropped = 0
        self._buffer: deque[bytes] = deque()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------- producer side (any thread)

    def emit(self, record: logging.LogRecord) -> None:
        if _publishing.get() or record.name.startswith("nats"):
            return  # our own publishing path, or the NATS client itself: shipping it could loop
        try:
            payload = json.dumps(self.to_body(record), default=str).encode()
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)
            return
        with self._lock:
            if len(self._buffer) >= self.capacity:
                self._buffer.popleft()
                self.dropped += 1
            self._buffer.append(payload)
        self._notify()

    def to_body(self, record: logging.LogRecord) -> dict[str, Any]:
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{logging.Formatter().formatException(record.exc_info)}"
        elif record.stack_info:
            message = f"{message}\n{record.stack_info}"
        extra = {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}
        extra.update(module=record.module, line=record.lineno, process=record.process)
        return {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "service": self.service,
            "workload_id": None,
            "app_instance_id": None,
            "node_id": self.node_id,
            "logger": record.name,
            "message": redact_text(message),
            "extra": redact(extra),
        }

    def _notify(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is None or wake is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            wake.set()
        else:
            with contextlib.suppress(RuntimeError):  # the loop is shutting down
                loop.call_soon_threadsafe(wake.set)

    # ----------------------------------------------------------------- publisher side (event loop)

    def start(self) -> None:
        """Start the publishing task on the running loop (call from async code)."""
        if self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._task = self._loop.create_task(self._run(), name=f"log-handler-{self.service}")
        self._wake.set()

    async def _run(self) -> None:
        _publishing.set(True)
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.drain()

    async def drain(self) -> None:
        """Publish everything buffered now. A failed publish keeps the record for the next round."""
        token = _publishing.set(True)
        try:
            while True:
                with self._lock:
                    if not self._buffer:
                        return
                    payload = self._buffer[0]
                if not self.bus.is_connected:
                    return  # nats-py reconnects; records wait (bounded) and go out on the next wake
                try:
                    await self.bus.publish(self.subject, payload)
                except Exception:  # noqa: BLE001 - NATS trouble: keep the record, try again later
                    return
                with self._lock:
                    if self._buffer and self._buffer[0] is payload:
                        self._buffer.popleft()
                self.published += 1
        finally:
            _publishing.reset(token)

    async def aclose(self) -> None:
        """Publish what is left, stop the task and detach from every logger."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self.drain()
            await self.bus.flush(timeout=2)
        logging.getLogger().removeHandler(self)
        self.close()


CHATTY_LOGGERS = ("httpx", "httpcore")
"""Client libraries that log one INFO line per request: the web UI's in-process API calls every 2-3 s per open
page would otherwise be most of the platform's log."""


def quiet_http_client_loggers() -> None:
    """Raise the HTTP client libraries' loggers to WARNING (their errors still reach the log)."""
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def install_platform_log_handler(
    bus: Bus, service: str, *, node_id: str | None = None, level: int | str = logging.INFO
) -> PlatformLogHandler:
    """Attach a `PlatformLogHandler` to the root logger (replacing one installed before) and start it.

    Call from inside the event loop, once the bus is connected; `await handler.aclose()` at shutdown.
    """
    quiet_http_client_loggers()
    root = logging.getLogger()
    for existing in [h for h in root.handlers if isinstance(h, PlatformLogHandler)]:
        root.removeHandler(existing)
    handler = PlatformLogHandler(
        bus, service, node_id=node_id, level=logging.getLevelName(level) if isinstance(level, str) else level
    )
    root.addHandler(handler)
    handler.start()
    return handler
