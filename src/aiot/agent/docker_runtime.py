"""The `docker` workload runtime: each workload in its own container, built and run through the Docker SDK.

Chosen per node (`aiot node join --runtime docker`). The workload contract does not change: the same
config.json, heartbeat file, credentials, stdout/stderr and exit status reach the same supervisor
(`WorkloadSupervisor`) as with processes, so restarts, hang detection, logs and node loss behave the same way.

Images, built locally (no registry is ever contacted):
- `aiot-base:<hash>`: a tiny root file system made here (empty /tmp, /etc/passwd and /etc/group for the
  workload uids) imported as an image. It holds no operating system: the node's own `/usr`, `/lib`, `/bin` and
  the Python the environments were built from are bound read-only at run time, exactly what the process
  sandbox shows (and nothing from /root, /home or the platform's data dirs).
- `aiot-env:<env key>`: the base plus one workload environment (the venv `uv` built, with `platform_sdk`) at its
  own path, so a venv's absolute paths hold. Built once per environment key (a content hash of the
  requirements, the SDK and the Python version) and reused by every workload and replica using it.

A container: read-only root file system, the node's network (NATS and the model port are on the host as for
processes), all capabilities dropped, no new privileges, a non-root uid (the workload's own uid on a root-run
agent), memory limit (no swap beyond it) and CPU quota from the manifest, a pids limit; the package and
config.json bound read-only, the run dir (heartbeat, HOME, TMPDIR) read-write and nothing else writable.

The container's process 1 is a small init (`LIFELINE`) run by the environment's Python: it starts the workload,
forwards SIGTERM to it, exits with its status, and kills it at once when its lifeline pipe closes. The write
end of that pipe is held only by the launcher process (`aiot.agent.container_run`) that the supervisor runs
(the FIFO is the agent's and read-only for the workload's uid, so the workload cannot hold it open itself),
so a container can never outlive its launcher: not on a hang kill, not when the agent or the whole node dies
(the kernel closes the pipe with the process). That keeps "never runs twice" true after a node loss.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import signal
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiot.agent.sandbox import LaunchPlan, SandboxSpec, interpreter_root
from aiot.bus.process import pdeathsig_preexec

log = logging.getLogger(__name__)

LABEL_WORKLOAD = "io.aiot.workload"
LABEL_AGENT = "io.aiot.agent"
LABEL_ENV = "io.aiot.env"
"""On an `aiot-env` image: the environment folder it holds (whoever removes images removes only its own)."""
BASE_REPO, ENV_REPO = "aiot-base", "aiot-env"
HOST_RO = ("/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin")
"""The node's system folders a workload sees, read-only: what its Python and its wheels link against."""
HOST_RO_FILES = ("/etc/ld.so.cache", "/etc/localtime", "/etc/nsswitch.conf")
"""(Docker itself provides /etc/hosts and /etc/resolv.conf.)"""
HOST_RO_TREES = ("/etc/ssl/certs", "/usr/share/zoneinfo")
PIDS_LIMIT = 512

LIFELINE = r"""
import os, signal, subprocess, sys, threading
fd, argv = int(sys.argv[1]), sys.argv[2:]
child = subprocess.Popen(argv)
def forward(signum, _frame):
    child.send_signal(signum)
for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(sig, forward)
def watch():
    with open(fd, "rb", buffering=0) as pipe:
        while pipe.read(1):
            pass
    child.kill()
    os._exit(137)
threading.Thread(target=watch, daemon=True).start()
code = child.wait()
sys.exit(128 - code if code < 0 else code)
"""
"""Process 1 of every container (see the module docstring); argv: the lifeline's fd, then the workload."""


class DockerUnavailable(RuntimeError):
    """No Docker engine answers (the message says where it looked and how to start one)."""


def docker_client() -> Any:
    """A Docker SDK client for the engine in DOCKER_HOST (default: the local socket); `DockerUnavailable`."""
    try:
        import docker
    except ImportError:
        raise DockerUnavailable("the docker runtime needs the Docker SDK: pip install 'aiot[docker]'") from None
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - docker raises DockerException, requests errors, OSError
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise DockerUnavailable(
            f"no Docker engine answers at {where} ({type(exc).__name__}: {exc}); install and start one "
            "(apt-get install docker.io; dockerd), or set DOCKER_HOST"
        ) from None
    return client


def remove_container(container: Any) -> None:
    """Remove a container whatever its state. One already gone, or being removed by another party at the same
    moment (its launcher after it stopped, the agent's clean-up, an orphan sweep), is not an error."""
    from docker.errors import APIError, NotFound

    try:
        container.remove(force=True)
    except NotFound:
        return
    except APIError as exc:
        if exc.status_code == 409 and "already in progress" in str(exc):
            return
        raise


def _tar(files: dict[str, tuple[bytes, int]], dirs: dict[str, int]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, mode in sorted(dirs.items()):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
        for name, (data, mode) in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def base_rootfs() -> bytes:
    """The base image's files: empty mount points and account files naming no real user."""
    passwd = (
        b"root:x:0:0:root:/nonexistent:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    )
    group = b"root:x:0:\nnogroup:x:65534:\n"
    return _tar(
        {"etc/passwd": (passwd, 0o644), "etc/group": (group, 0o644)},
        {"etc": 0o755, "tmp": 0o1777, "proc": 0o555, "dev": 0o755, "sys": 0o555},
    )


@dataclass
class ContainerSpec:
    """Everything the launcher needs to create one container (JSON in the workload folder; no secrets)."""

    name: str
    image: str
    argv: list[str]
    cwd: str
    env: dict[str, str]
    user: str
    binds: dict[str, dict[str, str]]
    lifeline_dir: str
    memory_mb: int | None = None
    cpus: float | None = None
    labels: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ContainerSpec:
        return cls(**json.loads(text))


class DockerRuntime:
    """Images and launch plans for one node agent (`agent_id` labels its containers)."""

    def __init__(self, agent_id: str, client: Any | None = None) -> None:
        self.agent_id = agent_id
        self.client = client if client is not None else docker_client()
        self._base: str | None = None

    # ------------------------------------------------------------------ images

    def base_image(self) -> str:
        """`aiot-base:<hash of its files>`, imported once per engine."""
        if self._base is None:
            data = base_rootfs()
            tag = f"{BASE_REPO}:{hashlib.sha256(data).hexdigest()[:16]}"
            if not self._has(tag):
                self.client.images.build(
                    fileobj=_context("FROM scratch\nADD rootfs.tar /\n", {"rootfs.tar": data}),
                    custom_context=True,
                    tag=tag,
                    rm=True,
                    labels={LABEL_AGENT: "base"},
                )
            self._base = tag
        return self._base

    def env_image(self, venv_dir: Path) -> str:
        """`aiot-env:<env key>`: the base plus the environment at `venv_dir` (its folder name is its key)."""
        base = self.base_image()
        key = hashlib.sha256(f"{base}\n{venv_dir}".encode()).hexdigest()[:24]
        tag = f"{ENV_REPO}:{key}"
        if self._has(tag):
            return tag
        log.info("building image %s from %s", tag, venv_dir)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            dockerfile = f"FROM {base}\nCOPY env {venv_dir}\n".encode()
            info = tarfile.TarInfo("Dockerfile")
            info.size = len(dockerfile)
            tar.addfile(info, io.BytesIO(dockerfile))
            tar.add(str(venv_dir), arcname="env", filter=_readable)
        buf.seek(0)
        labels = {LABEL_AGENT: "env", LABEL_ENV: str(venv_dir)}
        self.client.images.build(fileobj=buf, custom_context=True, tag=tag, rm=True, labels=labels)
        return tag

    def _has(self, tag: str) -> bool:
        from docker.errors import ImageNotFound

        try:
            self.client.images.get(tag)
        except ImageNotFound:
            return False
        return True

    # ------------------------------------------------------------------ containers

    def container_spec(
        self, spec: SandboxSpec, image: str, workload_id: str, generation: int, cpus: float | None
    ) -> ContainerSpec:
        binds: dict[str, dict[str, str]] = {}
        for path in (*HOST_RO, *HOST_RO_FILES, *HOST_RO_TREES, str(interpreter_root(spec.interpreter))):
            if os.path.exists(path):
                binds[os.path.realpath(path)] = {"bind": path, "mode": "ro"}
        if spec.workload_dir is not None:
            binds[str(spec.workload_dir)] = {"bind": str(spec.workload_dir), "mode": "ro"}
        binds[str(spec.scratch_dir)] = {"bind": str(spec.scratch_dir), "mode": "rw"}
        if spec.user is None and os.getuid() == 0:
            raise RuntimeError("a root-run agent gives every workload its own uid; no container runs as root")
        user = f"{spec.user.uid}:{spec.user.gid}" if spec.user is not None else f"{os.getuid()}:{os.getgid()}"
        return ContainerSpec(
            name=f"aiot-{self.agent_id}-{workload_id}-g{generation}".replace("_", "-"),
            image=image,
            argv=list(spec.argv),
            cwd=str(spec.cwd),
            env=dict(spec.env),
            user=user,
            binds=binds,
            lifeline_dir=str(spec.scratch_dir),
            memory_mb=spec.memory_mb,
            cpus=cpus,
            labels={LABEL_WORKLOAD: workload_id, LABEL_AGENT: self.agent_id},
        )

    def plan(self, container: ContainerSpec, spec_path: Path) -> LaunchPlan:
        """Run the launcher (the agent's own Python) on the spec file; `cleanup` removes the container."""
        spec_path.write_text(container.to_json(), encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if k in ("DOCKER_HOST", "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY")}
        env.update(PATH="/usr/local/bin:/usr/bin:/bin", LANG="C.UTF-8", PYTHONUNBUFFERED="1")
        name = container.name

        def cleanup() -> None:
            self.remove(name)

        return LaunchPlan(
            argv=[sys.executable, "-m", "aiot.agent.container_run", str(spec_path)],
            cwd=spec_path.parent,
            env=env,
            preexec_fn=pdeathsig_preexec(signal.SIGKILL),  # the agent gone: the launcher, then the container
            sandboxed=True,
            cleanup=cleanup,
        )

    def remove(self, name: str) -> None:
        from docker.errors import NotFound

        with contextlib.suppress(NotFound):
            remove_container(self.client.containers.get(name))

    def remove_env_images(self, under: Path) -> list[str]:
        """Remove the images of environments inside `under` (a temporary dir whose environments are gone)."""
        from docker.errors import ImageNotFound

        removed = []
        for image in self.client.images.list(filters={"label": LABEL_ENV}):
            if Path(image.labels.get(LABEL_ENV, "/")).is_relative_to(under):
                with contextlib.suppress(ImageNotFound):  # removed by another party meanwhile
                    self.client.images.remove(image.id, force=True)
                removed.append(image.id)
        return removed

    def remove_orphans(self, keep: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
        """Remove this agent's containers not named in `keep` (left by a killed agent); their names."""
        removed = []
        for found in self.client.containers.list(all=True, filters={"label": f"{LABEL_AGENT}={self.agent_id}"}):
            if found.name not in keep:
                remove_container(found)
                removed.append(found.name)
        return removed


def _readable(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """Files of the environment go into the image readable by any uid (workload uids differ per workload)."""
    info.mode |= 0o555 if info.isdir() or info.mode & 0o111 else 0o444
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _context(dockerfile: str, files: dict[str, bytes]) -> io.BytesIO:
    buf = io.BytesIO(
        _tar({"Dockerfile": (dockerfile.encode(), 0o644), **{k: (v, 0o644) for k, v in files.items()}}, {})
    )
    return buf
