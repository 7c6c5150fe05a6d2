"""EmbeddedNats lifecycle against a real nats-server: files, ports, persistence, orphans, parent death."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from aiot.bus import Bus, EmbeddedNats, EmbeddedNatsError, find_nats_server
from aiot.bus.embedded import running_nats_servers_using
from tests.conftest import free_port

from .conftest import wait_for


def _spawn(args: list[str], **kwargs: object) -> subprocess.Popen[str]:
    """Plain Popen (kept out of the async tests so ruff's ASYNC220 stays meaningful elsewhere)."""
    return subprocess.Popen(args, text=True, **kwargs)  # type: ignore[call-overload]


async def _platform_bus(server: EmbeddedNats) -> Bus:
    return await Bus.connect(
        server.url, user=server.platform_user, password=server.platform_password, name="t", attempts=1
    )


def test_find_nats_server_prefers_the_venv_binary() -> None:
    found = find_nats_server()
    assert found == Path(sys.executable).parent / "nats-server"
    assert os.access(found, os.X_OK)


async def test_start_stop_files_and_no_process_left(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path)
    await server.start()
    try:
        pid = server.pid
        assert pid is not None and psutil.pid_exists(pid)
        assert [p.pid for p in running_nats_servers_using(server.config_path)] == [pid]
        assert int(server.pid_path.read_text()) == pid
        conf = server.config_path.read_text()
        for needle in (
            "server_name",
            "jetstream",
            "store_dir",
            "mqtt",
            f"port: {server.client_port}",
            'include "auth.conf"',
        ):
            assert needle in conf
        assert server.store_dir == tmp_path / "nats" / "jetstream"
        for private in (server.credentials_path, server.auth_path, server.state_path):
            assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
        state = json.loads(server.state_path.read_text())
        assert state == {
            "client_port": server.client_port,
            "mqtt_port": server.mqtt_port,
            "monitor_port": server.monitor_port,
        }
        assert len({server.client_port, server.mqtt_port, server.monitor_port}) == 3
        assert server.platform_password not in server.auth_path.read_text()  # only its bcrypt hash
        # The server really listens for MQTT and refuses anonymous NATS clients.
        socket.create_connection(("127.0.0.1", server.mqtt_port), 2).close()
        bus = await _platform_bus(server)
        assert bus.is_connected
        await bus.close()
        with pytest.raises(Exception, match="(?i)authorization|reset by peer"):  # refused by the callout
            await Bus.connect(server.url, name="anonymous", attempts=1)
    finally:
        await server.stop()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert running_nats_servers_using(server.config_path) == []
    assert not server.pid_path.exists()
    assert "Server Exiting" in server.log_path.read_text()


async def test_restart_keeps_jetstream_data_ports_and_password(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path)
    await server.start()
    ports = (server.client_port, server.mqtt_port, server.monitor_port)
    password = server.platform_password
    bus = await _platform_bus(server)
    await bus.ensure_stream("EVENTS", ["events.>"])
    ack = await bus.js.publish("events.door", b"opened")
    kv = await bus.kv("registry")
    await kv.put("svc.a", b"node-1")
    store = await bus.object_store("artifacts")
    blob = os.urandom(300_000)  # bigger than one object-store chunk
    await store.put("model.zip", blob)
    await bus.close()
    await server.stop()

    again = EmbeddedNats(tmp_path)  # a new instance, as after a platform restart
    await again.start()
    try:
        assert (again.client_port, again.mqtt_port, again.monitor_port) == ports
        assert again.platform_password == password
        bus = await _platform_bus(again)
        msg = await bus.js.get_msg("EVENTS", ack.seq)
        assert (msg.subject, msg.data) == ("events.door", b"opened")
        assert (await (await bus.kv("registry")).get("svc.a")).value == b"node-1"
        assert (await (await bus.object_store("artifacts")).get("model.zip")).data == blob
        await bus.close()
    finally:
        await again.stop()


async def test_taken_port_is_replaced_by_a_free_one(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path)
    await server.start()
    old_client, old_mqtt = server.client_port, server.mqtt_port
    await server.stop()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", old_client))
        squatter.listen()
        await server.start()
        try:
            assert server.client_port != old_client
            assert server.mqtt_port == old_mqtt  # the others are still free, so they are kept
            bus = await _platform_bus(server)
            await bus.close()
        finally:
            await server.stop()


async def test_start_failure_raises_with_log_tail(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path, ready_timeout=10)
    server.dir.mkdir(parents=True)
    # A user whose permissions are not a map: nats-server refuses the configuration and exits.
    server._write_auth = lambda: server.auth_path.write_text(  # type: ignore[method-assign]
        'authorization { users = [{"user": "bad", "password": "x", "permissions": 42}] }\n'
    )
    with pytest.raises(EmbeddedNatsError) as info:
        await server.start()
    text = str(info.value)
    assert "exited with code" in text and str(server.log_path) in text
    assert "permissions" in text.lower()  # the server's own complaint is quoted from the log
    assert running_nats_servers_using(server.config_path) == []


async def test_orphan_from_pid_file_is_stopped_before_start(tmp_path: Path) -> None:
    crashed = EmbeddedNats(tmp_path)
    await crashed.start()
    orphan_pid = crashed.pid
    assert orphan_pid is not None
    # A second instance on the same data dir sees a live nats-server with our config in nats.pid: an orphan.
    fresh = EmbeddedNats(tmp_path)
    await fresh.start()
    try:
        assert fresh.pid != orphan_pid
        assert crashed._proc is not None and crashed._proc.wait(5) is not None  # it was stopped
        assert [p.pid for p in running_nats_servers_using(fresh.config_path)] == [fresh.pid]
        bus = await _platform_bus(fresh)
        await bus.close()
        await crashed.stop()  # the old handle must not remove the new server's pid file
        assert int(fresh.pid_path.read_text()) == fresh.pid
    finally:
        await fresh.stop()


async def test_stale_pid_file_naming_another_process_is_ignored(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path)
    server.dir.mkdir(parents=True)
    bystander = _spawn([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        server.pid_path.write_text(f"{bystander.pid}\n")  # pid reused by an unrelated process
        await server.start()
        assert bystander.poll() is None  # not ours: left alone
        assert int(server.pid_path.read_text()) == server.pid
        await server.stop()
    finally:
        bystander.kill()
        bystander.wait()


_PARENT_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from aiot.bus import EmbeddedNats

    async def main():
        server = EmbeddedNats(Path(sys.argv[1]))
        await server.start()
        print(server.pid, flush=True)
        await asyncio.sleep(120)

    asyncio.run(main())
    """
)


async def test_sigkill_of_parent_takes_nats_server_down(tmp_path: Path) -> None:
    parent = _spawn([sys.executable, "-c", _PARENT_SCRIPT, str(tmp_path)], stdout=subprocess.PIPE)
    try:
        line = await asyncio.wait_for(asyncio.to_thread(parent.stdout.readline), 20)  # type: ignore[union-attr]
        child_pid = int(line)
        child = psutil.Process(child_pid)
        assert "nats-server" in child.name() and child.ppid() == parent.pid
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(5)
        t0 = time.monotonic()

        def gone() -> bool:
            try:
                return child.status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return True

        await wait_for(gone, 5, "nats-server to exit after its parent was SIGKILLed")
        assert time.monotonic() - t0 < 5
        assert running_nats_servers_using(tmp_path / "nats" / "nats.conf") == []
    finally:
        if parent.poll() is None:
            parent.kill()
        for proc in running_nats_servers_using(tmp_path / "nats" / "nats.conf"):
            proc.kill()


def test_a_port_the_platform_will_bind_is_never_chosen_for_nats(tmp_path: Path) -> None:
    """The API binds its port after NATS has started; a NATS port chosen as "free" must not be that one (seen in
    CI: NATS's monitor took the API's port, answered its /healthz, and the API then failed to bind). Even a port
    NATS used before, and that is free now, is given up when the platform needs it."""
    ports = [free_port() for _ in range(3)]
    (tmp_path / "nats").mkdir()
    state = {"client_port": ports[0], "mqtt_port": ports[1], "monitor_port": ports[2]}
    (tmp_path / "nats" / "state.json").write_text(json.dumps(state))
    chosen = EmbeddedNats(tmp_path, avoid_ports=frozenset({ports[2]}))._choose_ports()
    assert chosen["client_port"] == ports[0] and chosen["mqtt_port"] == ports[1]  # kept, as before
    assert chosen["monitor_port"] not in ports
