"""One assigned workload on this node: prepare it (package, env, config.json), then hand it to its supervisor.

Folder of a workload (`<data_dir>/workloads/<workload_id>-g<generation>/`, one per generation so a re-spec
never writes into the files of the process it replaces):

    package/       the unpacked archive (cwd of the process; read-only in the sandbox)
    config.json    the contract's config (0600)
    run/           scratch, writable in the sandbox: heartbeat file, HOME, tmp/
    output.log     stdout/stderr lines written while NATS is unavailable

Preparation failures (bad package, env build error, control plane unreachable for the download) put the
workload in state `failed` with the reason; the agent retries later with back-off.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiot.agent.client import ControlPlaneClient
from aiot.agent.envs import EnvBuilder
from aiot.agent.identity import write_private
from aiot.agent.sandbox import Identity, SandboxSpec, chown_tree, plan, workload_env
from aiot.agent.supervisor import OutputCallback, WorkloadSupervisor
from aiot.agent.uids import UidPool
from aiot.artifacts.requirements import DEFAULT_REQUIREMENTS, RequirementsRefused, parse_requirements
from aiot.artifacts.unpack import DEFAULT_LIMITS, check_entry_name, safe_unpack

if TYPE_CHECKING:
    from aiot.agent.docker_runtime import DockerRuntime

log = logging.getLogger(__name__)

PYTHON_NAMES = {"python", "python3"}
MANIFESTS = {"model": "model.json", "app": "app.json"}
RETRY_FIRST, RETRY_MAX = 2.0, 60.0


class PrepareError(RuntimeError):
    """The workload cannot be prepared as specified (message says what and why)."""


def free_port(host: str) -> int:
    """A free TCP port on `host` (any address when `host` is not local)."""
    for bind_host in (host, ""):
        try:
            with socket.socket() as sock:
                sock.bind((bind_host, 0))
                return int(sock.getsockname()[1])
        except OSError:
            continue
    raise PrepareError(f"cannot find a free TCP port on {host!r}")


def package_requirements(
    package_dir: Path, kind: str, expected: str | None = None, expected_sha256: str | None = None
) -> list[str]:
    """The requirements to install: exactly the file the package's manifest names (the one the upload
    validator checked; the archive's SHA-256, verified at download, pins its bytes), read with the same rule.

    Any other requirements file in the package (a `requirements.txt` beside a manifest naming `reqs.txt`) is
    ignored. `expected` / `expected_sha256` come from the control plane's copy of the manifest (the file name
    and the hash recorded at upload): the file must match both.
    """
    manifest_name = MANIFESTS.get(kind)
    if manifest_name is None:
        raise PrepareError(f"unknown workload kind {kind!r}: expected one of {sorted(MANIFESTS)}")
    try:
        manifest = json.loads((package_dir / manifest_name).read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as exc:
        raise PrepareError(f"package has no readable {manifest_name}: {exc}") from None
    name = manifest.get("requirements", DEFAULT_REQUIREMENTS) if isinstance(manifest, dict) else None
    if not isinstance(name, str) or check_entry_name(name, DEFAULT_LIMITS) is not None:
        raise PrepareError(f"{manifest_name}: 'requirements' must be a relative file name inside the package")
    if expected is not None and expected != name:
        raise PrepareError(f"{manifest_name} names {name!r} but the platform validated {expected!r}")
    path = package_dir / name
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise PrepareError(f"{name}: not a regular file")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if name != DEFAULT_REQUIREMENTS or expected_sha256:
            raise PrepareError(f"{name} (named in {manifest_name}) is not in the package") from None
        return []
    except OSError as exc:
        raise PrepareError(f"{name}: cannot read requirements ({exc})") from None
    if expected_sha256 and hashlib.sha256(raw).hexdigest() != expected_sha256:
        raise PrepareError(f"{name}: its SHA-256 differs from the one recorded when the package was validated")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PrepareError(f"{name}: cannot read requirements ({exc})") from None
    try:
        return parse_requirements(text.splitlines(), name)
    except RequirementsRefused as exc:
        raise PrepareError(str(exc)) from None


@dataclass
class PrepareContext:
    """What preparing needs from the agent."""

    client: ControlPlaneClient
    envs: EnvBuilder
    packages_dir: Path
    workloads_dir: Path
    hidden: tuple[Path, ...]
    use_bwrap: bool | None
    on_output: OutputCallback
    register_log_file: Callable[[str, Path], None]
    nats_servers: list[str] | None = None  # the node's own way to NATS, overriding the control plane's
    uids: UidPool | None = None
    """Per-workload uids (a root-run agent); None: workloads run as the agent's own (non-root) uid."""
    docker: DockerRuntime | None = None
    """Set on a `--runtime docker` node: each workload runs in a container (aiot.agent.docker_runtime)."""


class ManagedWorkload:
    """State of one assignment on this node, before (pending/preparing/failed) and while supervised."""

    def __init__(self, assignment: dict[str, Any], workloads_dir: Path) -> None:
        self.assignment = assignment
        self.workload_id = str(assignment["workload_id"])
        self.generation = int(assignment["generation"])
        self.kind = str(assignment.get("kind", "app"))
        self.dir = workloads_dir / f"{self.workload_id}-g{self.generation}"
        self.state = "pending"
        self.reason = "assigned; waiting to be prepared"
        self.supervisor: WorkloadSupervisor | None = None
        self.task: asyncio.Task[None] | None = None
        self.endpoint: str | None = None
        self.failures = 0
        self.retry_at = 0.0
        self.user: Identity | None = None
        self._uids: UidPool | None = None

    @property
    def pid(self) -> int | None:
        return self.supervisor.pid if self.supervisor else None

    def report(self) -> dict[str, Any]:
        base = {"workload_id": self.workload_id, "generation": self.generation, "endpoint": self.endpoint}
        if self.supervisor is not None:
            st = self.supervisor.status()
            return {
                **base,
                "state": st.state,
                "reason": st.reason,
                "restarts": st.restarts,
                "pid": st.pid,
                "started_at": st.started_at,
                "last_heartbeat": st.last_heartbeat,
            }
        return {
            **base,
            "state": self.state,
            "reason": self.reason,
            "restarts": 0,
            "pid": None,
            "started_at": None,
            "last_heartbeat": None,
        }

    def phase(self) -> tuple[str, str | None]:
        """State and endpoint only (cheap: the agent compares it often to report a change at once)."""
        state = self.supervisor.state if self.supervisor is not None else self.state
        return state, self.endpoint

    @property
    def retry_due(self) -> bool:
        return (
            self.state == "failed"
            and self.supervisor is None
            and (self.task is None or self.task.done())
            and time.monotonic() >= self.retry_at
        )

    def launch(self, ctx: PrepareContext, wait_for: asyncio.Task[Any] | None = None) -> None:
        """Start (or retry) preparation + start in the background."""
        self.task = asyncio.get_running_loop().create_task(
            self._prepare_and_start(ctx, wait_for), name=f"prepare-{self.workload_id}"
        )

    async def _prepare_and_start(self, ctx: PrepareContext, wait_for: asyncio.Task[Any] | None) -> None:
        try:
            if wait_for is not None:
                self.reason = "waiting for the previous generation to stop"
                await asyncio.wait({wait_for})
            supervisor = await self._prepare(ctx)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure is reported as the workload's reason
            self.failures += 1
            delay = min(RETRY_FIRST * 2 ** (self.failures - 1), RETRY_MAX)
            self.retry_at = time.monotonic() + delay
            self.state, self.reason = "failed", f"{exc}"[:400] + f" (retry in {delay:g}s)"
            log.warning("workload %s g%d failed to prepare: %s", self.workload_id, self.generation, exc)
            return
        self.supervisor = supervisor
        supervisor.start()

    async def _prepare(self, ctx: PrepareContext) -> WorkloadSupervisor:
        spec = self.assignment
        package = spec.get("package") or {}
        sha = str(package.get("sha256") or "")
        if len(sha) != 64:
            raise PrepareError("assignment has no package sha256")
        command = list(spec.get("command") or [])
        if not command or command[0] not in PYTHON_NAMES:
            raise PrepareError(f"unsupported command {command!r}: must start with 'python'")

        self.state, self.reason = "preparing", f"downloading package {package.get('name')} {sha[:12]}…"
        archive = await ctx.client.download_package(sha, ctx.packages_dir / f"{sha}.zip")

        self.state, self.reason = "preparing", "unpacking package"
        if self.dir.exists():
            await asyncio.to_thread(shutil.rmtree, self.dir, True)
        run_dir = self.dir / "run"
        (run_dir / "tmp").mkdir(parents=True)
        package_dir = self.dir / "package"
        await asyncio.to_thread(safe_unpack, archive, package_dir)
        ctx.register_log_file(self.workload_id, self.dir / "output.log")

        self.state, self.reason = "preparing", "building the Python environment"
        validated = ((spec.get("config") or {}).get("package") or {}).get("manifest") or {}
        requirements = package_requirements(
            package_dir, self.kind, validated.get("requirements"), validated.get("requirements_sha256")
        )
        python = await ctx.envs.build(requirements)
        venv_dir = python.parent.parent

        config = self._config(package_dir, run_dir, ctx.nats_servers)
        config_path = self.dir / "config.json"
        write_private(config_path, json.dumps(config, indent=2))
        if ctx.uids is not None:
            if self.user is None:
                self.user, self._uids = ctx.uids.acquire(self.workload_id), ctx.uids
            # Its own files (config.json holds its NATS password) become readable by it and by no other uid.
            await asyncio.to_thread(chown_tree, self.dir, self.user.uid, self.user.gid, ("output.log",))
        resources = spec.get("resources") or {}
        sandbox = SandboxSpec(
            argv=[str(python), *command[1:]],
            cwd=package_dir,
            env=workload_env(config_path, venv_dir, run_dir),
            workload_dir=self.dir,
            scratch_dir=run_dir,
            venv_dir=venv_dir,
            hidden=ctx.hidden,
            memory_mb=int(resources.get("memory_mb") or 0) or None,
            user=self.user,
            python=ctx.envs.python,
        )
        heartbeat = config["heartbeat"]
        healthz = None
        if self.kind == "model" and self.endpoint:
            healthz = self.endpoint.replace("://0.0.0.0:", "://127.0.0.1:") + "/healthz"
        if ctx.docker is not None:
            self.state, self.reason = "preparing", "building the container image"
            image = await asyncio.to_thread(ctx.docker.env_image, venv_dir)
            cpus = float(resources.get("cpu") or 0) or None
            container = ctx.docker.container_spec(sandbox, image, self.workload_id, self.generation, cpus)
            launch = ctx.docker.plan(container, self.dir / "container.json")
        else:
            launch = plan(sandbox, use_bwrap=ctx.use_bwrap)
        return WorkloadSupervisor(
            self.workload_id,
            launch,
            heartbeat_file=Path(heartbeat["file"]),
            heartbeat_interval=float(heartbeat.get("interval") or 1.0),
            on_output=ctx.on_output,
            startup_grace=float(heartbeat.get("startup_grace") or 60.0),
            healthz_url=healthz,
            degraded_after=int(heartbeat.get("degraded_after") or 5),
        )

    def _config(self, package_dir: Path, run_dir: Path, nats_servers: list[str] | None = None) -> dict[str, Any]:
        """The server's config body plus this node's paths (and a port when the server left it to us)."""
        config = dict(self.assignment.get("config") or {})
        if nats_servers:
            config["nats"] = {**dict(config.get("nats") or {}), "servers": list(nats_servers)}
        config.setdefault("workload_id", self.workload_id)
        config.setdefault("generation", self.generation)
        config.setdefault("kind", self.kind)
        config["package_dir"] = str(package_dir)
        heartbeat = dict(config.get("heartbeat") or {})
        heartbeat.setdefault("interval", 1.0)
        heartbeat["file"] = str(run_dir / "heartbeat")
        config["heartbeat"] = heartbeat
        if "serve" in config or self.kind == "model":
            serve = dict(config.get("serve") or {})
            host = str(serve.get("host") or "127.0.0.1")
            port = int(serve.get("port") or 0) or free_port(host)
            shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
            serve.update(host=host, port=port, public_url=serve.get("public_url") or f"http://{shown}:{port}")
            config["serve"] = serve
            self.endpoint = serve["public_url"]
        return config

    async def stop(self, timeout: float = 3.0) -> None:  # noqa: ASYNC109 - grace period
        """Cancel preparation or stop the process; then remove the folder (output.log is kept)."""
        if self.task is not None and not self.task.done():
            self.task.cancel()
            await asyncio.wait({self.task})
        if self.supervisor is not None:
            await self.supervisor.stop(timeout)
        self.state, self.reason = "stopped", "no longer assigned to this node"
        await asyncio.to_thread(cleanup_workload_dir, self.dir)
        if self._uids is not None:
            self._uids.release(self.workload_id)
            self._uids, self.user = None, None


def cleanup_workload_dir(path: Path) -> None:
    """Remove a workload folder except its output.log (which may hold the only copy of offline logs)."""
    if not path.is_dir():
        return
    for child in path.iterdir():
        if child.name.startswith("output.log"):
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
