"""The docker runtime under the real supervisor: a real Docker engine, images built here, real containers.

The same contract as processes: heartbeats through the bound run dir, output captured, SIGKILL -> restart,
hang -> restart, and more that only a container gives: the memory limit enforced by the kernel (and reported
as such), a read-only root, no capabilities, a non-root uid; and a container never outlives its launcher.
Skipped, naming the reason, only where no Docker engine runs (scripts/test-services starts one).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from aiot.agent.docker_runtime import (
    LABEL_WORKLOAD,
    DockerRuntime,
    DockerUnavailable,
    docker_client,
    remove_container,
)
from aiot.agent.envs import EnvBuilder
from aiot.agent.sandbox import Identity, chown_tree, interpreter_root
from aiot.agent.supervisor import WorkloadSupervisor
from aiot.launch.http_app import create_app
from aiot.store.models import Role
from tests.agent.conftest import make_probe, wait_until
from tests.agent.test_agent_loop import serve_http
from tests.deployer.helpers import EXAMPLES, deploy_comfort, first_prediction
from tests.support.live import live_platform

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
WORKLOAD_UID = 1_600_000_001


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerRuntime]:
    try:
        client = docker_client()
    except DockerUnavailable as exc:
        pytest.skip(str(exc))
    runtime = DockerRuntime(f"test-{os.getpid()}", client)
    yield runtime
    runtime.remove_env_images(tmp_path_factory.getbasetemp())  # this process's environments, in temporary dirs


@pytest.fixture(scope="module")
def env_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An environment as the agent builds it (the SDK and its requirements), outside /tmp's usual paths."""
    builder = EnvBuilder(tmp_path_factory.mktemp("docker-envs"))
    return asyncio.run(builder.build([]))


def _container(runtime: DockerRuntime, workload_id: str) -> Any:
    found = runtime.client.containers.list(filters={"label": f"{LABEL_WORKLOAD}={workload_id}"})
    return found[0] if found else None


async def _stopped_within(container: Any, limit_s: float) -> bool:
    """Whether `container` stops running within `limit_s` seconds (its state is read again every 0.1 s)."""
    deadline = time.monotonic() + limit_s
    while True:
        container.reload()
        if container.status != "running":
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.1)


def _supervisor(runtime: DockerRuntime, env_python: Path, tmp_path: Path, wid: str, **settings: Any) -> Any:
    """A supervisor running the probe workload in a container; heartbeats every 0.5 s unless `interval` says
    otherwise (a test that is not about hangs asks for more, so a loaded machine cannot make it see one)."""
    memory_mb = settings.pop("memory_mb", 256)
    interval = settings.pop("interval", 0.5)
    probe = make_probe(tmp_path / "data", wid, interval=interval, python=env_python, **settings)
    probe.spec = dataclasses.replace(probe.spec, memory_mb=memory_mb, user=Identity(WORKLOAD_UID, WORKLOAD_UID))
    chown_tree(probe.dir, WORKLOAD_UID, WORKLOAD_UID)
    image = runtime.env_image(env_python.parent.parent)
    container = runtime.container_spec(probe.spec, image, wid, 1, cpus=1.0)
    lines: list[tuple[str, str]] = []
    sup = WorkloadSupervisor(
        wid,
        runtime.plan(container, probe.dir.parent / f"{wid}.container.json"),
        heartbeat_file=probe.heartbeat,
        heartbeat_interval=interval,
        on_output=lambda _w, stream, line: lines.append((stream, line)),
        startup_grace=30,
    )
    return probe, sup, lines


async def test_a_container_runs_heartbeats_and_restarts_after_sigkill(
    runtime: DockerRuntime, env_python: Path, tmp_path: Path
) -> None:
    # beats every 2 s (hung only after 6 s without one): the restart seen must be the SIGKILL's, not a late beat's
    probe, sup, lines = _supervisor(runtime, env_python, tmp_path, "wl_dock1", interval=2.0)
    sup.start()
    try:
        await wait_until(lambda: sup.state == "running", 60)
        assert ("stderr", "probe stderr line") in lines
        assert any(s == "stdout" and line.startswith("probe started") for s, line in lines)
        container = _container(runtime, "wl_dock1")
        assert container is not None
        config = container.attrs["HostConfig"]
        assert config["ReadonlyRootfs"] and config["CapDrop"] == ["ALL"] and config["Memory"] == 256 << 20
        assert container.attrs["Config"]["User"] == f"{WORKLOAD_UID}:{WORKLOAD_UID}"
        workload_pid = next(
            p.pid
            for p in psutil.Process(container.attrs["State"]["Pid"]).children(recursive=True)
            if "probe_workload.py" in " ".join(p.cmdline())
        )
        killed_at = time.monotonic()
        os.kill(workload_pid, signal.SIGKILL)
        await wait_until(lambda: sup.restarts == 1, 10)
        await wait_until(lambda: sup.state == "running", 30)
        print(f"SIGKILL in a container -> running again in {time.monotonic() - killed_at:.2f}s")
        reasons = " ".join(reason for _, _, reason in sup.history)
        assert "SIGKILL" in reasons and "hung" not in reasons, sup.history
    finally:
        await sup.stop()
    assert _container(runtime, "wl_dock1") is None  # stop removes the container


async def test_a_hung_container_is_restarted(runtime: DockerRuntime, env_python: Path, tmp_path: Path) -> None:
    probe, sup, _ = _supervisor(runtime, env_python, tmp_path, "wl_dock2")
    sup.start()
    try:
        await wait_until(lambda: sup.state == "running", 60)
        first = _container(runtime, "wl_dock2").id
        (probe.run_dir / "hang").touch()
        await wait_until(lambda: sup.restarts == 1, 10)
        await wait_until(lambda: sup.state == "running", 30)
        assert any(state == "unhealthy" and "hung" in reason for _, state, reason in sup.history)
        assert _container(runtime, "wl_dock2").id != first  # the hung container is gone, a new one runs
    finally:
        await sup.stop()


async def test_the_memory_limit_is_enforced_and_reported(
    runtime: DockerRuntime, env_python: Path, tmp_path: Path
) -> None:
    probe, sup, _ = _supervisor(runtime, env_python, tmp_path, "wl_dock3", memory_mb=96, allocate_mb=400)
    sup.start()
    try:
        await wait_until(lambda: sup.restarts >= 1, 60)
        reasons = " ".join(reason for _, _, reason in sup.history)
        assert "OutOfMemoryError" in reasons and "96 MiB memory limit" in reasons, reasons
    finally:
        await sup.stop()


async def test_a_container_never_outlives_its_launcher(
    runtime: DockerRuntime, env_python: Path, tmp_path: Path
) -> None:
    """The node agent (and so every launcher) SIGKILLed: the workload dies with it, as a process would."""
    probe, sup, _ = _supervisor(runtime, env_python, tmp_path, "wl_dock4")
    sup.start()
    try:
        await wait_until(lambda: sup.state == "running", 60)
        container = _container(runtime, "wl_dock4")
        launcher = psutil.Process(sup.pid)
        sup._stopping.set()  # the supervisor must not restart it: it plays the agent that died
        launcher.kill()
        assert await _stopped_within(container, 10), "the container outlived its launcher"
        assert container.attrs["State"]["ExitCode"] == 137
    finally:
        await sup.stop()
        runtime.remove_orphans()
    assert _container(runtime, "wl_dock4") is None


async def test_the_sandbox_shows_no_host_secrets_and_a_read_only_root(
    runtime: DockerRuntime, env_python: Path, tmp_path: Path
) -> None:
    reads, lists = ["/etc/shadow", "/root/.bashrc"], ["/root", "/home"]
    # the lifeline: a workload holding it open for writing would outlive its agent
    lifeline = str(tmp_path / "data" / "workloads" / "wl_dock5" / "run" / ".lifeline")
    writes = ["/usr/aiot-probe", "/etc/aiot-probe", lifeline]
    probe, sup, lines = _supervisor(
        runtime, env_python, tmp_path, "wl_dock5", mode="probe", read=reads, write=writes, list=lists
    )
    sup.start()
    try:
        await wait_until(lambda: any(line.startswith("VERDICT ") for _, line in lines), 60)
    finally:
        await sup.stop()
    verdict = json.loads(next(line for _, line in lines if line.startswith("VERDICT "))[len("VERDICT ") :])
    assert verdict["uids"] == [WORKLOAD_UID] * 3
    assert verdict["status"]["CapEff"].strip() == "0000000000000000"
    assert all(str(verdict[p]).startswith("denied") for p in reads + writes), verdict
    # only the mount points of what is bound (the interpreter may live under /root, as pyenv's does)
    python_root = interpreter_root(str(env_python))
    allowed = {"/root": {python_root.parts[2]} if python_root.parts[1] == "root" else set(), "/home": set()}
    for path in lists:
        seen = verdict[f"ls {path}"]
        assert str(seen).startswith("denied") or set(seen) <= allowed[path], (path, seen)


async def test_a_docker_node_serves_a_model_and_leaves_nothing_when_it_dies(
    runtime: DockerRuntime, tmp_path: Path
) -> None:
    """A node joined with `--runtime docker` (its own process): the comfort model deployed on it answers at its
    stable URL; an upgrade rolls out (a new container replaces the old); SIGKILL of the node agent (a lost node)
    stops its containers too, as it would its processes."""
    async with (
        live_platform(tmp_path, services=("nats-auth", "deployer"), rollout_soak_seconds=2.0) as live,
        serve_http(create_app(live.ctx)) as api_port,
    ):
        client, dev = live.client, live.headers(Role.ai_developer)
        await deploy_comfort(live, tmp_path, 1)
        join = await client.post("/api/v1/nodes/join-tokens", headers=live.headers(Role.admin))
        token_file = tmp_path / "join-token"
        token_file.write_text(join.json()["token"])
        token_file.chmod(0o600)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIOT_")}
        env.update(AIOT_DATA_DIR=str(tmp_path / "data"), AIOT_ALLOW_UNSANDBOXED="0")
        agent_dir = Path(tempfile.mkdtemp(prefix="aiot-docker-node-", dir="/var/tmp"))
        agent = subprocess.Popen(
            [str(Path(sys.executable).parent / "aiot"), "node", "join", "--server", f"http://127.0.0.1:{api_port}",
             "--token-file", str(token_file), "--name", "docker-node", "--runtime", "docker",
             "--data-dir", str(agent_dir), "--cpu", "4", "--memory-mb", "8192"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            url, hot = "/models/aideveloper1/comfort/v1/predict", {"inputs": {"temperature": 31.5, "light": 120}}

            def node_alive() -> None:
                assert agent.poll() is None, agent.communicate()[0][-3000:]

            answer = await first_prediction(client, url, hot, dev, limit_s=180, check=node_alive)
            assert answer.json()["outputs"] == {"fan": "on", "ac": "on", "lamp": "on"}
            nodes = (await client.get("/api/v1/nodes", headers=live.headers(Role.admin))).json()
            assert [n["labels"].get("runtime") for n in nodes] == ["docker"]
            running = [
                c for c in runtime.client.containers.list() if c.labels.get(LABEL_WORKLOAD, "").startswith("wl")
                and c.attrs["Config"]["WorkingDir"].startswith(str(agent_dir))
            ]  # fmt: skip
            assert len(running) == 1 and running[0].attrs["HostConfig"]["ReadonlyRootfs"]
            first_workload = running[0].labels[LABEL_WORKLOAD]

            # an upgrade rolls out on containers as on processes: 1.0.1 replaces 1.0.0, its image reused
            newer = _comfort_version(tmp_path, "1.0.1")
            assert (await client.post("/api/v1/models", content=newer, headers=dev)).status_code == 201
            started = await client.post("/api/v1/models/comfort/rollout", json={"version": "1.0.1"}, headers=dev)
            assert started.status_code == 200, started.text
            deadline = time.monotonic() + 120
            while (await client.get("/api/v1/models/comfort/rollouts", headers=dev)).json()[-1]["state"] == "rolling":
                assert time.monotonic() < deadline, "the rollout did not finish"
                await asyncio.sleep(0.5)
            assert (await client.get("/api/v1/models/comfort/rollouts", headers=dev)).json()[-1]["state"] == "succeeded"
            answer = await client.post(url, json=hot, headers=dev)
            assert answer.status_code == 200 and answer.headers["x-aiot-model-version"] == "1.0.1"
            running = [
                c
                for c in runtime.client.containers.list()
                if c.attrs["Config"]["WorkingDir"].startswith(str(agent_dir))
            ]  # noqa: E501
            assert len(running) == 1 and running[0].labels[LABEL_WORKLOAD] != first_workload, running

            agent.kill()  # the node is lost
            agent.wait()
            assert await _stopped_within(running[0], 10), "a lost node's container kept running"
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
            for leftover in runtime.client.containers.list(all=True):
                if leftover.attrs["Config"]["WorkingDir"].startswith(str(agent_dir)):
                    remove_container(leftover)  # its launcher may be removing it at this very moment
            runtime.remove_env_images(agent_dir)
            shutil.rmtree(agent_dir, ignore_errors=True)


def _comfort_version(tmp_path: Path, version: str) -> bytes:
    """The comfort sample zipped as another version."""
    from aiot.artifacts.packing import zip_folder

    folder = tmp_path / f"comfort-{version}"
    shutil.copytree(EXAMPLES / "models" / "comfort", folder)
    manifest = json.loads((folder / "model.json").read_text())
    manifest["version"] = version
    (folder / "model.json").write_text(json.dumps(manifest))
    return zip_folder(folder, tmp_path / f"comfort-{version}.zip").read_bytes()


def test_an_unknown_runtime_is_refused_naming_the_choices() -> None:
    ran = subprocess.run(
        [str(Path(sys.executable).parent / "aiot"), "node", "join", "--runtime", "podman"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("AIOT_")},
        timeout=60,
    )
    assert ran.returncode == 2 and "--runtime must be one of process, docker, not 'podman'" in ran.stderr
