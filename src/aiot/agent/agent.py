"""`NodeAgent`: the node's reconcile loop (desired workloads from the control plane -> processes here).

Loop, every `poll_interval` s or at once when `aiot.node.<node_id>.wake` arrives on NATS (a fast path only:
polling alone converges): GET assignments; stop what is no longer assigned (or whose generation changed);
prepare and start what is new. Every `report_interval` s: POST load + every workload's state.

Outage rule: an unreachable, slow or failing control plane never stops or restarts anything. Workloads are
stopped only when a *successful* assignments answer no longer lists them; supervisors decide restarts from
local signals only. Failures are retried with back-off and logged once per outage.

Identity: `<data_dir>/node.json` (0600) keeps node id, node token and NATS credentials, so a restarted agent
is the same node. A 401 makes the agent register again with its join token. On start the agent runs nothing
(its previous processes died with it, PR_SET_PDEATHSIG) and converges from the assignments.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import secrets
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from aiot.agent.client import ControlPlaneClient, ControlPlaneUnavailable, NodeNameTaken, NodeUnauthorized
from aiot.agent.envs import EnvBuilder
from aiot.agent.httpserver import AgentHttpServer
from aiot.agent.identity import NodeIdentity, forget_identity, load_identity, save_identity
from aiot.agent.load import LoadSampler, node_capacity
from aiot.agent.logsink import LogSink
from aiot.agent.sandbox import bwrap_path
from aiot.agent.uids import DEFAULT_BASE, DEFAULT_COUNT, UidPool
from aiot.agent.workload import ManagedWorkload, PrepareContext, cleanup_workload_dir
from aiot.bus.client import Bus

if TYPE_CHECKING:
    from aiot.agent.docker_runtime import DockerRuntime

log = logging.getLogger(__name__)

MAX_BACKOFF = 10.0
FIRST_RETRY = 0.5
"""After a failed poll the agent tries again this soon, then twice as late each time up to `MAX_BACKOFF`: behind a
balancer the next try usually reaches a surviving API replica, and a node whose poll failed just as a replica
died must not wait seconds to learn about work moved to it."""
STATE_WATCH = 0.1
"""How often the report loop looks for a workload whose state changed: a change is reported at once (the
control plane learns that a moved replica runs without waiting out `report_interval`)."""
REPORT_SPACING = 0.25
"""The least time between two reports (a crash-looping workload must not turn reports into a flood)."""


def _backoff(failures: int) -> float:
    """The wait after the `failures`-th failed poll in a row: 0.5, 1, 2, 4, 8, then 10 s."""
    return min(FIRST_RETRY * 2 ** (max(failures, 1) - 1), MAX_BACKOFF)


class AgentError(RuntimeError):
    """The agent cannot run as configured (message says what to change)."""


@dataclass
class AgentConfig:
    server: str
    data_dir: Path
    join_token: str | None = None
    name: str = field(default_factory=socket.gethostname)
    address: str = "127.0.0.1"
    labels: dict[str, str] = field(default_factory=dict)
    capacity: dict[str, Any] | None = None
    """{"cpu": cores, "memory_mb": MiB}; None = this machine's."""
    provider: str = "manual"
    env_cache_dir: Path | None = None
    """Where envs and the uv cache live; None = <data_dir>/envs. Agents on one machine may share it."""
    hidden_paths: tuple[Path, ...] = ()
    """Extra folders workloads must not see (the platform's data dir); data dir and env cache always are."""
    use_bwrap: bool | None = None
    """None = sandbox when bwrap is installed; False = plain processes; True = require bwrap."""
    allow_unsandboxed: bool = False
    """Without a sandbox (bwrap missing or use_bwrap=False) the agent refuses to start unless this is set
    (`AIOT_ALLOW_UNSANDBOXED`): uploaded code would otherwise see the whole machine."""
    workload_uid_base: int = DEFAULT_BASE
    workload_uid_count: int = DEFAULT_COUNT
    """Unprivileged uids of a root-run agent's workloads and builds (see `aiot.agent.uids`)."""
    source_build_allow: tuple[str, ...] = ()
    """Distributions whose source distributions may be built (`AIOT_SOURCE_BUILD_ALLOW`); others: wheels only."""
    poll_interval: float = 2.0
    report_interval: float = 2.0
    request_timeout: float = 10.0
    http_host: str = "127.0.0.1"
    http_port: int | None = 0
    """Port of /healthz and /metrics; 0 = any free port, None = no HTTP port."""
    stop_timeout: float = 3.0
    runtime: str = "process"
    """"process" (sandboxed processes) or "docker" (a container per workload, `aiot.agent.docker_runtime`)."""
    nats_servers: list[str] | None = None
    """NATS URLs this node uses instead of the ones the control plane hands out (for the agent and its
    workloads): a local leaf node, or a different route to the same cluster."""


RUNTIMES = ("process", "docker")


class _Outage:
    """Logs a control-plane outage once when it starts and once when it ends."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.since: float | None = None

    def failed(self, exc: BaseException, running: int) -> None:
        if self.since is None:
            self.since = time.monotonic()
            log.warning(
                "control plane %s unreachable (%s); keeping %d workload(s) running, retrying with back-off",
                self.server,
                exc,
                running,
            )

    def ok(self) -> None:
        if self.since is not None:
            log.warning("control plane %s reachable again after %.1fs", self.server, time.monotonic() - self.since)
            self.since = None

    @property
    def down(self) -> bool:
        return self.since is not None


class NodeAgent:
    """Runs until `stop()`; `await agent.start()` returns once its loops are running (not once registered)."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.data_dir = Path(config.data_dir).resolve()
        self.env_cache = Path(config.env_cache_dir or self.data_dir / "envs").resolve()
        self.workloads_dir = self.data_dir / "workloads"
        self.client = ControlPlaneClient(config.server, timeout=config.request_timeout)
        self.sandboxed = config.use_bwrap is not False and bwrap_path() is not None
        self.uids: UidPool | None = None
        if os.geteuid() == 0:  # workloads and builds never run as root
            self.uids = UidPool(config.workload_uid_base, config.workload_uid_count, salt=str(self.data_dir))
        self.envs = EnvBuilder(
            self.env_cache,
            hidden=self._hidden(),
            use_bwrap=self.sandboxed,
            build_user=self.uids.build if self.uids else None,
            source_build_allow=config.source_build_allow,
        )
        self.sink = LogSink()
        self.sampler: LoadSampler | None = None
        self.identity: NodeIdentity | None = None
        self.bus: Bus | None = None
        self.workloads: dict[str, ManagedWorkload] = {}
        self._retiring: dict[str, asyncio.Task[None]] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._registered = asyncio.Event()
        self._lock_fd: int | None = None
        self._outage = _Outage(config.server)
        self._unauthorized_logged = False
        self.http: AgentHttpServer | None = None
        self._metrics = self._make_metrics()
        self.polls = 0
        self.reports = 0
        self._registration_key = secrets.token_urlsafe(32)
        self.docker: DockerRuntime | None = None

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        if self.config.use_bwrap is True and bwrap_path() is None:
            raise AgentError("bwrap was required (use_bwrap=True) but is not installed")
        if not self.sandboxed:
            if not self.config.allow_unsandboxed:
                raise AgentError(
                    "bubblewrap (bwrap) is not installed or was disabled, and this agent runs uploaded code: "
                    "install it (apt-get install bubblewrap) or, to run workloads as plain processes anyway, "
                    "set AIOT_ALLOW_UNSANDBOXED=1"
                )
            log.warning(
                "bubblewrap (bwrap) not available or disabled: workloads run as plain processes without "
                "a sandbox (AIOT_ALLOW_UNSANDBOXED); this node reports itself unsandboxed"
            )
        if self.config.runtime not in RUNTIMES:
            raise AgentError(f"unknown runtime {self.config.runtime!r}; expected one of {', '.join(RUNTIMES)}")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        self._lock_data_dir()
        if self.config.runtime == "docker":
            await self._start_docker()
        self._clean_previous_run()
        self.sampler = await asyncio.to_thread(LoadSampler)
        self.identity = load_identity(self.data_dir, self.config.server)
        if self.identity is None and not self.config.join_token:
            raise AgentError(
                f"no node identity in {self.data_dir} for {self.config.server} and no join token: "
                "pass --token-file FILE or set AIOT_JOIN_TOKEN (an admin creates one with `aiot node token`)"
            )
        if self.identity is not None:
            self.client.token = self.identity.node_token
            self._registered.set()
        if self.config.http_port is not None:
            self.http = AgentHttpServer(self._health, self._metrics_text, self.config.http_host, self.config.http_port)
            await self.http.start()
            log.info("agent /healthz and /metrics on http://%s:%d", self.config.http_host, self.http.port)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._reconcile_loop(), name="agent-reconcile"),
            loop.create_task(self._report_loop(), name="agent-report"),
            loop.create_task(self.sink.run(), name="agent-logs"),
            loop.create_task(self._nats_loop(), name="agent-nats"),
        ]

    async def stop(self) -> None:
        """Stop every workload (SIGTERM, then SIGKILL), the loops, NATS and the HTTP port."""
        self._stopped.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        workloads = list(self.workloads.values())
        self.workloads.clear()
        await asyncio.gather(*(w.stop(self.config.stop_timeout) for w in workloads), return_exceptions=True)
        await asyncio.gather(*self._retiring.values(), return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.sink.flush(), 3)
        if self.bus is not None:
            with contextlib.suppress(Exception):
                await self.bus.close()
        if self.http is not None:
            await self.http.stop()
        await self.client.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def run_until_signalled(self) -> None:
        """Start, run until SIGINT/SIGTERM, stop."""
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, done.set)
        await self.start()
        try:
            await done.wait()
        finally:
            log.info("agent stopping: stopping %d workload(s)", len(self.workloads))
            await self.stop()

    async def wait_registered(self, timeout: float) -> None:  # noqa: ASYNC109
        await asyncio.wait_for(self._registered.wait(), timeout)

    def wake(self) -> None:
        """Poll the control plane now (what a NATS wake message does)."""
        self._wake.set()

    def _lock_data_dir(self) -> None:
        fd = os.open(self.data_dir / "agent.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise AgentError(
                f"another node agent is running with data dir {self.data_dir}; give each agent its own --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def _clean_previous_run(self) -> None:
        """Workload folders of a previous run hold stale configs and credentials: remove them (logs stay)."""
        if self.workloads_dir.is_dir():
            for child in self.workloads_dir.iterdir():
                cleanup_workload_dir(child)
        self.workloads_dir.mkdir(parents=True, exist_ok=True)

    async def _start_docker(self) -> None:
        """Reach the engine, remove containers a killed earlier run of this agent left, make the base image."""
        from aiot.agent.docker_runtime import DockerRuntime, DockerUnavailable

        agent_id = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:16]
        try:
            self.docker = await asyncio.to_thread(DockerRuntime, agent_id)
        except DockerUnavailable as exc:
            raise AgentError(str(exc)) from None
        removed = await asyncio.to_thread(self.docker.remove_orphans)
        if removed:
            log.warning("removed %d container(s) left by an earlier run of this agent: %s", len(removed), removed)
        await asyncio.to_thread(self.docker.base_image)

    # ----------------------------------------------------------------- registration

    async def _register(self) -> None:
        cfg = self.config
        if not cfg.join_token:
            raise NodeUnauthorized("the node token was refused and no join token is configured")
        body = {
            "name": cfg.name,
            "address": cfg.address,
            "labels": {**cfg.labels, "runtime": cfg.runtime},
            "capacity": cfg.capacity or node_capacity(),
            "provider": cfg.provider,
            # The same key on every retry of this registration: when an answer was lost (a timeout while the
            # control plane had in fact registered us, using up a single-use join token), the retry proves it is
            # the same agent and gets the node back instead of "join token already used".
            "registration_key": self._registration_key,
        }
        out = await self.client.register(cfg.join_token, body)
        self.identity = NodeIdentity(
            server=cfg.server,
            node_id=out["node_id"],
            node_token=out["node_token"],
            name=cfg.name,
            nats=dict(out.get("nats") or {}),
        )
        save_identity(self.data_dir, self.identity)
        self._registration_key = secrets.token_urlsafe(32)  # a later registration is a new one
        self.client.token = self.identity.node_token
        self._registered.set()
        log.info("registered as node %s (%s) with %s", self.identity.node_id, cfg.name, cfg.server)

    # ----------------------------------------------------------------- reconcile

    async def _reconcile_loop(self) -> None:
        failures = 0
        while True:
            polled = False
            try:
                if self.identity is None:
                    await self._register()
                assignments = await self.client.assignments()
                self.polls += 1
                self._outage.ok()
                self._unauthorized_logged = False
                self._apply(assignments)
                polled = True
            except NodeUnauthorized as exc:
                if self.config.join_token and self.identity is not None:
                    log.warning("node token refused (%s); registering again with the join token", exc)
                    self.identity = None
                    forget_identity(self.data_dir)
                    continue
                if not self._unauthorized_logged:
                    log.error(
                        "control plane refuses this node (%s) and no usable join token is configured (an admin "
                        "creates one with `aiot node token`); keeping %d workload(s) running",
                        exc,
                        len(self.workloads),
                    )
                    self._unauthorized_logged = True
            except NodeNameTaken as exc:
                if not self._unauthorized_logged:
                    log.error("cannot join as %r: %s", self.config.name, exc)
                    self._unauthorized_logged = True
            except (ControlPlaneUnavailable, KeyError, TypeError, ValueError) as exc:
                self._outage.failed(exc, len(self.workloads))
            except Exception:  # noqa: BLE001 - the loop must survive anything and keep workloads running
                log.exception("reconcile pass failed; retrying")
            failures = 0 if polled else failures + 1
            delay = self.config.poll_interval if polled else _backoff(failures)
            self._retry_failed()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            self._wake.clear()

    def _hidden(self) -> tuple[Path, ...]:
        """Folders no workload or build may see: the agent's data dir, the env cache, the platform's dirs."""
        hidden = {self.data_dir, self.env_cache, *(Path(p).resolve() for p in self.config.hidden_paths)}
        return tuple(sorted(hidden))

    def _context(self) -> PrepareContext:
        return PrepareContext(
            client=self.client,
            envs=self.envs,
            packages_dir=self.data_dir / "packages",
            workloads_dir=self.workloads_dir,
            hidden=self._hidden(),
            use_bwrap=self.sandboxed,
            on_output=self.sink.line,
            register_log_file=self.sink.files.__setitem__,
            nats_servers=self.config.nats_servers,
            uids=self.uids,
            docker=self.docker,
        )

    def _apply(self, assignments: list[dict[str, Any]]) -> None:
        """Converge to `assignments` (safe to call again with the same list: it is idempotent)."""
        desired = {str(a["workload_id"]): a for a in assignments}
        for wid, current in list(self.workloads.items()):
            wanted = desired.get(wid)
            if wanted is None or int(wanted["generation"]) != current.generation:
                why = "no longer assigned" if wanted is None else f"generation {wanted['generation']}"
                log.info("stopping workload %s g%d (%s)", wid, current.generation, why)
                del self.workloads[wid]
                self._retire(current)
        for wid, spec in desired.items():
            if wid in self.workloads:
                continue
            managed = ManagedWorkload(spec, self.workloads_dir)
            self.workloads[wid] = managed
            log.info(
                "starting workload %s g%d (%s %s)",
                wid,
                managed.generation,
                managed.kind,
                (spec.get("package") or {}).get("name"),
            )
            managed.launch(self._context(), wait_for=self._retiring.get(wid))

    def _retire(self, managed: ManagedWorkload) -> None:
        previous = self._retiring.get(managed.workload_id)

        async def _stop() -> None:
            if previous is not None:
                await asyncio.wait({previous})
            await managed.stop(self.config.stop_timeout)

        task = asyncio.get_running_loop().create_task(_stop(), name=f"retire-{managed.workload_id}")
        self._retiring[managed.workload_id] = task
        task.add_done_callback(
            lambda t, wid=managed.workload_id: self._retiring.get(wid) is t and self._retiring.pop(wid, None)
        )

    def _retry_failed(self) -> None:
        for managed in self.workloads.values():
            if managed.retry_due:
                managed.state, managed.reason = "pending", f"retrying ({managed.reason})"
                managed.launch(self._context())

    # ----------------------------------------------------------------- reports

    async def report_body(self) -> dict[str, Any]:
        """Load (sampled in a thread: psutil walks /proc) and every workload's state (read on the loop)."""
        assert self.sampler is not None
        pids = {wid: w.pid for wid, w in self.workloads.items()}
        load = await asyncio.to_thread(self.sampler.sample, pids)
        load["runtime"] = self.config.runtime
        load["sandboxed"] = self.sandboxed  # admins see unsandboxed nodes (`aiot node ls`, /api/v1/nodes)
        return {"load": load, "workloads": [w.report() for w in self.workloads.values()]}

    def _phases(self) -> dict[str, tuple[str, str | None]]:
        """Each workload's state and endpoint: what the control plane must learn at once when it changes."""
        return {wid: w.phase() for wid, w in self.workloads.items()}

    async def _until_next_report(self, reported: dict[str, tuple[str, str | None]]) -> None:
        """Wait `report_interval` s, or less when a workload's state changed since `reported` (like a kubelet's
        status update on change; the periodic report stays the heartbeat)."""
        await asyncio.sleep(REPORT_SPACING)
        deadline = time.monotonic() + self.config.report_interval - REPORT_SPACING
        while (left := deadline - time.monotonic()) > 0:
            if self._phases() != reported:
                return
            await asyncio.sleep(min(STATE_WATCH, left))

    async def _report_loop(self) -> None:
        await self._registered.wait()
        while True:
            reported = self._phases()
            try:
                body = await self.report_body()
                self._update_metrics(body)
                if self.identity is not None:
                    await self.client.report(body)
                    self.reports += 1
                    self._outage.ok()
            except NodeUnauthorized:
                self.wake()  # the reconcile loop handles re-registration
            except ControlPlaneUnavailable as exc:
                self._outage.failed(exc, len(self.workloads))
            except Exception:  # noqa: BLE001 - reporting must never stop
                log.exception("report failed")
            await self._until_next_report(reported)

    # ----------------------------------------------------------------- NATS (logs, wake-ups)

    async def _nats_loop(self) -> None:
        await self._registered.wait()
        ident = self.identity
        if ident is None or not ident.nats.get("servers"):
            log.warning("no NATS address from the control plane: workload output goes to output.log files")
            return
        bus = await Bus.connect(
            self.config.nats_servers or ident.nats["servers"],
            user=ident.nats.get("user"),
            password=ident.nats.get("password"),
            name=f"agent-{ident.name}",
            attempts=0,
        )
        self.bus = bus
        self.sink.node_id = ident.node_id
        self.sink.bus = bus

        async def on_wake(_msg: Any) -> None:
            self.wake()

        await bus.subscribe(f"aiot.node.{ident.node_id}.wake", on_wake)
        log.info("listening for wake-ups on aiot.node.%s.wake", ident.node_id)

    # ----------------------------------------------------------------- health and metrics

    def _health(self) -> dict[str, Any]:
        states: dict[str, int] = {}
        for w in self.workloads.values():
            state = w.report()["state"]
            states[state] = states.get(state, 0) + 1
        return {
            "status": "ok",
            "node_id": self.identity.node_id if self.identity else None,
            "name": self.config.name,
            "control_plane": "unreachable" if self._outage.down else "ok",
            "nats": bool(self.bus and self.bus.is_connected),
            "sandbox": self.sandboxed,
            "workloads": states,
        }

    def _make_metrics(self) -> dict[str, Any]:
        registry = CollectorRegistry()
        return {
            "registry": registry,
            "workloads": Gauge("aiot_agent_workloads", "Workloads on this node by state", ["state"], registry=registry),
            "restarts": Gauge(
                "aiot_agent_workload_restarts",
                "Restarts of each workload",
                ["workload_id"],
                registry=registry,
            ),
            "cpu": Gauge("aiot_agent_cpu_percent", "Node CPU percent", registry=registry),
            "memory": Gauge("aiot_agent_memory_percent", "Node memory percent", registry=registry),
            "control_plane_up": Gauge(
                "aiot_agent_control_plane_up", "1 when the last call succeeded", registry=registry
            ),
            "reports": Counter("aiot_agent_reports", "Reports sent", registry=registry),
            "sandboxed": Gauge(
                "aiot_agent_sandboxed", "1 when workloads run in the bubblewrap sandbox", registry=registry
            ),
        }

    def _update_metrics(self, body: dict[str, Any]) -> None:
        m = self._metrics
        m["cpu"].set(body["load"]["cpu_percent"])
        m["memory"].set(body["load"]["memory_percent"])
        m["sandboxed"].set(1 if self.sandboxed else 0)
        m["control_plane_up"].set(0 if self._outage.down else 1)
        m["reports"].inc()

    def _metrics_text(self) -> bytes:
        """Prometheus text; workload gauges are refreshed at scrape time, load at the last report."""
        m = self._metrics
        m["workloads"].clear()
        m["restarts"].clear()
        for item in (w.report() for w in self.workloads.values()):
            m["workloads"].labels(item["state"]).inc()
            m["restarts"].labels(item["workload_id"]).set(item["restarts"])
        return generate_latest(m["registry"])
