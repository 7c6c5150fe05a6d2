"""The control plane as a real process: healthz, restarts, SIGKILL durability, embedded NATS lifecycle."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from aiot.bus.client import Bus
from aiot.bus.embedded import EmbeddedNats, find_nats_server, running_nats_servers_using
from tests.conftest import free_port
from tests.support.processes import RunningPlatform, start_platform

pytestmark = pytest.mark.slow


def _login(url: str, username: str = "admin", password: str = "admin-password-1") -> str:
    response = httpx.post(f"{url}/api/v1/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return response.json()["token"]


async def _stream_roundtrip(data_dir: Path, payload: bytes | None) -> list[bytes]:
    """Publish `payload` (if given) into a test stream; return every message the stream holds."""
    nats = EmbeddedNats(data_dir)
    state = __import__("json").loads(nats.state_path.read_text())
    url = f"nats://127.0.0.1:{state['client_port']}"
    bus = await Bus.connect(url, user=nats.platform_user, password=nats.platform_password, name="test", attempts=3)
    try:
        await bus.ensure_stream("TESTKEEP", ["testkeep.>"])
        if payload is not None:
            await bus.js.publish("testkeep.one", payload)
        consumer = await bus.js.pull_subscribe("testkeep.>", stream="TESTKEEP")
        messages = await consumer.fetch(10, timeout=2)
        return [m.data for m in messages]
    finally:
        await bus.close()


def test_up_serves_healthz_and_survives_sigkill(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "data", free_port()
    config = data_dir / "nats" / "nats.conf"
    with start_platform(data_dir, port) as plane:
        plane.wait_healthy()
        health = httpx.get(f"{plane.url}/healthz").json()
        assert health == {"status": "ok", "database": True, "nats": True}
        token = _login(plane.url)
        headers = {"Authorization": f"Bearer {token}"}
        created = httpx.post(
            f"{plane.url}/api/v1/users",
            headers=headers,
            json={"username": "bob", "password": "bob-password", "role": "end_user"},
        )
        assert created.status_code == 201
        bob_token = _login(plane.url, "bob", "bob-password")
        assert asyncio.run(_stream_roundtrip(data_dir, b"kept")) == [b"kept"]
        assert len(running_nats_servers_using(config)) == 1
        plane.kill(signal.SIGKILL)
    # The embedded nats-server dies with its parent (PR_SET_PDEATHSIG), even on SIGKILL.
    deadline = time.monotonic() + 5
    while running_nats_servers_using(config) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert running_nats_servers_using(config) == []

    with start_platform(data_dir, port) as plane:
        plane.wait_healthy()
        # Committed users and tokens survived the SIGKILL.
        me = httpx.get(f"{plane.url}/api/v1/auth/me", headers={"Authorization": f"Bearer {bob_token}"})
        assert me.status_code == 200 and me.json()["username"] == "bob"
        assert httpx.get(f"{plane.url}/api/v1/status", headers=headers).json()["nats"]["ok"] is True
        # JetStream data kept across the restart.
        assert asyncio.run(_stream_roundtrip(data_dir, None)) == [b"kept"]
        assert "first admin created" not in plane.log()
        plane.kill(signal.SIGTERM)
        assert plane.proc.returncode == 0
    assert running_nats_servers_using(config) == []


def test_generated_admin_password_is_printed_once(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "data", free_port()
    env = {"AIOT_ADMIN_PASSWORD": ""}
    with start_platform(data_dir, port, **env) as plane:
        plane.wait_healthy()
        log = _wait_for_report(plane)
    line = next(line for line in log.splitlines() if "first admin created" in line)
    password = line.split("password ")[1].split()[0]
    with start_platform(data_dir, port, **env) as plane:
        plane.wait_healthy()
        assert _login(plane.url, "admin", password)
        assert "first admin created" not in _wait_for_report(plane)


def _wait_for_report(plane: RunningPlatform, timeout: float = 30.0) -> str:
    """The log once the start-up report is printed: `aiot up` prints it after every service started, which
    can be a while after the API already answers /healthz."""
    deadline = time.monotonic() + timeout
    while "press Ctrl+C to stop" not in (log := plane.log()):
        assert time.monotonic() < deadline, f"no start-up report within {timeout:g}s:\n{log[-3000:]}"
        time.sleep(0.2)
    return log


def test_external_nats_down_is_retried_not_a_crash(tmp_path: Path) -> None:
    data_dir, port, nats_port = tmp_path / "data", free_port(), free_port()
    with start_platform(data_dir, port, AIOT_NATS_URL=f"nats://127.0.0.1:{nats_port}") as plane:
        deadline = time.monotonic() + 30  # a few seconds on an idle machine
        while f"NATS at nats://127.0.0.1:{nats_port} unreachable" not in plane.log() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert plane.proc.poll() is None, plane.log()
        assert f"NATS at nats://127.0.0.1:{nats_port} unreachable" in plane.log()
        assert "retrying" in plane.log() and "Traceback" not in plane.log()
        server = subprocess.Popen(
            [str(find_nats_server()), "-a", "127.0.0.1", "-p", str(nats_port), "-js", "-sd", str(tmp_path / "js")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            plane.wait_healthy(timeout=30)
            assert httpx.get(f"{plane.url}/healthz").json()["nats"] is True
            assert not (data_dir / "nats" / "nats.conf").exists()  # no embedded server was started
        finally:
            server.terminate()
            server.wait(timeout=10)


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        data_dir = tmp_path / "data"
        with start_platform(data_dir, port) as plane:
            assert plane.proc.wait(timeout=60) == 1, plane.log()
            assert "could not listen on 127.0.0.1" in plane.log()
            assert "Traceback" not in plane.log()
        # The embedded nats-server is stopped with the failed start (asynchronously on a loaded machine).
        deadline = time.monotonic() + 10
        while running_nats_servers_using(data_dir / "nats" / "nats.conf") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert running_nats_servers_using(data_dir / "nats" / "nats.conf") == []
