"""`Bus`: the one NATS connection wrapper every platform process uses.

Thin on purpose: it owns connecting (with a start-up retry policy nats-py lacks), reconnect-forever after
that, logging of connection changes, and get-or-create helpers for streams, KV buckets and object stores.
Everything else returns plain nats-py objects (`Msg`, `Subscription`, `KeyValue`, `ObjectStore`, ...).

Why our own start-up loop: nats-py's `max_reconnect_attempts` governs both the first connect and later
reconnects, and its first connect either gives up after N tries of each server or loops silently. We want
"retry for ever with a clear WARNING per attempt" (or "give up after N attempts with a message that says what
to check") at start-up, and "reconnect for ever" once connected. So each start-up attempt is a fresh nats-py
client with a small attempt budget; after success the live client's reconnect budget is set to unlimited.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit, urlunsplit

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, ObjectStoreConfig, StorageType, StreamConfig, StreamInfo
from nats.js.errors import APIError, BadRequestError, BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from aiot.errors import InsufficientStorage

if TYPE_CHECKING:
    from aiot.settings import Settings

log = logging.getLogger(__name__)

MsgHandler = Callable[[Msg], Awaitable[None]]

CLOSE_SECONDS = 15.0
"""How long `Bus.close` lets a drain take before it closes the connection outright."""
_FIRST_DELAY = 0.25
_MAX_DELAY = 10.0
_RECONNECT_WAIT = 2.0


def is_transient_bus_error(exc: BaseException) -> bool:
    """NATS did not answer in time, nobody answered, or JetStream says it is unavailable for now (503: a cluster
    without a meta leader yet): worth trying again, unlike a refusal or a bad request."""
    if isinstance(exc, NatsTimeout | NoRespondersError | asyncio.TimeoutError):
        return True
    return isinstance(exc, APIError) and exc.code == 503


class BusUnavailable(ConnectionError):
    """NATS could not be reached (or refused us) within the allowed start-up attempts."""


# JetStream's answers when its store has no room: 10047 "insufficient storage resources available" (a stream's
# max_bytes cannot be reserved, or the store is at its max_file_store), 10023 "insufficient resources".
_STORAGE_FULL_CODES = {10047, 10023}


def is_storage_full(exc: BaseException) -> bool:
    """True for a JetStream error that means "no room in the store" (limits or the disk itself)."""
    if not isinstance(exc, APIError):
        return False
    return exc.err_code in _STORAGE_FULL_CODES or "no space left" in str(exc.description or "").lower()


def reservation_failed(exc: BaseException, what: str, setting: str, mb: int) -> InsufficientStorage:
    """The start-up error for a stream whose size cap JetStream cannot reserve: names the setting to lower."""
    return InsufficientStorage(
        f"the NATS store cannot reserve {mb} MiB for {what} ({getattr(exc, 'description', exc)}): lower "
        f"AIOT_{setting.upper()} (now {mb}) or give the data directory more free space",
        field=setting,
        details={"reserve_mb": mb},
    )


def _redact(url: str) -> str:
    """The URL without any password, for log lines and error messages."""
    parts = urlsplit(url if "://" in url else f"nats://{url}")
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "no error detail"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Bus:
    """A connected NATS client plus get-or-create helpers. Create it with `await Bus.connect(...)`."""

    def __init__(self, nc: NatsClient, name: str, *, replicas: int = 1) -> None:
        self.nc = nc
        self.name = name
        self.replicas = replicas
        """Replicas of every stream, KV bucket and object store made through this bus (AIOT_JETSTREAM_REPLICAS)."""
        self._js: JetStreamContext | None = None

    # ----------------------------------------------------------------- connecting

    @classmethod
    async def connect(
        cls,
        servers: list[str] | str,
        *,
        user: str | None = None,
        password: str | None = None,
        name: str,
        connect_timeout: float = 5.0,
        attempts: int = 0,
        replicas: int = 1,
        in_order: bool = False,
    ) -> Bus:
        """Connect to NATS. `attempts=0` retries for ever (WARNING log line per failed attempt, back-off
        0.25 s doubling to 10 s); `attempts=N` raises `BusUnavailable` after N failed attempts.

        One attempt tries every server in `servers` (comma-separated string or list), in a random order of its
        own unless `in_order`: with the servers' order as given, every process of the platform sat on the first
        server, which then carried all the load and whose loss disconnected every process at once (found by
        the multi-host test). Once connected, the client reconnects for ever on connection loss (to the next
        server of its order) and logs disconnects and reconnects.
        """
        urls = [s.strip() for s in (servers.split(",") if isinstance(servers, str) else servers) if s.strip()]
        if not in_order:
            random.shuffle(urls)
        if not urls:
            raise ValueError("Bus.connect: no NATS server URL given (servers is empty)")
        if attempts < 0:
            raise ValueError(f"Bus.connect: attempts must be >= 0 (0 = for ever), got {attempts}")
        shown = ", ".join(_redact(u) for u in urls)
        delay = _FIRST_DELAY
        attempt = 0
        while True:
            attempt += 1
            nc, error = await cls._try_connect(urls, user, password, name, connect_timeout)
            if nc is not None:
                url = nc.connected_url
                log.info("connected to NATS at %s as %r", _redact(url.geturl() if url else "?"), name)
                return cls(nc, name, replicas=replicas)
            if attempts and attempt >= attempts:
                raise BusUnavailable(
                    f"NATS at {shown} unreachable after {attempt} attempt(s) (last error: {_describe(error)}). "
                    "Check that nats-server is running and reachable at that address (host, port, firewall), "
                    "and that the user and password are right (AIOT_NATS_URL, AIOT_NATS_USER, "
                    "AIOT_NATS_PASSWORD)."
                )
            log.warning("NATS at %s unreachable (%s); retrying in %.2gs", shown, _describe(error), delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_DELAY)

    @staticmethod
    async def _try_connect(
        urls: list[str], user: str | None, password: str | None, name: str, connect_timeout: float
    ) -> tuple[NatsClient | None, BaseException | None]:
        """One start-up attempt over all `urls` with a fresh client: (client, None) or (None, last error)."""
        errors: list[BaseException] = []
        connected = False

        # nats-py also fires these callbacks for failed start-up attempts and for our own close();
        # only a live connection's trouble is worth a WARNING.
        def quiet() -> bool:
            return not connected or nc.is_closed or nc.is_draining

        async def on_error(exc: Exception) -> None:
            if not connected:
                errors.append(exc)  # reported once per attempt by connect(), not per socket error
            elif quiet():
                log.debug("NATS connection %r while closing: %s", name, _describe(exc))
            else:
                log.warning("NATS connection %r: %s", name, _describe(exc))

        async def on_disconnect() -> None:
            if not quiet():
                log.warning("NATS connection %r lost; reconnecting", name)

        async def on_reconnect() -> None:
            url = nc.connected_url.geturl() if nc.connected_url else "?"
            log.warning("NATS connection %r re-established to %s", name, _redact(url))

        async def on_closed() -> None:
            if connected:
                log.info("NATS connection %r closed", name)

        nc = NatsClient()
        try:
            await nc.connect(
                servers=urls,
                user=user,
                password=password,
                name=name,
                connect_timeout=connect_timeout,  # type: ignore[arg-type]  # nats-py accepts floats
                allow_reconnect=True,
                # Start-up budget: each server is tried at most twice in this attempt (nats-py counts a
                # server as exhausted once its failures exceed this number); our loop does the back-off.
                max_reconnect_attempts=1,
                reconnect_time_wait=0,
                dont_randomize=True,
                error_cb=on_error,
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
                closed_cb=on_closed,
            )
        except Exception as exc:  # noqa: BLE001 - any failure is one failed attempt; the cause is reported
            with contextlib.suppress(Exception):
                await nc.close()
            last = errors[-1] if errors else exc
            return None, last
        if not nc.is_connected:
            # nats-py can return from connect() still "connecting" (its flusher never starts, publishes vanish)
            # when the first line after its PING is not PONG; a busy server sometimes does that. Retry.
            with contextlib.suppress(Exception):
                await nc.close()
            return None, ConnectionError("the NATS handshake did not complete (no PONG)")
        connected = True
        # From now on, never give up: nats-py reads these options at each reconnect.
        nc.options["max_reconnect_attempts"] = -1
        nc.options["reconnect_time_wait"] = _RECONNECT_WAIT
        nc.options["dont_randomize"] = False
        return nc, None

    # ----------------------------------------------------------------- core NATS

    @property
    def is_connected(self) -> bool:
        return self.nc.is_connected

    async def publish(self, subject: str, data: bytes, headers: dict[str, str] | None = None) -> None:
        await self.nc.publish(subject, data, headers=headers)

    async def subscribe(self, subject: str, cb: MsgHandler, queue: str | None = None) -> Subscription:
        return await self.nc.subscribe(subject, queue=queue or "", cb=cb)

    async def request(
        self,
        subject: str,
        data: bytes = b"",
        timeout: float = 5.0,  # noqa: ASYNC109 - the API the platform asked for, passed to nats-py
        headers: dict[str, str] | None = None,
    ) -> Msg:
        """Request/reply; raises `nats.errors.TimeoutError` or `nats.errors.NoRespondersError`."""
        return await self.nc.request(subject, data, timeout=timeout, headers=headers)

    async def flush(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 - passed to nats-py
        await self.nc.flush(timeout=timeout)  # type: ignore[arg-type]

    async def close(self) -> None:
        """Drain (deliver what is in flight, then close). Safe to call twice."""
        if self.nc.is_closed:
            return
        draining = asyncio.ensure_future(self.nc.drain())
        done, _ = await asyncio.wait({draining}, timeout=CLOSE_SECONDS)  # never wait on a stuck client for ever
        if done and draining.exception() is None:
            return
        log.debug(
            "NATS drain of %r did not finish (%s); closing",
            self.name,
            _describe(draining.exception()) if done else "timed out",
        )
        draining.cancel()
        closing = asyncio.ensure_future(self.nc.close())
        await asyncio.wait({closing}, timeout=5)

    # ----------------------------------------------------------------- JetStream

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            self._js = self.nc.jetstream()
        return self._js

    async def ensure_stream(
        self,
        name: str,
        subjects: Sequence[str],
        *,
        max_age: float | timedelta | None = None,
        max_msgs: int | None = None,
        max_bytes: int | None = None,
        storage: Literal["file", "memory"] = "file",
    ) -> StreamInfo:
        """Create stream `name`, or update it to this configuration if it exists (idempotent).

        `max_age` is seconds (or a timedelta); None means unlimited, also when updating an existing stream.
        """
        if isinstance(max_age, timedelta):
            max_age = max_age.total_seconds()
        config = StreamConfig(
            name=name,
            subjects=list(subjects),
            max_age=max_age,
            max_msgs=max_msgs if max_msgs is not None else -1,
            max_bytes=max_bytes if max_bytes is not None else -1,
            storage=StorageType(storage),
            num_replicas=self.replicas,
        )
        try:
            await self.js.stream_info(name)
        except NotFoundError:
            try:
                return await self.js.add_stream(config)
            except BadRequestError:
                pass  # created concurrently by another process with another config: update below
        return await self.js.update_stream(config)

    async def kv(self, bucket: str, *, ttl: float | timedelta | None = None, history: int = 1) -> KeyValue:
        """The KV bucket `bucket`, created with `ttl` (seconds) and `history` if it does not exist yet.

        An existing bucket is returned as it is (its ttl/history are not changed).
        """
        try:
            found = await self.js.key_value(bucket)
        except BucketNotFoundError:
            pass
        else:
            await self.match_replicas(f"KV_{bucket}")
            return found
        if isinstance(ttl, timedelta):
            ttl = ttl.total_seconds()
        try:
            return await self.js.create_key_value(
                KeyValueConfig(bucket=bucket, ttl=ttl, history=history, replicas=self.replicas)
            )
        except BadRequestError:
            return await self.js.key_value(bucket)  # created concurrently with another config

    async def object_store(self, bucket: str) -> ObjectStore:
        """The object store `bucket`, created if it does not exist yet."""
        try:
            found = await self.js.object_store(bucket)
        except BucketNotFoundError:
            pass
        else:
            await self.match_replicas(f"OBJ_{bucket}")
            return found
        try:
            return await self.js.create_object_store(bucket, ObjectStoreConfig(bucket=bucket, replicas=self.replicas))
        except BadRequestError:
            return await self.js.object_store(bucket)

    async def match_replicas(self, stream: str) -> None:
        """Raise or lower an existing stream (KV and object stores are streams) to this bus's replica count, so
        a changed AIOT_JETSTREAM_REPLICAS is applied, not silently ignored. Errors (e.g. too few servers for
        R3) propagate with the server's reason."""
        info = await self.js.stream_info(stream)
        if info.config.num_replicas != self.replicas:
            log.info("stream %s: %s replica(s) -> %s", stream, info.config.num_replicas, self.replicas)
            config = info.config
            config.num_replicas = self.replicas
            await self.js.update_stream(config)


async def connect_from_settings(
    settings: Settings, *, name: str, servers: str | list[str] | None = None, in_order: bool = False
) -> Bus:
    """Connect with the NATS fields of `Settings` (URL, user, password, timeout, attempts).

    `servers` overrides `settings.nats_url` (e.g. the embedded server's URL when `nats_url` is unset).
    """
    url = servers or settings.nats_url
    if not url:
        raise ValueError("connect_from_settings: settings.nats_url is unset and no servers were given")
    password = settings.nats_password
    return await Bus.connect(
        url,
        user=settings.nats_user,
        password=password.get_secret_value() if password is not None else None,
        name=name,
        connect_timeout=settings.nats_connect_timeout,
        attempts=settings.nats_connect_attempts,
        in_order=in_order,
    )


def other_servers_first(servers: str, connected: str | None) -> list[str]:
    """`servers` (comma separated) in an order that starts after the one `connected` names (a URL; matched by
    host and port), so that a second connection prefers another server than the first."""
    urls = [s.strip() for s in servers.split(",") if s.strip()]
    where = urlsplit(connected or "")
    at = next(
        (i for i, u in enumerate(urls) if (urlsplit(u).hostname, urlsplit(u).port) == (where.hostname, where.port)),
        -1,
    )
    return urls[at + 1 :] + urls[: at + 1]
