"""The whole loop: a real control plane (API + deployer + NATS auth), one real agent, the comfort model.

The agent talks HTTP to a uvicorn server through a TCP proxy that the test can stall (accepts, never answers),
so "a stalled control plane restarts nothing" is tested at the network level.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import psutil
import pytest
import uvicorn

from aiot.agent.agent import AgentConfig, NodeAgent
from aiot.artifacts.packing import zip_folder
from aiot.launch.http_app import create_app
from aiot.store.models import Role
from tests.agent.conftest import COMFORT, SharedEnv, wait_until
from tests.conftest import free_port
from tests.support.live import live_platform


class StallProxy:
    """TCP proxy to `target_port`; while stalled it accepts and reads but forwards nothing either way."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.open = asyncio.Event()
        self.open.set()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                await self.open.wait()
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.open.wait()
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))

    async def stop(self) -> None:
        self.open.set()
        if self.server is not None:
            self.server.close()


@contextlib.asynccontextmanager
async def serve_http(app: object) -> AsyncIterator[int]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]  # keep pytest's handlers
    task = asyncio.create_task(server.serve())
    await wait_until(lambda: server.started, 10)
    try:
        yield port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@pytest.mark.slow
async def test_agent_runs_a_deployed_model_survives_a_stalled_control_plane_and_stops_it(
    tmp_path: Path, shared_env: SharedEnv, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="aiot.agent.agent")
    async with (
        live_platform(tmp_path, services=("nats-auth", "deployer", "log-relay")) as live,
        serve_http(create_app(live.ctx)) as api_port,
    ):
        proxy = StallProxy(api_port)
        await proxy.start()
        logs: list[dict] = []

        async def on_log(msg) -> None:  # type: ignore[no-untyped-def]
            logs.append(json.loads(msg.data))

        await live.ctx.bus.subscribe("aiot.logs.>", on_log)
        join = await live.client.post("/api/v1/nodes/join-tokens", headers=live.headers(Role.admin))
        agent = NodeAgent(
            AgentConfig(
                server=f"http://127.0.0.1:{proxy.port}",
                data_dir=tmp_path / "agent",
                join_token=join.json()["token"],
                name="node-a",
                capacity={"cpu": 4, "memory_mb": 8192},
                env_cache_dir=shared_env.builder.cache_dir,
                hidden_paths=(tmp_path / "data",),
                poll_interval=0.5,
                report_interval=0.5,
                request_timeout=1.5,
            )
        )
        await agent.start()
        try:
            await agent.wait_registered(30)  # through the proxy with 1.5 s request timeouts, on a loaded machine
            assert (tmp_path / "agent" / "node.json").stat().st_mode & 0o777 == 0o600

            archive = zip_folder(COMFORT, tmp_path / "comfort.zip")
            pushed = await live.client.post(
                "/api/v1/models", content=archive.read_bytes(), headers=live.headers(Role.ai_developer)
            )
            model_id = pushed.json()["id"]
            deployed = await live.client.post(
                f"/api/v1/models/{model_id}/deploy",
                json={"replicas": 1},
                headers=live.headers(Role.ai_developer),
            )
            assert deployed.status_code == 201, deployed.text

            def running() -> bool:
                return any(w.report()["state"] == "running" for w in agent.workloads.values())

            await wait_until(running, 90, step=0.2)
            managed = next(iter(agent.workloads.values()))
            wid = managed.workload_id
            config = json.loads((managed.dir / "config.json").read_text())
            assert (managed.dir / "config.json").stat().st_mode & 0o777 == 0o600
            assert config["package_dir"] == str(managed.dir / "package") and config["serve"]["port"] > 0
            assert config["heartbeat"]["file"].startswith(str(managed.dir / "run"))
            async with httpx.AsyncClient() as http:
                assert (await http.get(f"{managed.endpoint}/healthz")).status_code == 200
                assert agent.http is not None
                health = (await http.get(f"http://127.0.0.1:{agent.http.port}/healthz")).json()
                assert health["node_id"] == agent.identity.node_id and health["workloads"] == {"running": 1}
                metrics = (await http.get(f"http://127.0.0.1:{agent.http.port}/metrics")).text
                assert 'aiot_agent_workloads{state="running"} 1.0' in metrics
                assert "aiot_agent_sandboxed 1.0" in metrics
            if os.geteuid() == 0:  # a root-run agent's workload runs as its own unprivileged uid
                inside = [p for p in psutil.Process(managed.pid).children(recursive=True) if p.name() != "bwrap"]
                assert managed.user is not None and managed.user.uid != 0
                assert inside and {p.uids().real for p in inside} == {managed.user.uid}
                assert (managed.dir / "config.json").stat().st_uid == managed.user.uid

            nodes = (await live.client.get("/api/v1/nodes", headers=live.headers(Role.admin))).json()
            assert [n["load"].get("sandboxed") for n in nodes if n["name"] == "node-a"] == [True]

            async def api_state() -> dict:
                return (await live.client.get(f"/api/v1/workloads/{wid}", headers=live.headers(Role.admin))).json()

            for _ in range(50):
                shown = await api_state()
                if shown["state"] == "running":
                    break
                await asyncio.sleep(0.2)
            assert shown["state"] == "running" and shown["endpoint"] == managed.endpoint, shown
            await wait_until(
                lambda: any(r.get("workload_id") == wid and r.get("service") == "workload" for r in logs), 10
            )

            # The control plane stalls (TCP accepted, nothing answered) for 5 s: nothing restarts.
            pid = managed.pid
            logged_before = len(caplog.records)  # a slow answer earlier (a loaded machine) is another outage
            proxy.open.clear()
            await asyncio.sleep(5)
            report = managed.report()
            assert report["state"] == "running" and report["restarts"] == 0 and managed.pid == pid
            assert agent.workloads.get(wid) is managed
            outage_lines = [
                r
                for r in caplog.records[logged_before:]
                if r.name == "aiot.agent.agent" and "unreachable" in r.getMessage()
            ]
            assert len(outage_lines) == 1  # logged once per outage, not once per attempt
            reports_before = agent.reports
            proxy.open.set()
            await wait_until(lambda: agent.reports > reports_before + 1, 15)

            # Undeploy: the agent stops the process once the assignment is gone.
            tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
            gone = await live.client.delete(f"/api/v1/deployments/{model_id}", headers=live.headers(Role.ai_developer))
            assert gone.status_code == 204
            await wait_until(lambda: not agent.workloads, 15)
            await wait_until(lambda: not [p for p in tree if p.is_running() and p.status() != "zombie"], 10)
        finally:
            await agent.stop()
            await proxy.stop()


def _agent_cmd(server: str, data_dir: Path, env_cache: Path, token_file: Path | None) -> list[str]:
    # As `aiot node join` (the lead wires node_app into aiot.cli.main under the name "node").
    code = (
        "import sys, typer; from aiot.cli.node import node_app; app = typer.Typer(); "
        "app.add_typer(node_app, name='node'); app(sys.argv[1:])"
    )
    args = [
        sys.executable,
        "-c",
        code,
        "node",
        "join",
        "--server",
        server,
        "--name",
        "node-cli",
        "--data-dir",
        str(data_dir),
        "--env-cache",
        str(env_cache),
        "--cpu",
        "4",
        "--memory-mb",
        "8192",
        "--labels",
        "zone=test",
    ]
    return args + (["--token-file", str(token_file)] if token_file else [])


@pytest.mark.slow
async def test_cli_agent_sigkill_takes_its_workloads_along_and_a_restart_runs_them_once(
    tmp_path: Path, shared_env: SharedEnv
) -> None:
    async with (
        live_platform(tmp_path, services=("nats-auth", "deployer", "log-relay")) as live,
        serve_http(create_app(live.ctx)) as api_port,
    ):
        server = f"http://127.0.0.1:{api_port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIOT_")}
        env.update(AIOT_DATA_DIR=str(tmp_path / "data"), AIOT_LOG_LEVEL="INFO")
        token = (await live.client.post("/api/v1/nodes/join-tokens", headers=live.headers(Role.admin))).json()["token"]
        log_file = (tmp_path / "agent.log").open("wb")
        token_file = tmp_path / "join-token"  # a file only we can read: never the token on a command line
        token_file.write_text(token)
        token_file.chmod(0o600)
        cmd = _agent_cmd(server, tmp_path / "agent", shared_env.builder.cache_dir, token_file)
        assert token not in " ".join(cmd)
        agent = await asyncio.create_subprocess_exec(*cmd, env=env, stdout=log_file, stderr=log_file)
        try:
            archive = zip_folder(COMFORT, tmp_path / "comfort.zip")
            model_id = (
                await live.client.post(
                    "/api/v1/models", content=archive.read_bytes(), headers=live.headers(Role.ai_developer)
                )
            ).json()["id"]

            async def workload() -> dict:
                listed = (await live.client.get("/api/v1/workloads", headers=live.headers(Role.admin))).json()
                return listed[0] if listed else {}

            async def wait_running(timeout: float) -> dict:
                for _ in range(int(timeout / 0.25)):
                    assert agent.returncode is None, (tmp_path / "agent.log").read_text()
                    shown = await workload()
                    if shown.get("state") == "running":
                        return shown
                    await asyncio.sleep(0.25)
                detail = (
                    await live.client.get(f"/api/v1/workloads/{shown.get('id')}", headers=live.headers(Role.admin))
                ).json()
                raise AssertionError(f"not running: {detail}\n{(tmp_path / 'agent.log').read_text()[-3000:]}")

            for _ in range(40):  # the node must have joined before the deployment can be placed
                if (await live.client.get("/api/v1/nodes", headers=live.headers(Role.admin))).json():
                    break
                await asyncio.sleep(0.25)
            deployed = await live.client.post(
                f"/api/v1/models/{model_id}/deploy",
                json={"replicas": 1},
                headers=live.headers(Role.ai_developer),
            )
            assert deployed.status_code == 201, deployed.text
            await wait_running(90)
            tree = psutil.Process(agent.pid).children(recursive=True)  # bwrap, its init, the model server
            assert any("platform_sdk.serving" in " ".join(p.cmdline()) for p in tree)

            agent.kill()  # SIGKILL: no Python code runs in the agent; PR_SET_PDEATHSIG must do the work
            await agent.wait()
            await wait_until(lambda: not [p for p in tree if p.is_running() and p.status() != "zombie"], 3)

            # Restarted without a token: it is the same node (node.json) and runs the workload once again.
            cmd = _agent_cmd(server, tmp_path / "agent", shared_env.builder.cache_dir, None)
            agent = await asyncio.create_subprocess_exec(*cmd, env=env, stdout=log_file, stderr=log_file)
            for _ in range(120):
                children = psutil.Process(agent.pid).children(recursive=True)
                if (await workload()).get("state") == "running" and children:
                    break
                await asyncio.sleep(0.25)
            else:
                raise AssertionError(f"not running again:\n{(tmp_path / 'agent.log').read_text()[-3000:]}")
            nodes = (await live.client.get("/api/v1/nodes", headers=live.headers(Role.admin))).json()
            assert [n["name"] for n in nodes] == ["node-cli"]
            servers = [
                p
                for p in psutil.Process(agent.pid).children(recursive=True)
                if "platform_sdk.serving" in " ".join(p.cmdline()) and p.name() != "bwrap"
            ]
            assert len(servers) == 1, servers  # nothing runs twice
        finally:
            if agent.returncode is None:
                agent.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(agent.wait(), 15)
                except TimeoutError:
                    agent.kill()
            log_file.close()


async def test_agent_without_a_sandbox_refuses_to_start_unless_allowed(tmp_path: Path) -> None:
    agent = NodeAgent(AgentConfig(server="http://127.0.0.1:9", data_dir=tmp_path / "a", use_bwrap=False))
    with pytest.raises(Exception, match="AIOT_ALLOW_UNSANDBOXED=1") as info:
        await agent.start()
    assert type(info.value).__name__ == "AgentError" and not (tmp_path / "a").exists()
    await agent.client.close()
