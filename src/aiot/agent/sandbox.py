"""How a workload process is launched: bubblewrap sandbox where available, rlimits, parent-death signal.

Sandbox (bwrap): the whole file system is visible read-only, except that

- `/tmp` and every *hidden* path (the agent's data dir, the platform's data dir: databases, NATS store,
  secrets, other workloads' folders, the shared env cache) are covered by empty tmpfs mounts;
- then this workload's own folder and its venv are bound back read-only at their real paths (so every path
  in config.json means the same inside and outside), and its scratch folder read-write.

Mount order matters: the tmpfs mounts come first, the binds after, so the binds re-appear inside the hidden
trees. The network is shared (model servers listen on ports); PID, IPC namespaces are private, `/proc` shows
only the sandbox's processes. When the agent runs as root every capability is dropped (`--cap-drop ALL`),
otherwise root inside could simply unmount the tmpfs covers.

`--die-with-parent` kills the sandbox when bwrap dies; bwrap itself gets PR_SET_PDEATHSIG from us, so the
chain "agent dies -> bwrap dies -> workload dies" holds even on SIGKILL (see `aiot.bus.process` for the
thread caveat: spawn from the event-loop thread). Note that bwrap does not forward SIGTERM: a graceful stop
must signal the processes inside (the supervisor does), signalling bwrap kills them outright.

Without bwrap the workload is a plain process (new session, same limits), and the agent logs a warning once.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiot.bus.process import pdeathsig_preexec

MIB = 1024 * 1024
MIN_ADDRESS_SPACE = 2 * 1024 * MIB
NOFILE = 4096
NPROC = 4096


@dataclass(frozen=True)
class SandboxSpec:
    """What to run and what it may see. All paths absolute."""

    argv: list[str]
    """Program and arguments; argv[0] is an absolute path (the venv's python)."""
    cwd: Path
    env: dict[str, str]
    workload_dir: Path
    """Visible read-only (package, config.json)."""
    scratch_dir: Path
    """Visible read-write (heartbeat file, TMPDIR, HOME)."""
    venv_dir: Path
    """Visible read-only."""
    hidden: tuple[Path, ...] = ()
    """Covered by empty tmpfs mounts (the agent's and the platform's data dirs)."""
    memory_mb: int | None = None


@dataclass
class LaunchPlan:
    """Arguments for `asyncio.create_subprocess_exec` (argv, cwd, env, preexec_fn, start_new_session)."""

    argv: list[str]
    cwd: Path
    env: dict[str, str]
    preexec_fn: Callable[[], None] | None
    sandboxed: bool
    limits: dict[str, int] = field(default_factory=dict)


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def address_space_limit(memory_mb: int | None) -> int:
    """RLIMIT_AS in bytes: 4 x the asked memory, at least 2 GiB (virtual size overshoots RSS a lot)."""
    asked = int(memory_mb or 0) * 4 * MIB
    return max(asked, MIN_ADDRESS_SPACE)


def child_limits(memory_mb: int | None) -> dict[str, int]:
    """The rlimits (name -> value) applied to a workload."""
    limits = {"RLIMIT_AS": address_space_limit(memory_mb), "RLIMIT_NOFILE": NOFILE, "RLIMIT_CORE": 0}
    if os.geteuid() != 0:  # root ignores RLIMIT_NPROC anyway; for others it counts all the user's processes
        limits["RLIMIT_NPROC"] = NPROC
    return limits


def make_preexec(limits: dict[str, int], deathsig: int = signal.SIGKILL) -> Callable[[], None]:
    """A preexec_fn: parent-death signal, then the rlimits (each capped by the current hard limit)."""
    deathsig_fn = pdeathsig_preexec(deathsig)
    resolved = [(getattr(resource, name), value) for name, value in limits.items()]
    is_root = os.geteuid() == 0

    def _preexec() -> None:
        if deathsig_fn is not None:
            deathsig_fn()
        for which, value in resolved:
            soft, hard = resource.getrlimit(which)
            if not is_root and hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            resource.setrlimit(which, (value, value))

    return _preexec


def bwrap_args(spec: SandboxSpec, bwrap: str) -> list[str]:
    """The bwrap command line for `spec` (see the module docstring for the mount order)."""
    args = [
        bwrap,
        "--die-with-parent",
        "--unshare-pid",
        "--unshare-ipc",
        "--new-session",
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        "--tmpfs",
        "/tmp",
    ]
    for path in sorted({Path(p) for p in spec.hidden}, key=lambda p: len(p.parts)):
        if path.exists() and path != Path("/"):
            args += ["--tmpfs", str(path)]
    args += [
        "--ro-bind",
        str(spec.venv_dir),
        str(spec.venv_dir),
        "--ro-bind",
        str(spec.workload_dir),
        str(spec.workload_dir),
        "--bind",
        str(spec.scratch_dir),
        str(spec.scratch_dir),
        "--chdir",
        str(spec.cwd),
    ]
    if os.geteuid() == 0:
        args += ["--cap-drop", "ALL"]
    return [*args, "--", *spec.argv]


def plan(spec: SandboxSpec, *, use_bwrap: bool | None = None) -> LaunchPlan:
    """How to start `spec`: under bwrap when `use_bwrap` (None = when installed), else as a plain process."""
    limits = child_limits(spec.memory_mb)
    bwrap = bwrap_path() if use_bwrap is not False else None
    if use_bwrap and bwrap is None:
        raise RuntimeError("bwrap was requested but is not installed (apt-get install bubblewrap)")
    argv = bwrap_args(spec, bwrap) if bwrap else list(spec.argv)
    return LaunchPlan(
        argv=argv,
        cwd=spec.cwd,
        env=dict(spec.env),
        preexec_fn=make_preexec(limits),
        sandboxed=bwrap is not None,
        limits=limits,
    )


def workload_env(config_path: Path, venv_dir: Path, scratch_dir: Path) -> dict[str, str]:
    """The workload's whole environment: the contract's two variables plus what a process needs to work.

    Nothing is copied from the agent's environment (no tokens, no AIOT_* settings leak in).
    """
    tmp = scratch_dir / "tmp"
    return {
        "AIOT_WORKLOAD_CONFIG": str(config_path),
        "PYTHONUNBUFFERED": "1",
        "PATH": f"{venv_dir / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(scratch_dir),
        "TMPDIR": str(tmp),
        "LANG": "C.UTF-8",
        "VIRTUAL_ENV": str(venv_dir),
    }
