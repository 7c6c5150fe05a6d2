"""Heartbeats: the local file that decides restarts, the published beat, and what "alive" means.

The agent restarts a workload whose heartbeat file is older than 3 intervals while its process still runs.
A free-running heartbeat thread would keep beating while the app itself is stuck, so beats here are *earned*:

* **Apps using `run()`** (the usual case): the run loop in the app's thread checks in at least twice per
  interval while idle and around every callback. The pacemaker (on the SDK's I/O thread) beats only while
  that thread checked in within `hang_after` seconds (default 5 intervals) or is blocked inside an SDK call
  (`model_call`, `send`, `read`, ...), which is bounded by that call's own timeout. A callback that loops or
  sleeps for longer than `hang_after` without touching the SDK is *hung*: beats stop and the agent restarts
  the app. Long computations may call `platform_sdk.heartbeat()` to say "still working".
* **Apps not using `run()`** (their own loop): every SDK call from any thread is a check-in, so a loop that
  calls the SDK (or `heartbeat()`) at least every `hang_after` seconds stays alive. A web app whose server
  blocks the main thread (e.g. `uvicorn.run`) is alive while its own port answers HTTP (any status).
* **Start-up**: before the app reaches `run()` (imports, loading data) beats continue for at most
  `startup_grace` seconds (default 60), so a hang during start-up is still detected.
* **Model servers** (`platform_sdk.serving`): beats come from a task on the HTTP server's own event loop, so a
  blocked event loop stops them; they also stop while a predict call has run longer than `serve.hang_after`.

A NATS outage never stops the file beats (only the informational publish is skipped), so network trouble
cannot cause a restart.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime


class CallbackHealth:
    """Consecutive failed callbacks and the last error's one-line summary, carried in every heartbeat.

    A callback that fails on every reading leaves the process alive and beating, so the agent cannot tell from
    liveness alone; with this it shows the workload `degraded` and why ("ModelUnavailable: ..."), never a raw
    traceback (that goes to the app's log for its developer). One success clears it."""

    def __init__(self) -> None:
        self.failing = 0
        self.last_error = ""

    def succeeded(self) -> None:
        self.failing = 0

    def failed(self, exc: BaseException) -> None:
        self.failing += 1
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        self.last_error = f"{type(exc).__name__}: {message}"[:200] if message else type(exc).__name__


class HeartbeatWriter:
    """Rewrites the heartbeat file atomically (temp + rename) and hands the beat to `publish`."""

    def __init__(
        self,
        workload_id: str,
        path: str | None,
        publish: Callable[[bytes], None] | None,
        health: CallbackHealth | None = None,
    ) -> None:
        self.workload_id = workload_id
        self.path = path
        self.publish = publish
        self.health = health
        self.seq = 0
        self.last_beat = 0.0
        self._lock = threading.Lock()
        self._tmp = f"{path}.{os.getpid()}.tmp" if path else None

    def beat(self) -> int:
        with self._lock:
            self.seq += 1
            seq = self.seq
            ts = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            if self.path and self._tmp:
                try:
                    doc: dict[str, object] = {"seq": seq, "ts": ts, "pid": os.getpid()}
                    if self.health is not None and self.health.failing:
                        doc.update(failing=self.health.failing, last_error=self.health.last_error)
                    with open(self._tmp, "w", encoding="utf-8") as fh:
                        fh.write(json.dumps(doc) + "\n")
                    os.replace(self._tmp, self.path)
                except OSError as exc:  # a full disk must not kill the app; the agent will see the stale file
                    print(f"platform_sdk: cannot write heartbeat file {self.path}: {exc}", flush=True)
            self.last_beat = time.monotonic()
        if self.publish is not None:
            self.publish(json.dumps({"workload_id": self.workload_id, "ts": ts, "seq": seq}).encode())
        return seq


class Liveness:
    """Evidence that the app's own code still makes progress (see the module docstring)."""

    def __init__(self, hang_after: float, startup_grace: float) -> None:
        self.hang_after = hang_after
        self.startup_grace = startup_grace
        self.started = time.monotonic()
        self.run_thread: int | None = None
        self.last: dict[int, float] = {}
        self.waits: dict[int, float] = {}
        self.last_probe_ok = float("-inf")
        self.probe_enabled = False

    def checkin(self) -> None:
        self.last[threading.get_ident()] = time.monotonic()

    @contextmanager
    def waiting(self, timeout: float) -> Iterator[None]:
        """The calling thread blocks on the SDK for at most `timeout` s: that is progress, not a hang."""
        ident = threading.get_ident()
        now = time.monotonic()
        self.last[ident] = now
        self.waits[ident] = now + timeout + 1.0
        try:
            yield
        finally:
            self.waits.pop(ident, None)
            self.last[ident] = time.monotonic()

    def _recent(self, ident: int, now: float) -> bool:
        return now - self.last.get(ident, float("-inf")) < self.hang_after or self.waits.get(ident, 0.0) > now

    def alive(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        if self.run_thread is not None:
            return self._recent(self.run_thread, now)
        if self.probe_enabled and now - self.last_probe_ok < self.hang_after:
            return True
        if now - self.started < self.startup_grace:
            return True
        return any(self._recent(ident, now) for ident in list(self.last))
