"""`WorkloadSupervisor`: keeps one workload process running and says truthfully how it is.

Only local signals decide a restart: the process's exit status and the mtime of its heartbeat file (the SDK
rewrites it every `interval` seconds). The control plane, NATS and the network are never consulted, so no
delay or outage between agent and control plane can restart a healthy workload.

States (the `state` field of the agent's report):

- `starting`: process started, no heartbeat yet (models with a `healthz_url`: or /healthz not answering yet);
- `running`: heartbeats fresh;
- `unhealthy`: last heartbeat older than 2 intervals (late, not yet hung);
- `restarting`: the process exited or hung and was killed; waiting out the crash-loop back-off;
- `stopped`: `stop()` was called; `failed`: the program cannot even be started (e.g. missing binary).

Hung = process alive and the heartbeat file older than 3 intervals (or no first heartbeat within
`startup_grace` seconds): SIGTERM (+SIGCONT, so a stopped process sees it), SIGKILL after `hang_kill_after`,
restart. Crash-loop back-off: the first restart is immediate, then 0.5 s doubling up to 30 s; a run that
stayed healthy for 60 s resets it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil

from aiot.agent.sandbox import LaunchPlan

log = logging.getLogger(__name__)

OutputCallback = Callable[[str, str, str], None]
"""(workload_id, stream "stdout"/"stderr", line without the newline)."""

LINE_LIMIT = 64 * 1024
HEALTHY_RESET = 60.0
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0


def backoff_delay(consecutive_failures: int) -> float:
    """Delay before restart number `consecutive_failures` (1-based) of a crash loop: 0, 0.5, 1, 2, ... 30."""
    if consecutive_failures <= 1:
        return 0.0
    return min(BACKOFF_FIRST * 2 ** (consecutive_failures - 2), BACKOFF_MAX)


def describe_exit(code: int | None, sandboxed: bool) -> str:
    if code is None:
        return "exited"
    if code < 0:
        return f"killed by signal {signal.Signals(-code).name}"
    if sandboxed and code > 128 and code - 128 in signal.valid_signals():
        return f"killed by signal {signal.Signals(code - 128).name}"  # bwrap reports 128 + signal
    return f"exited with code {code}"


_EXCEPTION_LINE = re.compile(
    r"^(?:[A-Za-z_]\w*\.)*([A-Z]\w*(?:Error|Exception|Unavailable|Exit|Failed|Failure|Timeout|Denied)\w*)"
    r"(?:: (.*))?$"
)


def error_summary(line: str) -> str | None:
    """`ValueError: bad input` for the last line of a Python traceback (module path dropped), else None.
    A restart reason carries it, so whoever sees the state learns why without reading a raw traceback."""
    match = _EXCEPTION_LINE.match(line.strip()) if line[:1] not in (" ", "\t") else None
    if match is None:
        return None
    name, message = match.group(1), (match.group(2) or "").strip()
    return f"{name}: {message}"[:200] if message else name


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts is not None else None


@dataclass
class SupervisorStatus:
    state: str
    reason: str
    restarts: int
    pid: int | None
    started_at: str | None
    last_heartbeat: str | None


class WorkloadSupervisor:
    """Runs one workload process; `start()` returns at once, `stop()` ends it (whole process tree)."""

    def __init__(
        self,
        workload_id: str,
        launch: LaunchPlan,
        *,
        heartbeat_file: Path,
        heartbeat_interval: float = 1.0,
        on_output: OutputCallback | None = None,
        startup_grace: float = 60.0,
        healthz_url: str | None = None,
        hang_kill_after: float = 0.5,
        stop_timeout: float = 3.0,
        tick: float | None = None,
        degraded_after: int = 5,
    ) -> None:
        self.workload_id = workload_id
        self.degraded_after = max(1, int(degraded_after))  # consecutive failed callbacks that show `degraded`
        self.launch = launch
        self.heartbeat_file = Path(heartbeat_file)
        self.interval = float(heartbeat_interval)
        self.on_output = on_output
        self.startup_grace = startup_grace
        self.healthz_url = healthz_url
        self.hang_kill_after = hang_kill_after
        self.stop_timeout = stop_timeout
        self.tick = tick if tick is not None else max(0.05, min(0.25, self.interval / 4))
        self.state = "pending"
        self.reason = ""
        self.restarts = 0
        self.last_error = ""  # the last exception line the current run printed on stderr
        self.last_exit = ""  # why the previous run ended, e.g. "exited with code 1 (RuntimeError: ...)"
        self._beat_seen: tuple[float | None, int, str] = (None, 0, "")  # heartbeat mtime, failing, last error
        self.consecutive_failures = 0
        self.proc: asyncio.subprocess.Process | None = None
        self.started_at: float | None = None
        self.last_heartbeat: float | None = None
        self.healthy_since: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._spawn_lock = asyncio.Lock()
        self.history: list[tuple[float, str, str]] = []
        """(monotonic time, state, reason) of every state change; tests and the health page read it."""

    # ----------------------------------------------------------------- public

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else None

    def status(self) -> SupervisorStatus:
        return SupervisorStatus(
            state=self.state,
            reason=self.reason,
            restarts=self.restarts,
            pid=self.pid,
            started_at=_iso(self.started_at),
            last_heartbeat=_iso(self.last_heartbeat),
        )

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"supervise-{self.workload_id}")

    async def stop(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - grace period, not a deadline
        """SIGTERM the workload's processes, SIGKILL the whole tree after `timeout` s; state: stopped."""
        grace = self.stop_timeout if timeout is None else timeout
        self._stopping.set()
        async with self._spawn_lock:  # from here on no new process can be spawned; self.proc is the last one
            pass
        if self.proc is not None and self.proc.returncode is None:
            await self._terminate(grace)
        await self._cleanup()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), grace + 10)
            except (TimeoutError, Exception):  # noqa: BLE001 - stopping must finish whatever the task did
                self._task.cancel()
        self._set("stopped", "stopped by the agent")

    # ----------------------------------------------------------------- internals

    def _set(self, state: str, reason: str) -> None:
        recently_restarted = self.healthy_since is None or time.monotonic() - self.healthy_since < HEALTHY_RESET
        if self.last_exit and (state in ("starting", "unhealthy") or (state == "running" and recently_restarted)):
            # why it restarted stays visible until it has run well for as long as the back-off needs to reset: a
            # crash-looping run that heartbeats for a moment must not look like a plain healthy one
            reason = f"{reason} (previous run: {self.last_exit})"
        if (state, reason) != (self.state, self.reason):
            if state != self.state:
                log.info("workload %s: %s -> %s (%s)", self.workload_id, self.state, state, reason)
            self.state, self.reason = state, reason
            self.history.append((time.monotonic(), state, reason))

    async def _sleep_unless_stopping(self, seconds: float) -> bool:
        """Sleep; True when `stop()` was called meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        return self._stopping.is_set()

    async def _run(self) -> None:
        delay = 0.0
        while not self._stopping.is_set():
            if delay and await self._sleep_unless_stopping(delay):
                return
            if self._stopping.is_set():
                return
            try:
                async with self._spawn_lock:
                    if self._stopping.is_set():
                        return
                    await self._spawn()
            except OSError as exc:
                self.consecutive_failures += 1
                delay = max(backoff_delay(self.consecutive_failures), 1.0)
                self._set("failed", f"cannot start {self.launch.argv[0]}: {exc}; retrying in {delay:g}s")
                continue
            why = await self._watch()
            if self._stopping.is_set() or why is None:
                return
            if self.healthy_since is not None and time.monotonic() - self.healthy_since >= HEALTHY_RESET:
                self.consecutive_failures = 0
            self.consecutive_failures += 1
            self.restarts += 1
            delay = backoff_delay(self.consecutive_failures)
            if self.last_error:
                why = f"{why} ({self.last_error})"
            self.last_exit = why
            self._set("restarting", f"{why}; restart {self.restarts}" + (f" in {delay:g}s" if delay else ""))

    async def _spawn(self) -> None:
        self.last_error = ""
        with contextlib.suppress(FileNotFoundError):
            self.heartbeat_file.unlink()  # a stale file from the last run must not count as a heartbeat
        plan = self.launch
        self.proc = await asyncio.create_subprocess_exec(
            *plan.argv,
            cwd=plan.cwd,
            env=plan.env,
            preexec_fn=plan.preexec_fn,
            start_new_session=True,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=LINE_LIMIT,
        )
        self.started_at = time.time()
        self.last_heartbeat = None
        self.healthy_since = None
        self._set("starting", f"started pid {self.proc.pid}; waiting for its first heartbeat")

    def _heartbeat_mtime(self) -> float | None:
        try:
            mtime = self.heartbeat_file.stat().st_mtime
        except OSError:
            return None
        # Written by this run (file was removed before the start; allow coarse mtime granularity).
        return mtime if self.started_at is not None and mtime >= self.started_at - 1.0 else None

    async def _watch(self) -> str | None:
        """Watch the running process until it exits (or hangs and is killed); the reason it ended.

        During `stop()` only the exit is awaited: stop() does the terminating.
        """
        proc = self.proc
        assert proc is not None and self.started_at is not None
        readers = [
            asyncio.create_task(self._pump(proc.stdout, "stdout")),
            asyncio.create_task(self._pump(proc.stderr, "stderr")),
        ]
        waiter = asyncio.create_task(proc.wait())
        http_ok = asyncio.Event()
        probe = asyncio.create_task(self._probe_healthz(http_ok)) if self.healthz_url else None
        if probe is None:
            http_ok.set()
        spawned = time.monotonic()
        try:
            while True:
                done, _ = await asyncio.wait({waiter}, timeout=self.tick)
                if done:
                    return describe_exit(proc.returncode, self.launch.sandboxed)
                if self._stopping.is_set():
                    continue
                hung = self._check_heartbeat(spawned, http_ok.is_set())
                if hung:
                    self._set("unhealthy", f"{hung}; killing pid {proc.pid}")
                    await self._terminate(self.hang_kill_after)
                    return hung
        finally:
            if probe is not None:
                probe.cancel()
            if not self._stopping.is_set():
                if proc.returncode is None:
                    await self._terminate(self.hang_kill_after)
                self._kill_leftovers(proc)
                await self._cleanup()
            _, pending = await asyncio.wait(readers, timeout=1.0)
            for task in pending:
                task.cancel()
            waiter.cancel()

    def _check_heartbeat(self, spawned: float, http_ok: bool) -> str | None:
        """Update state from the heartbeat file; a reason string when the process is hung."""
        mtime = self._heartbeat_mtime()
        now = time.time()
        if mtime is None:
            waited = time.monotonic() - spawned
            if waited > self.startup_grace:
                return f"no heartbeat within {self.startup_grace:g}s of start (hung)"
            return None
        self.last_heartbeat = mtime
        age = now - mtime
        if age > 3 * self.interval:
            return f"no heartbeat for {age:.1f}s (> 3 x {self.interval:g}s): hung"
        if age > 2 * self.interval:
            self._set("unhealthy", f"heartbeat late ({age:.1f}s old)")
        elif not http_ok:
            self._set("starting", f"heartbeating; waiting for {self.healthz_url} to answer")
        else:
            if self.state not in ("running", "degraded"):
                self.healthy_since = self.healthy_since or time.monotonic()
            failing, last_error = self._callback_failures(mtime)
            if failing >= self.degraded_after:
                self._set("degraded", f"{failing} callbacks in a row failed; last: {last_error}")
            else:
                self._set("running", "heartbeats fresh")
        return None

    def _callback_failures(self, mtime: float) -> tuple[int, str]:
        """(consecutive failed callbacks, last error) from the heartbeat file; read once per new beat."""
        if self._beat_seen[0] != mtime:
            failing, last_error = 0, ""
            try:
                doc = json.loads(self.heartbeat_file.read_text(encoding="utf-8")[:4096])
                failing = int(doc.get("failing") or 0) if isinstance(doc, dict) else 0
                last_error = str(doc.get("last_error") or "")[:200] if failing else ""
            except (OSError, ValueError, TypeError, AttributeError):
                pass  # mid-rename or not ours: liveness alone decides, as before
            self._beat_seen = (mtime, failing, last_error)
        return self._beat_seen[1], self._beat_seen[2]

    async def _probe_healthz(self, ok: asyncio.Event) -> None:
        """Poll the model server's /healthz until it answers 200 (only gates starting -> running)."""
        async with httpx.AsyncClient(timeout=1.0) as client:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(self.healthz_url or "")).status_code == 200:
                        ok.set()
                        return
                await asyncio.sleep(0.5)

    async def _pump(self, stream: asyncio.StreamReader | None, name: str) -> None:
        if stream is None:
            return
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # line longer than LINE_LIMIT: deliver it in pieces
                raw = await stream.read(LINE_LIMIT)
            if not raw:
                return
            if name == "stderr":
                summary = error_summary(raw.decode("utf-8", "replace"))
                if summary is not None:
                    self.last_error = summary
            if self.on_output is not None:
                try:
                    self.on_output(self.workload_id, name, raw.decode("utf-8", "replace").rstrip("\r\n"))
                except Exception:  # noqa: BLE001 - a log sink problem must not kill supervision
                    log.exception("output callback failed for %s", self.workload_id)

    # ----------------------------------------------------------------- signals

    def _tree(self, pid: int) -> list[psutil.Process]:
        try:
            root = psutil.Process(pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    async def _terminate(self, grace: float) -> None:
        """SIGTERM the workload's own processes (not bwrap: it would SIGKILL them); SIGKILL after `grace`."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        for p in self._tree(proc.pid):
            with contextlib.suppress(psutil.Error):
                if p.name() != "bwrap":
                    p.send_signal(signal.SIGTERM)
                    p.send_signal(signal.SIGCONT)
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), grace)
        except TimeoutError:
            log.warning(
                "workload %s pid %s did not exit %.1fs after SIGTERM; SIGKILL",
                self.workload_id,
                proc.pid,
                grace,
            )
        self._kill_leftovers(proc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(proc.wait()), 5.0)

    async def _cleanup(self) -> None:
        """The launch plan's own cleanup (a docker container that outlived its launcher); failures logged."""
        if self.launch.cleanup is None:
            return
        try:
            await asyncio.to_thread(self.launch.cleanup)
        except Exception:  # noqa: BLE001 - the next start removes a leftover of the same name anyway
            log.exception("workload %s: cleanup after its process failed", self.workload_id)

    def _kill_leftovers(self, proc: asyncio.subprocess.Process) -> None:
        """SIGKILL whatever of the process tree / group is still alive (no duplicate may survive a restart).

        The tree is walked only while our child is unreaped (its pid cannot be recycled then); the process
        group is safe to signal afterwards too, since Linux never reuses a pid that still names a group.
        """
        if proc.returncode is None:
            for p in self._tree(proc.pid):
                with contextlib.suppress(psutil.Error):
                    p.kill()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
