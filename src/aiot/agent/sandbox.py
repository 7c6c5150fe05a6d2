"""How a workload (or an environment build) is launched: bubblewrap sandbox, an unprivileged uid, rlimits,
parent-death signal.

Sandbox (bwrap): the whole file system is visible read-only, except that

- `/tmp`, every *hidden* path (the agent's data dir, the platform's data dir: databases, NATS store, secrets,
  other workloads' folders, the shared env cache) and the host's homes (`/root`, `/home`) are covered by empty
  tmpfs mounts, and the host's secret files (`/etc/shadow`, `/etc/gshadow`, ssh host keys) by an unreadable
  device node;
- then what the process needs is bound back at its real path (so every path in config.json means the same
  inside and outside): its workload folder and venv read-only, its scratch folder read-write, and the Python
  interpreter the venv points at when it lives under a covered folder (pyenv installs under `/root`). The
  folders between a cover and a bind are created 0755 so an unprivileged uid can walk to the bind.

Mount order matters: the tmpfs mounts come first, the binds after, so the binds re-appear inside the hidden
trees. The network is shared (model servers listen on ports; builds download wheels); PID, IPC namespaces are
private, `/proc` shows only the sandbox's processes.

Never root: when the agent runs as root, bwrap itself runs as root (it needs the real root to bind folders
that only root may walk, such as a 0700 data dir) with every capability dropped except SETUID/SETGID/SETPCAP,
and the first thing run inside is a tiny Python step (`DROP_PRIVILEGES`) that empties the capability bounding
set, sets the real, effective and saved uid/gid to the workload's *unprivileged* uid (no supplementary
groups), sets no_new_privs (setuid binaries and file capabilities grant nothing) and execs the program. So the
kernel sees a non-zero uid with no capabilities, which cannot unmount the covers (even inside a user namespace
of its own the kernel keeps those mounts locked). A user namespace mapping root to another uid inside would
not do: the process would still be real root outside. When the agent is not root, bwrap runs unprivileged
(user namespace) and the workload runs as the agent's uid, as before.

`--die-with-parent` kills the sandbox when bwrap dies; bwrap itself gets PR_SET_PDEATHSIG from us, so the
chain "agent dies -> bwrap dies -> workload dies" holds even on SIGKILL (see `aiot.bus.process` for the
thread caveat: spawn from the event-loop thread). Note that bwrap does not forward SIGTERM: a graceful stop
must signal the processes inside (the supervisor does), signalling bwrap kills them outright.

Without bwrap the workload is a plain process (new session, same limits, still switched to its uid when the
agent is root); the agent only does that when an admin allowed it (`allow_unsandboxed`).
"""

from __future__ import annotations

import glob
import os
import resource
import shutil
import signal
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from aiot.bus.process import pdeathsig_preexec

MIB = 1024 * 1024
MIN_ADDRESS_SPACE = 2 * 1024 * MIB
NOFILE = 4096
NPROC = 4096

HOST_PRIVATE_DIRS: tuple[Path, ...] = (Path("/root"), Path("/home"))
"""Covered by tmpfs in every sandbox: other accounts' files, ssh keys, shell histories, cloud credentials."""
HOST_SECRET_FILES: tuple[str, ...] = (
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/ssh/ssh_host_*_key",
)
"""Files (globs) covered by a device node: bwrap mounts nodev, so opening one fails even for its owner."""

DROP_PRIVILEGES = (
    "import ctypes,os,sys\n"
    "libc=ctypes.CDLL(None,use_errno=True)\n"
    "for cap in range(64): libc.prctl(24,cap,0,0,0)\n"  # PR_CAPBSET_DROP: no capability can come back
    "uid,gid=int(sys.argv[1]),int(sys.argv[2])\n"
    "os.setgroups([]); os.setresgid(gid,gid,gid); os.setresuid(uid,uid,uid)\n"
    "if libc.prctl(38,1,0,0,0)!=0 or os.getresuid()!=(uid,uid,uid): os._exit(125)\n"  # PR_SET_NO_NEW_PRIVS
    "os.umask(0o22); os.chdir(sys.argv[3])\n"
    "os.execv(sys.argv[4],sys.argv[4:])\n"
)
"""Run inside the sandbox by the trusted base interpreter (`-I -S`) when the agent is root: see module doc."""
KEEP_CAPS = ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP")


@dataclass(frozen=True)
class Identity:
    """The unprivileged uid/gid a workload or a build runs as (never 0)."""

    uid: int
    gid: int

    def __post_init__(self) -> None:
        if self.uid <= 0 or self.gid <= 0:
            raise ValueError(f"a sandboxed process must not run as uid/gid 0 (got {self.uid}/{self.gid})")


@dataclass(frozen=True)
class SandboxSpec:
    """What to run and what it may see. All paths absolute."""

    argv: list[str]
    """Program and arguments; argv[0] is an absolute path (the venv's python, or uv for a build)."""
    cwd: Path
    env: dict[str, str]
    workload_dir: Path | None
    """Visible read-only (package, config.json)."""
    scratch_dir: Path
    """Visible read-write (heartbeat file, TMPDIR, HOME; the build folder of a build)."""
    venv_dir: Path | None
    """Visible read-only, and the interpreter it points at."""
    hidden: tuple[Path, ...] = ()
    """Covered by empty tmpfs mounts (the agent's and the platform's data dirs), besides `HOST_PRIVATE_DIRS`."""
    memory_mb: int | None = None
    user: Identity | None = None
    """Run as this uid/gid; only possible (and then required) when the agent is root."""
    extra_ro: tuple[Path, ...] = ()
    """More paths bound read-only (a build's uv binary and Python)."""
    extra_rw: tuple[Path, ...] = ()
    """More paths bound read-write (a build's uv cache)."""
    python: str | None = None
    """The base interpreter venvs are built from (default `trusted_python()`): bound read-only, and it runs
    `DROP_PRIVILEGES` (never the venv's own `bin/python`: a build may have replaced that file)."""

    @property
    def interpreter(self) -> str:
        return os.path.realpath(self.python) if self.python else trusted_python()

    def binds(self) -> list[tuple[str, Path]]:
        """(bwrap bind option, path) in mount order."""
        ro = [*([self.venv_dir] if self.venv_dir else []), interpreter_root(self.interpreter), *self.extra_ro]
        out = [("--ro-bind", Path(p)) for p in ro]
        if self.workload_dir is not None:
            out.append(("--ro-bind", self.workload_dir))
        out += [("--bind", self.scratch_dir), *(("--bind", Path(p)) for p in self.extra_rw)]
        seen: set[Path] = set()
        unique = []
        for opt, path in out:
            if path not in seen and path.exists():
                seen.add(path)
                unique.append((opt, path))
        return unique


@dataclass
class LaunchPlan:
    """Arguments for `asyncio.create_subprocess_exec` (argv, cwd, env, preexec_fn, start_new_session)."""

    argv: list[str]
    cwd: Path
    env: dict[str, str]
    preexec_fn: Callable[[], None] | None
    sandboxed: bool
    limits: dict[str, int] = field(default_factory=dict)
    user: Identity | None = None
    cleanup: Callable[[], None] | None = None
    """Run (in a thread) after every run of the process: what outlives it must go (a docker container)."""


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def trusted_python() -> str:
    """The agent's own base interpreter (resolved): every environment is built from it, and it runs
    `DROP_PRIVILEGES` as root inside the sandbox, so it must never be a file a build could have written."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


def interpreter_root(python: str) -> Path:
    """Install prefix of `python` (resolved): bound read-only into sandboxes, since venvs point at it and it
    may live under a covered folder (pyenv installs under `/root`)."""
    return Path(os.path.realpath(python)).parent.parent


def world_reachable(path: str) -> bool:
    """True when any uid may run `path`: every folder on the way is o+x and the file o+rx."""
    target = Path(os.path.realpath(path))
    try:
        if target.stat().st_mode & 0o005 != 0o005:
            return False
        return all(parent.stat().st_mode & 0o001 for parent in target.parents)
    except OSError:
        return False


def address_space_limit(memory_mb: int | None) -> int:
    """RLIMIT_AS in bytes: 4 x the asked memory, at least 2 GiB (virtual size overshoots RSS a lot)."""
    asked = int(memory_mb or 0) * 4 * MIB
    return max(asked, MIN_ADDRESS_SPACE)


def child_limits(memory_mb: int | None, user: Identity | None = None) -> dict[str, int]:
    """The rlimits (name -> value) applied to a workload."""
    limits = {"RLIMIT_AS": address_space_limit(memory_mb), "RLIMIT_NOFILE": NOFILE, "RLIMIT_CORE": 0}
    if os.geteuid() != 0 or user is not None:  # counts all processes of the (workload's own) uid
        limits["RLIMIT_NPROC"] = NPROC
    return limits


def make_preexec(
    limits: dict[str, int], deathsig: int = signal.SIGKILL, user: Identity | None = None
) -> Callable[[], None]:
    """A preexec_fn: the rlimits (each capped by the current hard limit), the uid switch of a plain process
    (`user`; a sandboxed one switches inside bwrap instead), then the parent-death signal (after the switch:
    the kernel clears it when the uid changes)."""
    deathsig_fn = pdeathsig_preexec(deathsig)
    resolved = [(getattr(resource, name), value) for name, value in limits.items()]
    is_root = os.geteuid() == 0

    def _preexec() -> None:
        os.umask(0o22)
        for which, value in resolved:
            soft, hard = resource.getrlimit(which)
            if not is_root and hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            resource.setrlimit(which, (value, value))
        if user is not None:
            os.setgroups([])
            os.setresgid(user.gid, user.gid, user.gid)
            os.setresuid(user.uid, user.uid, user.uid)
        if deathsig_fn is not None:
            deathsig_fn()

    return _preexec


def _secret_files() -> list[str]:
    out: list[str] = []
    for pattern in HOST_SECRET_FILES:
        out += sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
    return out


def _covering(path: Path, mounts: list[tuple[str, Path]]) -> tuple[str, Path] | None:
    """The last-mounted (kind, mount point) that contains `path` (mounts later in the list shadow earlier)."""
    for kind, point in reversed(mounts):
        if path == point or point in path.parents:
            return kind, point
    return None


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
    mounts: list[tuple[str, Path]] = [("tmpfs", Path("/tmp"))]
    covers = {Path(p) for p in spec.hidden} | set(HOST_PRIVATE_DIRS)
    for path in sorted(covers, key=lambda p: len(p.parts)):
        if path.exists() and path != Path("/") and _covering(path, mounts) is None:  # else already hidden
            args += ["--tmpfs", str(path)]
            mounts.append(("tmpfs", path))
    for secret in _secret_files():
        args += ["--ro-bind", "/dev/null", secret]
    made: set[Path] = set()
    for option, path in spec.binds():
        # The folders between a tmpfs cover and the bind: bwrap's implicit ones are 0700 (root's, unwalkable
        # for the workload's uid); an explicit --dir is 0755 (without --perms, which bwrap < 0.5 lacks).
        for parent in reversed(path.parents):
            cover = _covering(parent, mounts)
            if cover and cover[0] == "tmpfs" and parent != cover[1] and parent not in made:
                args += ["--dir", str(parent)]
                made.add(parent)
        args += [option, str(path), str(path)]
        mounts.append(("bind", path))
    argv = list(spec.argv)
    if spec.user is not None:
        # Root without CAP_DAC_OVERRIDE cannot enter the user's 0700 folders: the helper changes directory
        # once it is that user.
        caps = [a for cap in KEEP_CAPS for a in ("--cap-add", cap)]
        args += ["--chdir", "/", "--cap-drop", "ALL", *caps]
        user = [str(spec.user.uid), str(spec.user.gid), str(spec.cwd)]
        argv = [spec.interpreter, "-I", "-S", "-c", DROP_PRIVILEGES, *user, *argv]
    else:
        args += ["--chdir", str(spec.cwd)]
        if os.geteuid() == 0:
            args += ["--cap-drop", "ALL"]
    return [*args, "--", *argv]


def plan(spec: SandboxSpec, *, use_bwrap: bool | None = None) -> LaunchPlan:
    """How to start `spec`: under bwrap when `use_bwrap` (None = when installed), else as a plain process."""
    if spec.user is not None and os.geteuid() != 0:
        raise RuntimeError("switching a workload to its own uid needs a root-run agent; leave `user` unset")
    limits = child_limits(spec.memory_mb, spec.user)
    bwrap = bwrap_path() if use_bwrap is not False else None
    if use_bwrap and bwrap is None:
        raise RuntimeError("bwrap was requested but is not installed (apt-get install bubblewrap)")
    if not bwrap and spec.user is not None and not world_reachable(spec.interpreter):
        raise RuntimeError(
            f"the interpreter {spec.interpreter} is not readable by workload uids (a folder on its path is "
            "private): without bwrap, install Python where every user can run it"
        )
    argv = bwrap_args(spec, bwrap) if bwrap else list(spec.argv)
    return LaunchPlan(
        argv=argv,
        cwd=spec.cwd,
        env=dict(spec.env),
        preexec_fn=make_preexec(limits, user=None if bwrap else spec.user),
        sandboxed=bwrap is not None,
        limits=limits,
        user=spec.user,
    )


def chown_tree(root: Path, uid: int, gid: int, skip: Iterable[str] = ()) -> None:
    """Give `root` and everything below it to uid/gid (symlinks themselves, never their targets)."""
    skipped = set(skip)
    os.lchown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            if name in skipped:
                continue
            os.lchown(os.path.join(dirpath, name), uid, gid)


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
