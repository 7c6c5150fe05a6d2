"""Runs a set of platform services in one process: database, NATS (embedded or external), services.

`aiot up` runs every service; `aiot service run NAME` runs one. Both go through `ControlPlane`, so a service
behaves the same alone or together. Start order: migrate the database, create the first admin, bring up NATS,
connect the bus, start the services; stop runs the other way round and always stops the embedded nats-server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from aiot.accounts.users import ensure_admin
from aiot.bus.client import Bus, is_transient_bus_error
from aiot.bus.embedded import EmbeddedNats
from aiot.datadir import prepare_data_dir
from aiot.errors import ServiceUnavailable
from aiot.ids import new_id
from aiot.launch.catalog import build_services
from aiot.logs.handler import PlatformLogHandler, install_platform_log_handler
from aiot.services.contract import PlatformService, ServiceContext
from aiot.settings import Settings
from aiot.store import migrate
from aiot.store.engine import Database

log = logging.getLogger(__name__)

DISK_FULL_BYTES = 1 << 20  # less free under the NATS store than this: JetStream writes may fail
STOP_SERVICE_S = 10.0  # at most this per service when stopping (then the next one)
STOP_STEP_S = 5.0  # at most this for the last log records, and for draining the NATS connection
DISK_BACK_BYTES = 4 << 20  # free again after a full disk: restart the embedded nats-server (clears write errors)


@dataclass
class StartupReport:
    """What a person starting the platform needs to see once."""

    api_url: str | None
    nats_url: str
    database_url: str
    admin_username: str
    generated_admin_password: str | None


START_PATIENCE_S = 60.0  # how long a service's start rides out a NATS cluster that is not answering yet


async def _start_riding_out_the_bus(service: PlatformService, ctx: ServiceContext) -> None:
    """Start `service`; while its start fails only because NATS did not answer in time (a JetStream cluster
    electing leaders as its servers come up, replicas creating the same stream at once), stop what it began and
    start it again, for up to START_PATIENCE_S. Any other error fails at once, as before. The multi-host test saw
    an `ingest` replica exit on such a time-out while the three servers of its cluster were starting."""
    deadline, delay = asyncio.get_running_loop().time() + START_PATIENCE_S, 0.5
    while True:
        try:
            await service.start(ctx)
            return
        except Exception as exc:
            if not is_transient_bus_error(exc) or asyncio.get_running_loop().time() + delay > deadline:
                raise
            log.warning("service %s: NATS did not answer in time (%s); starting it again", service.name, exc)
            await service.stop()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


class ControlPlane:
    def __init__(
        self, settings: Settings, service_names: list[str] | None = None, without: tuple[str, ...] = ()
    ) -> None:
        """`service_names` None: the whole control plane (it owns the embedded nats-server), less `without` (the
        services an operator runs as their own processes, e.g. scheduler replicas under a process manager).
        A list: those services alone, joining the NATS server and database of a running platform."""
        self.settings = settings
        self.service_names = service_names
        self.without = without
        self.embedded: EmbeddedNats | None = None
        self._attached: EmbeddedNats | None = None
        self._log_handler: PlatformLogHandler | None = None
        self.ctx: ServiceContext | None = None
        self._started: list[PlatformService] = []
        self._stop_event = asyncio.Event()
        self._nats_watch: asyncio.Task[None] | None = None

    async def start(self) -> StartupReport:
        settings = self.settings
        prepare_data_dir(settings.data_dir)  # 0700, with the database and secrets 0600
        url = settings.effective_database_url
        await asyncio.to_thread(migrate.upgrade, url)
        db = Database(url)
        with db.session() as session:
            generated = ensure_admin(
                session,
                settings.admin_username,
                settings.admin_password.get_secret_value() if settings.admin_password else None,
            )
        try:
            bus = await self._connect_bus()
            self._log_handler = install_platform_log_handler(
                bus, "+".join(self.service_names) if self.service_names else "control-plane"
            )
            self.ctx = ctx = ServiceContext(
                settings=settings, db=db, bus=bus, embedded=self.embedded, instance_id=new_id("ins")
            )
            for service in build_services(self.service_names, self.without):
                ctx.services[service.name] = service
                await _start_riding_out_the_bus(service, ctx)
                self._started.append(service)
                log.info("service %s started", service.name)
        except BaseException:
            await self.stop()
            raise
        if self.embedded is not None:
            self._nats_watch = asyncio.create_task(self._watch_embedded(self.embedded), name="embedded-nats-watch")
        api = ctx.services.get("api")
        if "api" in ctx.services and (settings.nodes > 0 or settings.autoscale):
            self._start_local_nodes(ctx, getattr(api, "url", ""))
        return StartupReport(
            api_url=getattr(api, "url", None),
            nats_url=self._nats_servers()[0],
            database_url=_redact(url),
            admin_username=settings.admin_username,
            generated_admin_password=generated,
        )

    def _start_local_nodes(self, ctx: ServiceContext, api_url: str) -> None:
        """`aiot up --nodes N`: N node agents on this machine, each joined with its own single-use join token."""
        from datetime import timedelta

        from aiot.deployer.nodes import create_join_token
        from aiot.deployer.providers import LocalNodeProvider

        def join_token() -> str:
            with ctx.db.session() as session:
                return create_join_token(session, None, ttl=timedelta(minutes=self.settings.join_token_ttl_minutes))

        provider = LocalNodeProvider(
            api_url, join_token, self.settings.data_dir, self.settings.log_level, self.settings.node_runtime
        )
        ctx.node_provider = provider
        for _ in range(self.settings.nodes):
            provider.add_node()

    async def _watch_embedded(self, embedded: EmbeddedNats, every: float = 1.0) -> None:
        """Start the embedded nats-server again when it dies under us (killed, crashed, OOM): same ports, same
        store, same users. Every client (services, agents, workloads, devices) reconnects by itself. Runs on
        the event-loop thread, which the server's parent-death signal is tied to.

        Also after a full disk: a stream whose write failed for lack of space refuses every later write until
        nats-server restarts, so once space returns the server is restarted (the store is intact)."""
        disk_was_full = False
        log_offset = embedded.write_errors_since(1 << 62)[1]
        while True:
            await asyncio.sleep(every)
            if embedded.running:
                write_failed, log_offset = await asyncio.to_thread(embedded.write_errors_since, log_offset)
                free = await asyncio.to_thread(embedded.store_free_bytes)
                if write_failed or free < DISK_FULL_BYTES:
                    if not disk_was_full:
                        log.error(
                            "the disk under the NATS store is full (%d bytes free%s): JetStream writes "
                            "fail; the embedded nats-server restarts once %d MiB are free again",
                            free,
                            ", nats.log reports a failed write" if write_failed else "",
                            DISK_BACK_BYTES >> 20,
                        )
                    disk_was_full = True
                    continue
                if not disk_was_full or free < DISK_BACK_BYTES:
                    continue
                log.warning(
                    "space returned under the NATS store (%d MiB free); restarting the embedded "
                    "nats-server to clear its write errors",
                    free >> 20,
                )
            else:
                log.error("the embedded nats-server exited (pid %s); starting it again", embedded.pid)
            try:
                await embedded.stop()  # reap it and clear its pid file
                await embedded.start()
                disk_was_full = False
                log_offset = embedded.write_errors_since(1 << 62)[1]  # what the old server wrote is handled
            except Exception:  # noqa: BLE001 - keep trying; the log says why it failed
                log.exception("restarting the embedded nats-server failed; retrying")
                await asyncio.sleep(every * 4)

    def _nats_servers(self) -> list[str]:
        if self.embedded is not None:
            return [self.embedded.url]
        if self._attached is not None:
            return [self._attached.url]
        return [u.strip() for u in (self.settings.nats_url or "").split(",") if u.strip()]

    async def _connect_bus(self) -> Bus:
        settings = self.settings
        if settings.embedded_nats and self.service_names is not None:
            # A lone service joins the embedded server that `aiot up` runs on this data dir.
            shared = EmbeddedNats(settings.data_dir, settings.nats_host)
            if not shared.attach():
                raise ServiceUnavailable(
                    f"no running platform owns {settings.data_dir}: start `aiot up` first, or point "
                    "AIOT_NATS_URL (and AIOT_DATABASE_URL) at the shared NATS server and database"
                )
            self._attached = shared
            user, password = shared.platform_user, shared.platform_password
        elif settings.embedded_nats:
            self.embedded = EmbeddedNats(
                settings.data_dir,
                settings.nats_host,
                client_port=settings.nats_port,
                mqtt_port=settings.mqtt_port,
                avoid_ports=frozenset({settings.port}),
            )
            await self.embedded.start()
            user, password = self.embedded.platform_user, self.embedded.platform_password
        else:
            user = settings.nats_user
            password = settings.nats_password.get_secret_value() if settings.nats_password else None
        return await Bus.connect(
            self._nats_servers(),
            user=user,
            password=password,
            name=f"aiot-{'+'.join(self.service_names or ['all'])}",
            connect_timeout=settings.nats_connect_timeout,
            attempts=settings.nats_connect_attempts,
            replicas=settings.jetstream_replicas,
        )

    async def stop(self) -> None:
        if self._nats_watch is not None:
            self._nats_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._nats_watch
            self._nats_watch = None
        if self.ctx is not None and self.ctx.node_provider is not None:
            stop_all = getattr(self.ctx.node_provider, "stop_all", None)
            if stop_all is not None:
                await asyncio.to_thread(stop_all)
        for service in reversed(self._started):
            try:
                await _bounded(f"stopping service {service.name}", service.stop(), STOP_SERVICE_S)
            except Exception:  # noqa: BLE001 - keep stopping the others
                log.exception("service %s failed to stop cleanly", service.name)
        self._started.clear()
        if self._log_handler is not None:
            with contextlib.suppress(Exception):
                await _bounded("publishing the last log records", self._log_handler.aclose(), STOP_STEP_S)
            self._log_handler = None
        if self.ctx is not None:
            if self.ctx.bus is not None:
                with contextlib.suppress(Exception):
                    if not await _bounded("draining the NATS connection", self.ctx.bus.close(), STOP_STEP_S):
                        await self.ctx.bus.nc.close()
            self.ctx.db.dispose()
            self.ctx = None
        if self.embedded is not None:
            await self.embedded.stop()
            self.embedded = None

    def request_stop(self) -> None:
        self._stop_event.set()

    async def run_until_signalled(self) -> None:
        """Wait for SIGINT/SIGTERM (or `request_stop`), then stop everything."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._stop_event.set)
        try:
            await self._stop_event.wait()
        finally:
            await self.stop()


async def _bounded(what: str, step: Coroutine[Any, Any, Any], seconds: float) -> bool:
    """Run one shutdown step for at most `seconds`: a stuck step (a drain waiting on a dead peer, a thread
    blocked on a database lock) must not keep the process from exiting. False when it was cut short."""
    try:
        await asyncio.wait_for(step, seconds)
    except TimeoutError:
        log.warning("%s did not finish within %.0f s; going on with the shutdown", what, seconds)
        return False
    return True


def _redact(url: str) -> str:
    """A database URL safe to print: the password, if any, replaced by ***."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
