"""The SDK's per-process runtime: one NATS connection on a background event-loop thread.

Why a thread with its own loop: app code is usually a plain script (`model_call(...)` with no `await`), yet
NATS subscriptions, reconnects, heartbeats and log shipping must go on while that code runs or blocks. The
sync API hands coroutines to this loop and waits (`call`); the async API (`a...` functions) awaits them from
any other loop (`acall`), so both share one connection, one subscription set and one heartbeat.

Connecting: each start-up attempt is a fresh nats-py client (a clear line on stderr per failed attempt,
back-off up to 5 s, for ever); once connected the client reconnects for ever. The reply inbox prefix is
`_INBOX_<workload_id>` because the workload's NATS user may subscribe to exactly that.

The client is nats-py's with one protocol fix (`_client_class`): a server PING that arrives during the CONNECT
handshake is answered instead of leaving the connection half-open.
"""

# ruff: noqa: ASYNC109 - the async API names its deadline `timeout`, exactly like the sync API

from __future__ import annotations

import asyncio
import atexit
import collections
import concurrent.futures
import contextlib
import json
import logging
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from platform_sdk.config import WorkloadConfig, load_config
from platform_sdk.errors import PlatformUnavailable
from platform_sdk.heartbeat import CallbackHealth, HeartbeatWriter, Liveness

T = TypeVar("T")
LOG_BUFFER = 10_000  # records kept while disconnected; the oldest are dropped beyond that
FIRST_CONNECT_GRACE = 30.0  # seconds after start that calls wait for the first connection (first_connect_grace)

_WILDCARD = {"0.0.0.0", "::", ""}


def _warn(text: str) -> None:
    """One line on stderr, written whole: print() writes the text and its newline apart, and the SDK's thread
    warns while the app's thread prints, so a line of the app could land between them (seen in a test that
    reads both from one pipe)."""
    sys.stderr.write(f"platform_sdk: {text}\n")
    sys.stderr.flush()


_CLIENT_CLASS: Any = None


def _client_class() -> Any:
    """nats-py's client class, completing its CONNECT handshake when the server's first PING comes before the PONG.

    nats-server sends its first RTT PING 2 s after accepting a client whose handshake PONG it has not sent yet
    (nats-server#1175). nats-py reads exactly one line after its own PING and, when that line is the server's
    PING, returns from connect() half-open: status "connecting", no flusher, every publish silently dropped.
    A handshake slower than 2 s is common on a saturated CPU, e.g. while models load (10 replicas starting on
    2 cores: every attempt failed so for ~40 s), so a ready model replica could not announce itself and stayed
    missing from the registry. The fix is what the protocol allows: answer PONG and read on.
    """
    global _CLIENT_CLASS
    if _CLIENT_CLASS is None:
        from nats.aio.client import Client

        class HandshakeClient(Client):
            async def _process_connect_init(self) -> None:
                transport = getattr(self, "_transport", None)
                readline = getattr(transport, "readline", None)
                if transport is None or readline is None:
                    await super()._process_connect_init()
                    return

                async def answering_pings() -> bytes:
                    while True:
                        line: bytes = await readline()
                        if line.rstrip(b"\r\n") != b"PING":
                            return line
                        transport.write(b"PONG\r\n")
                        await transport.drain()

                transport.readline = answering_pings  # only for the handshake; the read loop uses read()
                try:
                    await super()._process_connect_init()
                finally:
                    vars(transport).pop("readline", None)

        _CLIENT_CLASS = HandshakeClient
    return _CLIENT_CLASS


class Runtime:
    """Owns the loop thread, the NATS client, the heartbeat and the log buffer of this process."""

    def __init__(self, cfg: WorkloadConfig) -> None:
        self.cfg = cfg
        self.loop = asyncio.new_event_loop()
        self.nc: Any = None
        self._connected: asyncio.Event | None = None
        self._logs_ready: asyncio.Event | None = None
        self.log_buffer: collections.deque[bytes] = collections.deque(maxlen=LOG_BUFFER)
        self.logs_dropped = 0
        self.liveness = Liveness(cfg.hang_after, cfg.startup_grace)
        self.callbacks = CallbackHealth()
        self.heartbeat = HeartbeatWriter(cfg.workload_id, cfg.heartbeat_file, self._publish_beat, self.callbacks)
        self.pacemaker_enabled = True  # the serving wrapper beats from its own loop instead
        self._thread = threading.Thread(target=self._main, name="platform-sdk-io", daemon=True)
        self._ready = threading.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._closed = False
        self.extensions: dict[str, Any] = {}  # per-process helpers (model client, device hub) built lazily
        self._created = time.monotonic()
        self._ever_connected = False

    # ------------------------------------------------------------------------------------------ lifecycle

    def start(self) -> Runtime:
        self._thread.start()
        self._ready.wait(10)
        atexit.register(self.close)
        return self

    @property
    def thread_ident(self) -> int | None:
        return self._thread.ident

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._connected = asyncio.Event()
        self._logs_ready = asyncio.Event()
        self._tasks = [
            self.loop.create_task(self._connect_forever()),
            self.loop.create_task(self._pacemaker()),
            self.loop.create_task(self._ship_logs()),
        ]
        self.loop.call_soon(self._ready.set)
        try:
            self.loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                self.loop.close()

    def close(self, timeout: float = 2.0) -> None:
        """Ship buffered log records (briefly), then close the connection. Safe to call twice."""
        if self._closed or not self._thread.is_alive():
            return
        self._closed = True
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._shutdown(timeout), self.loop).result(timeout + 1)
        with contextlib.suppress(Exception):
            self.loop.call_soon_threadsafe(self.loop.stop)

    async def _shutdown(self, timeout: float) -> None:
        for task in self._tasks:
            task.cancel()
        nc = self.nc
        if nc is not None and nc.is_connected:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._drain_logs(), timeout / 2)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.flush(), timeout / 2)
        if nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), timeout / 2)

    # ------------------------------------------------------------------------------------------ connection

    async def _connect_forever(self) -> None:
        cfg = self.cfg
        delay = 0.2
        attempt = 0
        while True:
            attempt += 1
            nc, error = await self._attempt()
            if nc is not None:
                break
            if attempt == 1 or attempt % 10 == 0:
                _warn(
                    f"NATS at {', '.join(cfg.servers)} unreachable ({type(error).__name__}: {error}); "
                    f"retrying (attempt {attempt})"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        nc.options["max_reconnect_attempts"] = -1
        nc.options["reconnect_time_wait"] = 1.0
        self.nc = nc
        assert self._connected is not None and self._logs_ready is not None
        self._ever_connected = True
        self._connected.set()
        self._logs_ready.set()

    async def _attempt(self) -> tuple[Any, BaseException | None]:
        """One start-up attempt with a fresh client: (client, None) or (None, the error)."""
        cfg = self.cfg
        nc = _client_class()()
        errors: list[BaseException] = []
        state = {"connected": False}

        async def on_error(exc: Exception) -> None:
            if not state["connected"]:
                errors.append(exc)

        async def on_disconnect() -> None:
            if state["connected"] and not self._closed:
                _warn("NATS connection lost; reconnecting")

        async def on_reconnect() -> None:
            _warn("NATS connection re-established")
            if self._logs_ready is not None:
                self._logs_ready.set()

        try:
            await nc.connect(
                servers=cfg.servers,
                user=cfg.nats_user,
                password=cfg.nats_password,
                name=f"workload:{cfg.workload_id}",
                inbox_prefix=f"_INBOX_{cfg.workload_id}",
                connect_timeout=10,  # a slow link (seconds of delay) must not keep a workload off NATS
                allow_reconnect=True,
                max_reconnect_attempts=1,
                reconnect_time_wait=0,
                error_cb=on_error,
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
            )
        except Exception as exc:  # noqa: BLE001 - one failed attempt; reported by the caller, then retried
            with contextlib.suppress(Exception):
                await nc.close()
            return None, errors[-1] if errors else exc
        if not nc.is_connected:
            # nats-py returns from connect() still "connecting" (no flusher: every publish is silently dropped,
            # for ever) when the first line after its PING is not PONG (a server PING is answered, see
            # _client_class; this catches anything else).
            with contextlib.suppress(Exception):
                await nc.close()
            return None, ConnectionError("the NATS handshake did not complete (no PONG); retrying")
        state["connected"] = True
        return nc, None

    def first_connect_grace(self) -> float:
        """Seconds a call may wait beyond its own timeout because this process has not connected yet.

        A workload's first connection is authorised by the platform's auth service and, on a loaded machine,
        can take seconds; an app that reads a sensor as its first line must not crash (and be restarted) for
        that. Within FIRST_CONNECT_GRACE of start, calls wait for that first connection; afterwards, and once
        connected, a call's own timeout is all it waits."""
        if self._ever_connected:
            return 0.0
        return max(0.0, self._created + FIRST_CONNECT_GRACE - time.monotonic())

    async def wait_connected(self, timeout: float | None) -> Any:
        """The connected client; PlatformUnavailable after `timeout` seconds (None: wait for ever), or later
        while the process is still making its first connection (see `first_connect_grace`)."""
        assert self._connected is not None
        if self.nc is None:
            if timeout is not None:
                timeout = max(timeout, self.first_connect_grace())
            try:
                await asyncio.wait_for(self._connected.wait(), timeout)
            except TimeoutError:
                raise PlatformUnavailable(
                    f"not connected to the platform's NATS ({', '.join(self.cfg.servers)}) after {timeout:g}s"
                ) from None
        return self.nc

    # ------------------------------------------------------------------------------------------ bridging

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run `coro` on the SDK loop and wait (sync API). The wait counts as progress for the heartbeat."""
        if threading.get_ident() == self._thread.ident:
            coro.close()
            raise RuntimeError("the sync SDK API cannot be used on the SDK's own event loop; use the async API")
        fut = self.submit(coro)
        timeout_s = timeout + self.first_connect_grace()
        with self.liveness.waiting(timeout_s):
            try:
                return fut.result(timeout_s + 2.0)
            except concurrent.futures.TimeoutError:
                fut.cancel()
                raise PlatformUnavailable(f"the platform did not answer within {timeout:g}s") from None

    async def acall(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await `coro` on the SDK loop from any event loop (async API)."""
        self.liveness.checkin()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            return await coro
        return await asyncio.wrap_future(self.submit(coro))

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Schedule `fn(*args)` on the SDK loop from any thread (fire and forget)."""
        if self._closed:
            return
        try:
            if threading.get_ident() == self._thread.ident:
                fn(*args)
            else:
                self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # loop closed at interpreter exit
            pass

    def spawn(self, coro_fn: Callable[[], Awaitable[Any]]) -> None:
        """Start a background task on the SDK loop (used for subscriptions that wait for the connection)."""

        async def runner() -> None:
            try:
                await coro_fn()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a background failure is reported, not fatal
                _warn(f"background task failed: {type(exc).__name__}: {exc}")

        self.call_soon(lambda: self._tasks.append(self.loop.create_task(runner())))

    # ------------------------------------------------------------------------------------------ publishing

    def publish_nowait(self, subject: str, data: bytes) -> None:
        """Publish when connected, from any thread; silently skipped while disconnected."""

        def go() -> None:
            nc = self.nc
            if nc is not None and nc.is_connected:
                self.loop.create_task(self._publish(subject, data))

        self.call_soon(go)

    async def _publish(self, subject: str, data: bytes) -> None:
        with contextlib.suppress(Exception):
            await self.nc.publish(subject, data)

    async def publish_flushed(self, subject: str, data: bytes, timeout: float = 1.0) -> bool:
        """Publish and wait until the server has it (run on the SDK loop, e.g. via `acall`): for a last message
        before the process exits. False when not connected or the flush timed out."""
        nc = self.nc
        if nc is None or not nc.is_connected:
            return False
        try:
            await nc.publish(subject, data)
            await nc.flush(timeout)
        except Exception:  # noqa: BLE001 - best effort, like every publish of this runtime
            return False
        return True

    def _publish_beat(self, data: bytes) -> None:
        if self.cfg.heartbeat_subject:
            self.publish_nowait(self.cfg.heartbeat_subject, data)

    # ------------------------------------------------------------------------------------------ heartbeat

    async def _pacemaker(self) -> None:
        interval = self.cfg.heartbeat_interval
        probe = self._probe_target()
        self.liveness.probe_enabled = probe is not None
        while True:
            started = time.monotonic()
            if self.pacemaker_enabled:
                if (
                    probe is not None
                    and self.liveness.run_thread is None
                    and await _http_answers(*probe, min(1.0, interval))
                ):
                    self.liveness.last_probe_ok = time.monotonic()
                if self.liveness.alive():
                    self.heartbeat.beat()
            await asyncio.sleep(max(0.01, interval - (time.monotonic() - started)))

    def _probe_target(self) -> tuple[str, int] | None:
        """Web apps: (host, port) to probe when the app does not use run()."""
        manifest = self.cfg.manifest
        port = self.cfg.serve.get("port")
        if self.cfg.kind != "app" or manifest.get("kind") != "web" or not port:
            return None
        host = self.cfg.serve.get("host") or "127.0.0.1"
        return ("127.0.0.1" if host in _WILDCARD else host, int(port))

    # ------------------------------------------------------------------------------------------ logs

    def add_log(self, data: bytes) -> None:
        if len(self.log_buffer) == self.log_buffer.maxlen:
            self.logs_dropped += 1
        self.log_buffer.append(data)
        if self._logs_ready is not None:
            self.call_soon(self._logs_ready.set)

    async def _ship_logs(self) -> None:
        assert self._logs_ready is not None
        while True:
            await self._logs_ready.wait()
            self._logs_ready.clear()
            await self._drain_logs()

    async def _drain_logs(self) -> None:
        subject = self.cfg.log_subject
        nc = self.nc
        if not subject or nc is None:
            return
        if self.logs_dropped and nc.is_connected:
            dropped, self.logs_dropped = self.logs_dropped, 0
            self.log_buffer.appendleft(
                json.dumps(
                    {
                        "ts": time.time(),
                        "level": "WARNING",
                        "service": "workload",
                        "workload_id": self.cfg.workload_id,
                        "app_instance_id": self.cfg.app_instance_id,
                        "logger": "platform_sdk",
                        "message": f"{dropped} log records were dropped while the platform was unreachable",
                    }
                ).encode()
            )
        while self.log_buffer and nc.is_connected:
            data = self.log_buffer.popleft()
            try:
                await nc.publish(subject, data)
            except Exception:  # noqa: BLE001 - keep the record for the next attempt
                self.log_buffer.appendleft(data)
                return


async def _http_answers(host: str, port: int, timeout: float) -> bool:
    """True when something answers HTTP on host:port (any status): the web app's server loop is alive."""

    async def probe() -> bool:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(b"GET / HTTP/1.0\r\nHost: localhost\r\nUser-Agent: platform-sdk-probe\r\n\r\n")
            await writer.drain()
            return (await reader.read(5)).startswith(b"HTTP/")
        finally:
            writer.close()

    try:
        return await asyncio.wait_for(probe(), timeout)
    except (OSError, TimeoutError):
        return False


# ---------------------------------------------------------------------------------------------- singleton

_lock = threading.Lock()
_runtime: Runtime | None = None
_config: WorkloadConfig | None = None

log = logging.getLogger("platform_sdk")


def configure(source: Any = None) -> WorkloadConfig:
    """Use this config (dict or path) instead of AIOT_WORKLOAD_CONFIG, e.g. for local development.

    Must be called before the SDK connects (first `get_logger`, `model_call`, `sensor(...).read()`, ...)."""
    global _config
    with _lock:
        if _runtime is not None:
            raise RuntimeError("platform_sdk.configure() must be called before the SDK is first used")
        _config = load_config(source)
        return _config


def config() -> WorkloadConfig:
    """The workload config (loaded from AIOT_WORKLOAD_CONFIG on first use)."""
    global _config
    with _lock:
        if _config is None:
            _config = load_config()
        return _config


def runtime() -> Runtime:
    """The process's runtime, started (connecting in the background) on first use."""
    global _runtime
    if _runtime is not None:
        return _runtime
    cfg = config()
    with _lock:
        if _runtime is None:
            _runtime = Runtime(cfg).start()
        return _runtime


def current_runtime() -> Runtime | None:
    return _runtime
