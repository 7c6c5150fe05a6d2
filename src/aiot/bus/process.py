"""Child-process plumbing for the embedded nats-server: parent-death signal, orphan detection, termination.

Why PR_SET_PDEATHSIG: the embedded nats-server must never outlive the platform process. A normal shutdown
calls `EmbeddedNats.stop()`, but a SIGKILL (OOM killer, `kill -9`, a crashed test runner) runs no Python code
at all, so no atexit hook or finally block can stop the child. Linux's `prctl(PR_SET_PDEATHSIG, sig)`, set in
the child between fork and exec, makes the kernel send `sig` to the child when its parent dies, whatever the
cause. SIGTERM is used so nats-server shuts JetStream down cleanly.

Caveat: the signal fires when the *thread* that forked the child exits, not the process. So the server must
be spawned from a long-lived thread (the asyncio event loop thread), never from a short-lived worker thread
such as `asyncio.to_thread`.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def pdeathsig_preexec(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A `preexec_fn` that asks the kernel to send `sig` to the child when this thread dies (Linux only).

    Returns None on other systems (no equivalent; the pid file then lets the next start clean up an orphan).
    """
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    parent_pid = os.getpid()

    def _preexec() -> None:
        # Runs in the forked child before exec: keep it to async-signal-safe calls.
        if libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
            os._exit(111)
        # The parent may have died between fork() and prctl(); then nobody would ever signal us.
        if os.getppid() != parent_pid:
            os._exit(112)

    return _preexec


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def find_orphan(pid_file: Path, config_file: Path) -> psutil.Process | None:
    """The still-running nats-server named by `pid_file` that was started with `config_file`, if any.

    Both the executable name and the config path in its command line must match, so a recycled pid that now
    belongs to an unrelated process is never touched.
    """
    pid = read_pid(pid_file)
    if pid is None:
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        cmdline = proc.cmdline()
        name = proc.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    if "nats-server" not in name and not (cmdline and cmdline[0].endswith("nats-server")):
        return None
    if str(config_file) not in cmdline:
        return None
    return proc


def terminate(proc: psutil.Process, timeout: float = 10.0) -> None:
    """SIGTERM, wait up to `timeout` s, then SIGKILL. Works for any process (not only our own children)."""
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.terminate()
        try:
            proc.wait(timeout)
            return
        except psutil.TimeoutExpired:
            log.warning("nats-server pid %s ignored SIGTERM for %.0fs; sending SIGKILL", proc.pid, timeout)
        proc.kill()
        proc.wait(5)


def wait_gone(pid: int, timeout: float) -> bool:
    """True once `pid` no longer runs (or is a zombie), polling until `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False
