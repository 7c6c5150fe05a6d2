"""Workload virtual environments: built by `uv`, cached by content hash, shared, with `platform_sdk` injected.

Why a cache keyed by content: ten replicas of one model (or two apps with the same requirements) must not
build ten environments, and a restarted agent must find yesterday's environment ready. The key is the sha256
of the normalised requirements (the package's plus the SDK's own), the Python version and interpreter, and
the SDK's files, so changing any of them gives a fresh environment and nothing stale is ever reused.

Why temp dir + rename: a build killed halfway (agent SIGKILLed, disk full) must never leave something that
looks like a finished environment. Each build happens in `build/.build-<key>-*` and is renamed onto
`envs/<key>` only when complete (`uv venv --relocatable` keeps it valid after the move); leftovers of killed
builds are removed by the next build of that key.

Why two locks: an `asyncio.Lock` per key makes concurrent `build()` calls in one agent wait for one build;
an `fcntl.flock` on `locks/<key>.lock` does the same across processes (several agents on one machine may
share the cache directory).

The uv download/wheel cache lives at `<cache_dir>/build/uv-cache` (`UV_CACHE_DIR`), so warm builds use our own
cache and hard-link from it (same file system, and the same bind mount in the sandbox: link() fails across
mounts). That is safe only because no package code ever runs while the cache is writable: `uv pip install
--no-build` installs wheels without running them, and the import check (which runs the env's `.pth` files)
sees the env read-only and no cache. When source builds are allowed, package code does run during the install:
those builds use a cache of their own (`build-src/`), copy from it (`UV_LINK_MODE=copy`) and hand the finished
environment to root, so that code can change neither an existing environment nor the shared cache.

Why builds are sandboxed like workloads: installing runs package code (a source distribution's `setup.py`, a
wheel's `.pth` at the import check). Every step runs under `aiot.agent.sandbox` with the agent's data dirs and
the whole env cache covered, only this build's folder and the uv cache writable, an environment of its own (no
`AIOT_*`, no agent secrets: only what uv needs, including the TLS / proxy / index variables of the machine),
and, on a root-run agent, the unprivileged build uid. Source builds are off (`--no-build`): wheels only, except
for the distributions an admin lists in `source_build_allow` (`AIOT_SOURCE_BUILD_ALLOW`), which uv then builds
from source (`--only-binary :all: --no-binary NAME`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from importlib import util as importlib_util
from pathlib import Path

from packaging.utils import canonicalize_name

from aiot.agent.sandbox import Identity, SandboxSpec, chown_tree, plan, trusted_python
from aiot.agent.uids import UidPool
from aiot.artifacts.requirements import RequirementsRefused, parse_requirements

log = logging.getLogger(__name__)

# Used only while platform_sdk ships no requirements.txt of its own (see `sdk_requirements`).
FALLBACK_SDK_REQUIREMENTS = ["nats-py", "httpx", "sniffio", "numpy", "starlette", "uvicorn", "prometheus-client"]
MARKER = "aiot-env.json"
PTH_NAME = "aiot_platform_sdk.pth"
_STDERR_TAIL = 3000
BUILD_MEMORY_MB = 4096
PASSED_THROUGH = (
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "UV_INDEX_URL",
    "UV_EXTRA_INDEX_URL",
    "UV_DEFAULT_INDEX",
    "UV_INDEX",
    "UV_FIND_LINKS",
    "UV_NATIVE_TLS",
    "UV_INSECURE_HOST",
    "UV_HTTP_TIMEOUT",
    "UV_OFFLINE",
)
"""The machine's way to its package index (TLS roots, proxy, an admin's uv index settings): all a build
inherits from the agent's environment."""


class EnvBuildError(RuntimeError):
    """An environment could not be built; the message says which step failed and ends with uv's stderr."""


def find_uv() -> str:
    """The `uv` binary beside the running interpreter (our venv ships it), else the one on PATH."""
    beside = Path(sys.executable).parent / "uv"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("uv")
    if found:
        return found
    raise EnvBuildError(
        "the `uv` binary was not found beside the Python interpreter nor on PATH; install it with `pip install uv`"
    )


def find_sdk_dir() -> Path:
    """The folder of the `platform_sdk` package this agent would inject."""
    spec = importlib_util.find_spec("platform_sdk")
    if spec is None or not spec.submodule_search_locations:
        raise EnvBuildError("the platform_sdk package cannot be found; install the platform (pip install aiot)")
    return Path(next(iter(spec.submodule_search_locations)))


def normalise_requirements(lines: Iterable[str], source: str = "requirements") -> list[str]:
    """Sorted, de-duplicated requirement specifiers; comments and blank lines dropped.

    The same rule as the upload validator (`aiot.artifacts.requirements`): options (`-r`, `--index-url`, `-e`,
    ...), URLs, VCS references and local paths are refused: a package must not choose where the node
    downloads code from, and every requirement must be part of the cache key.
    """
    try:
        return parse_requirements(lines, source)
    except RequirementsRefused as exc:
        raise EnvBuildError(str(exc)) from None


def read_requirements_file(path: Path) -> list[str]:
    """The lines of a requirements.txt (an absent file means no requirements)."""
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise EnvBuildError(f"{path}: cannot read requirements ({exc})") from exc


def hash_tree(root: Path) -> str:
    """sha256 over the relative paths and bytes of the files under `root` (bytecode caches skipped)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if "__pycache__" in path.parts or path.suffix in (".pyc", ".pyo"):
            continue
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def _remove_build_dir(tmp: Path, attempts: int = 30) -> None:
    """Remove a build folder for good. A cancelled build's uv dies with its sandbox (`--die-with-parent`) a
    moment after bwrap, and may still write a file or two meanwhile: one pass of rmtree could leave those."""
    for _ in range(attempts):
        shutil.rmtree(tmp, ignore_errors=True)
        if not tmp.exists():
            return
        time.sleep(0.1)
    log.warning("build folder %s could not be removed; the next build of its key removes it", tmp)


class EnvBuilder:
    """Builds (once) and returns cached virtual environments. Safe to share between workloads and agents."""

    def __init__(
        self,
        cache_dir: Path,
        *,
        uv: str | None = None,
        python: str | None = None,
        sdk_dir: Path | None = None,
        timeout: float = 1800.0,
        hidden: Iterable[Path] = (),
        use_bwrap: bool | None = None,
        build_user: Identity | None = None,
        source_build_allow: Iterable[str] = (),
        find_links: Iterable[Path] = (),
    ) -> None:
        """`hidden`: data dirs covered in the build sandbox (the cache dir always is); `use_bwrap` as in
        `sandbox.plan`; `build_user`: the uid builds run as when the agent is root (default: the default
        range's build uid);
        `source_build_allow`: distributions that may be built from source; `find_links`: admin-provided
        folders of distributions (read-only in the sandbox)."""
        self.cache_dir = Path(cache_dir)
        self.envs_dir = self.cache_dir / "envs"
        self.locks_dir = self.cache_dir / "locks"
        # Wheels only: uv runs no package code, so the build folders and the uv cache share one writable bind
        # (`build/`) and uv hard-links (fast). Source builds allowed: package code runs while the cache is
        # writable, so those builds get a cache of their own (`build-src/`) and copy from it.
        self.work_dir = self.cache_dir / "build"
        self.uv_cache = self.work_dir / "uv-cache"
        self._uv = uv
        # The agent's own base interpreter: uv must not try to download a Python (no internet on nodes).
        self.python = python or trusted_python()
        self.hidden = tuple(Path(p) for p in hidden)
        self.use_bwrap = use_bwrap
        if build_user is None and os.geteuid() == 0:  # never build as root
            build_user = UidPool().build
        self.build_user = build_user
        self.source_build_allow = sorted({canonicalize_name(n) for n in source_build_allow if n.strip()})
        if self.source_build_allow:
            self.work_dir = self.cache_dir / "build-src"
            self.uv_cache = self.work_dir / "uv-cache"
        self.find_links = tuple(Path(p) for p in find_links)
        self._sdk_dir = sdk_dir
        self.timeout = timeout
        self._locks: dict[str, asyncio.Lock] = {}
        self._python_version: str | None = None
        self.builds = 0
        """How many environments this builder actually built (cache misses), for metrics and tests."""
        self.last_build_seconds: float | None = None

    # ----------------------------------------------------------------- keys

    @property
    def sdk_dir(self) -> Path:
        if self._sdk_dir is None:
            self._sdk_dir = find_sdk_dir()
        return self._sdk_dir

    def sdk_requirements(self) -> list[str]:
        """platform_sdk/requirements.txt, or the fallback list while the SDK ships none."""
        path = self.sdk_dir / "requirements.txt"
        if path.exists():
            return read_requirements_file(path)
        return list(FALLBACK_SDK_REQUIREMENTS)

    def python_version(self) -> str:
        """Version of the interpreter environments are built from (asked once, it may not be ours)."""
        if self._python_version is None:
            if Path(self.python).resolve() == Path(getattr(sys, "_base_executable", sys.executable)).resolve():
                self._python_version = ".".join(str(v) for v in sys.version_info[:3])
            else:
                self._python_version = self._probe_version()
        return self._python_version

    def _probe_version(self) -> str:
        out = subprocess.run(
            [self.python, "-c", "import sys; print('.'.join(map(str, sys.version_info[:3])))"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if out.returncode != 0:
            raise EnvBuildError(f"cannot run the interpreter {self.python}: {out.stderr.strip()[-500:]}")
        return out.stdout.strip()

    def resolve(self, requirements: Iterable[str]) -> tuple[str, list[str], str]:
        """(cache key, the full normalised requirement list, SDK hash) for the package's `requirements`."""
        reqs = normalise_requirements([*requirements, *self.sdk_requirements()])
        sdk_hash = hash_tree(self.sdk_dir)
        doc = {
            "requirements": reqs,
            "python": self.python_version(),
            "interpreter": str(self.python),
            "sdk": sdk_hash,
        }
        key = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]
        return key, reqs, sdk_hash

    def env_dir(self, key: str) -> Path:
        return self.envs_dir / key

    @staticmethod
    def python_of(env: Path) -> Path:
        return env / "bin" / "python"

    def _ready(self, env: Path) -> bool:
        return (env / MARKER).is_file() and self.python_of(env).exists()

    # ----------------------------------------------------------------- building

    async def build(self, requirements: list[str]) -> Path:
        """The python of an environment with `requirements` + the SDK's; built now unless cached."""
        key, reqs, sdk_hash = await asyncio.to_thread(self.resolve, requirements)
        env = self.env_dir(key)
        if self._ready(env):
            return self.python_of(env)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if self._ready(env):
                return self.python_of(env)
            async with self._file_lock(key):
                if self._ready(env):  # another agent built it while we waited
                    return self.python_of(env)
                await self._build_locked(key, reqs, sdk_hash, env)
        return self.python_of(env)

    @contextlib.asynccontextmanager
    async def _file_lock(self, key: str):  # type: ignore[no-untyped-def]
        """Exclusive flock on locks/<key>.lock, polled so waiting stays cancellable."""
        self.locks_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.locks_dir / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    await asyncio.sleep(0.2)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _build_env(self, tmp: Path) -> dict[str, str]:
        """The whole environment of a build step: nothing of the agent's but the machine's index access."""
        env = {k: os.environ[k] for k in PASSED_THROUGH if k in os.environ}
        env.update(
            PATH="/usr/local/bin:/usr/bin:/bin",
            HOME=str(tmp / "home"),
            TMPDIR=str(tmp / "tmp"),
            LANG="C.UTF-8",
            UV_CACHE_DIR=str(self.uv_cache),
            UV_NO_PROGRESS="1",
            UV_PYTHON_DOWNLOADS="never",
            UV_NO_CONFIG="1",
        )
        if self.source_build_allow:
            env["UV_LINK_MODE"] = "copy"  # no inode shared between a cache that package code can write and an env
        return env

    def build_options(self) -> list[str]:
        """uv's source-build switches: wheels only, except the admin's allow-list."""
        if not self.source_build_allow:
            return ["--no-build"]
        out = ["--only-binary", ":all:"]
        for name in self.source_build_allow:
            out += ["--no-binary", name]
        return out

    def _sandbox(self, argv: list[str], tmp: Path, uv: str | None) -> SandboxSpec:
        """A uv step: the build folder and the uv cache writable (one bind when wheels only, so hard links
        work; bind mounts are separate file systems to link())."""
        shared = not self.source_build_allow
        return SandboxSpec(
            argv=argv,
            cwd=tmp,
            env=self._build_env(tmp),
            workload_dir=None,
            scratch_dir=self.work_dir if shared else tmp,
            venv_dir=None,
            hidden=(*self.hidden, self.cache_dir),
            memory_mb=BUILD_MEMORY_MB,
            user=self.build_user,
            extra_ro=(*([Path(uv)] if uv else []), *self.find_links),
            extra_rw=() if shared else (self.uv_cache,),
            python=self.python,
        )

    def _check_sandbox(self, argv: list[str], venv: Path, tmp: Path) -> SandboxSpec:
        """The import check runs the env's own code (any wheel's `.pth`): the env read-only, no uv cache, a
        scratch folder of its own, so that code cannot change files the env shares with the cache."""
        scratch = tmp / "check"
        env = {k: v for k, v in self._build_env(tmp).items() if not k.startswith("UV_")}
        env.update(HOME=str(scratch), TMPDIR=str(scratch))
        return SandboxSpec(
            argv=argv,
            cwd=scratch,
            env=env,
            workload_dir=None,
            scratch_dir=scratch,
            venv_dir=venv,
            hidden=(*self.hidden, self.cache_dir),
            memory_mb=BUILD_MEMORY_MB,
            user=self.build_user,
            python=self.python,
        )

    async def _run(self, step: str, spec: SandboxSpec) -> None:
        """Run one uv/python step in the build sandbox; raise EnvBuildError with the stderr tail when it fails."""
        launch = plan(spec, use_bwrap=self.use_bwrap)
        proc = await asyncio.create_subprocess_exec(
            *launch.argv,
            cwd=launch.cwd,
            env=launch.env,
            preexec_fn=launch.preexec_fn,
            start_new_session=True,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self.timeout)
        except TimeoutError:
            await self._kill(proc)
            raise EnvBuildError(f"{step} took longer than {self.timeout:.0f}s; gave up") from None
        except BaseException:  # cancelled: the uv child must not outlive the build
            await self._kill(proc)
            raise
        if proc.returncode != 0:
            tail = (err or out).decode(errors="replace").strip()[-_STDERR_TAIL:]
            raise EnvBuildError(f"{step} failed (exit {proc.returncode}):\n{tail}")

    def _prepare_dirs(self, tmp: Path) -> None:
        """The build folder and the uv cache belong to the build uid (the cache once, when it was root's)."""
        for sub in ("home", "tmp", "check"):
            (tmp / sub).mkdir()
        self.uv_cache.mkdir(parents=True, exist_ok=True)
        if self.build_user is None:
            return
        user = self.build_user
        chown_tree(tmp, user.uid, user.gid)
        if self.work_dir.stat().st_uid != user.uid:
            os.chown(self.work_dir, user.uid, user.gid)
        if self.uv_cache.stat().st_uid != user.uid:
            chown_tree(self.uv_cache, user.uid, user.gid)

    @staticmethod
    async def _kill(proc: asyncio.subprocess.Process) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # the group it leads (start_new_session), not only bwrap
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(Exception):
            await proc.wait()

    async def _build_locked(self, key: str, reqs: list[str], sdk_hash: str, env: Path) -> None:
        self.envs_dir.mkdir(parents=True, exist_ok=True)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.work_dir.glob(f".build-{key}-*"):  # killed builds of this key; we hold its lock
            await asyncio.to_thread(shutil.rmtree, stale, True)
        if env.exists():  # a folder without the marker is not ours to trust
            await asyncio.to_thread(shutil.rmtree, env, True)
        tmp = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=self.work_dir))
        started = time.monotonic()
        log.info("building environment %s (%d requirements)", key[:12], len(reqs))
        try:
            uv = self._uv or find_uv()
            await asyncio.to_thread(self._prepare_dirs, tmp)
            venv = tmp / "venv"
            await self._run(
                "uv venv",
                self._sandbox(
                    [uv, "venv", "--quiet", "--relocatable", "--python", str(self.python), str(venv)], tmp, uv
                ),
            )
            req_file = tmp / "aiot-requirements.txt"
            req_file.write_text("\n".join(reqs) + "\n", encoding="utf-8")
            if reqs:
                links = [a for p in self.find_links for a in ("--find-links", str(p))]
                argv = [
                    uv,
                    "pip",
                    "install",
                    "--python",
                    str(self.python_of(venv)),
                    *self.build_options(),
                    *links,
                    "-r",
                    str(req_file),
                ]
                await self._run("uv pip install", self._sandbox(argv, tmp, uv))
            await asyncio.to_thread(self._inject_sdk, venv)
            check = "import platform_sdk, sys; sys.exit(0 if '/sdk/' in platform_sdk.__file__ else 3)"
            await self._run(
                "import check of platform_sdk",
                self._check_sandbox([str(self.python_of(venv)), "-I", "-c", check], venv, tmp),
            )
            seconds = round(time.monotonic() - started, 3)
            (venv / MARKER).write_text(
                json.dumps(
                    {
                        "key": key,
                        "requirements": reqs,
                        "sdk": sdk_hash,
                        "python": self.python_version(),
                        "build_seconds": seconds,
                        "built_at": time.time(),
                    },
                    indent=2,
                ),
                encoding="utf-8",
            )
            if self.build_user is not None and self.source_build_allow:  # copies: hand them to root
                await asyncio.to_thread(chown_tree, venv, 0, 0)
            os.rename(venv, env)
            self.builds += 1
            self.last_build_seconds = seconds
            log.info("environment %s built in %.1fs", key[:12], seconds)
        finally:
            await asyncio.to_thread(_remove_build_dir, tmp)

    def _inject_sdk(self, venv: Path) -> None:
        """Copy platform_sdk into <venv>/sdk/ and add that folder to sys.path with a .pth file.

        The .pth line is relative to site-packages (the `site` module resolves it so), which keeps the
        environment valid after the rename from its build folder.
        """
        target = venv / "sdk" / "platform_sdk"
        shutil.copytree(self.sdk_dir, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        site_dirs = sorted(venv.glob("lib/python*/site-packages"))
        if not site_dirs:
            raise EnvBuildError(f"{venv}: no lib/python*/site-packages folder after `uv venv`")
        site = site_dirs[0]
        (site / PTH_NAME).write_text(os.path.relpath(venv / "sdk", site) + "\n", encoding="utf-8")
