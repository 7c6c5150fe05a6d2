"""Fixtures for the node agent's tests: one shared uv environment (built once per session) and workload dirs.

Real processes, real uv, real bubblewrap: the probe workload (`probe_workload.py`) heartbeats like the SDK and
misbehaves on request (crash, hang, child processes, file-access probes).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from aiot.agent.envs import EnvBuilder, read_requirements_file
from aiot.agent.sandbox import LaunchPlan, SandboxSpec, bwrap_path, plan, workload_env

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parents[1] / "examples"
COMFORT = EXAMPLES / "models" / "comfort"

needs_bwrap = pytest.mark.skipif(bwrap_path() is None, reason="bubblewrap (bwrap) is not installed")


@dataclass
class SharedEnv:
    builder: EnvBuilder
    python: Path
    cold_seconds: float
    requirements: list[str]


@pytest.fixture(scope="session")
def shared_env(tmp_path_factory: pytest.TempPathFactory) -> SharedEnv:
    """The one cold build of the session: comfort's requirements + the SDK's, in a fresh uv cache."""
    cache = tmp_path_factory.mktemp("env-cache")
    builder = EnvBuilder(cache)
    requirements = read_requirements_file(COMFORT / "requirements.txt")
    started = time.monotonic()
    python = asyncio.run(builder.build(requirements))
    cold = time.monotonic() - started
    print(f"\ncold env build (comfort + SDK requirements, empty uv cache): {cold:.2f}s")
    return SharedEnv(builder=builder, python=python, cold_seconds=cold, requirements=requirements)


@pytest.fixture
def data_outside_tmp():  # type: ignore[no-untyped-def]
    """A data dir outside /tmp (the sandbox covers all of /tmp, which would hide a data dir there anyway)."""
    path = Path(tempfile.mkdtemp(prefix="aiot-test-data-", dir="/var/tmp"))
    path.chmod(0o755)  # like /var/lib: walkable, what matters is the data dir inside it
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class ProbeWorkload:
    workload_id: str
    data_dir: Path
    dir: Path
    run_dir: Path
    heartbeat: Path
    config_path: Path
    spec: SandboxSpec

    def plan(self, use_bwrap: bool | None = None) -> LaunchPlan:
        return plan(self.spec, use_bwrap=use_bwrap)


def make_probe(
    data_dir: Path,
    workload_id: str = "wl_probe",
    *,
    interval: float = 1.0,
    python: Path | None = None,
    **settings: object,
) -> ProbeWorkload:
    """A workload folder laid out like the agent's: <data>/workloads/<id>/{package,run,config.json}."""
    wdir = data_dir / "workloads" / workload_id
    package = wdir / "package"
    run = wdir / "run"
    (run / "tmp").mkdir(parents=True)
    package.mkdir(parents=True)
    shutil.copy(HERE / "probe_workload.py", package / "probe_workload.py")
    heartbeat = run / "heartbeat"
    config = {
        "workload_id": workload_id,
        "kind": "app",
        "generation": 1,
        "package_dir": str(package),
        "heartbeat": {"file": str(heartbeat), "interval": interval},
        "settings": settings,
        "nats": {"servers": ["nats://127.0.0.1:1"]},
    }
    config_path = wdir / "config.json"
    config_path.write_text(json.dumps(config))
    config_path.chmod(0o600)
    py = Path(python or sys.executable)
    venv = py.parent.parent
    spec = SandboxSpec(
        argv=[str(py), "probe_workload.py"],
        cwd=package,
        env=workload_env(config_path, venv, run),
        workload_dir=wdir,
        scratch_dir=run,
        venv_dir=venv,
        hidden=(data_dir,),
        memory_mb=256,
    )
    return ProbeWorkload(workload_id, data_dir, wdir, run, heartbeat, config_path, spec)


async def wait_until(predicate, timeout: float, step: float = 0.02) -> float:  # type: ignore[no-untyped-def]
    """Poll `predicate` until true; the seconds it took (AssertionError on timeout)."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(step)
    return time.monotonic() - started
