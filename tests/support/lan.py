"""Hosts for multi-host tests: network namespaces on one Linux bridge, and an L4 balancer on the host's end.

Why namespaces: each one has its own interfaces, addresses and ports, so a process started in it is reachable
only at that host's address, and "losing the host" (its link down, its processes killed) cuts exactly what a
lost machine would. The bridge is the switch between them; the host (this test process) sits on it at `.1`,
which is where the balancer in front of the API replicas and the forwarder to the machine's PostgreSQL (it
listens on 127.0.0.1 only) listen.

Needs root (or CAP_NET_ADMIN and CAP_SYS_ADMIN) for `ip netns` / `ip link`; `lan()` skips, saying so, without.
Only addresses inside the namespaces and bridge it creates are used (10.232.X.0/24).
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=20)


@dataclass
class Host:
    """One namespace on the bridge: its name, address, host-side veth and the processes started in it."""

    name: str
    ip: str
    veth: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def popen(self, argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        """Start `argv` inside this host (`ip netns exec` execs it, so the pid is the program's own)."""
        with log.open("ab") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.name, *argv], env=env, stdout=out, stderr=subprocess.STDOUT
            )
        self.procs.append(proc)
        return proc

    def pids(self) -> set[int]:
        """Every process of this host: those in its namespace and the descendants of those started in it
        (a sandboxed workload may sit in namespaces of its own)."""
        found = {int(p) for p in ip("netns", "pids", self.name, check=False).stdout.split()}
        for proc in self.procs:
            with suppress(psutil.Error):
                found |= {proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))}
        return found

    def lose(self) -> None:
        """The machine is gone: its link goes down and every process on it is SIGKILLed."""
        ip("link", "set", self.veth, "down", check=False)
        for pid in self.pids():
            with suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for proc in self.procs:
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pid in self.pids():  # workloads an agent left behind
            with suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


@dataclass
class Lan:
    """A bridge with the host at `gateway`, and the hosts added to it."""

    tag: str
    subnet: int
    bridge: str
    hosts: dict[str, Host] = field(default_factory=dict)

    @property
    def gateway(self) -> str:
        return f"10.232.{self.subnet}.1"

    def add_host(self, name: str) -> Host:
        index = len(self.hosts) + 2
        host = Host(f"aiot-{self.tag}-{name}", f"10.232.{self.subnet}.{index}", f"v{self.tag}{index}")
        ip("netns", "add", host.name)
        self.hosts[name] = host
        ip("link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", host.name)
        ip("link", "set", host.veth, "master", self.bridge, "up")
        ip("-n", host.name, "addr", "add", f"{host.ip}/24", "dev", "eth0")
        ip("-n", host.name, "link", "set", "eth0", "up")
        ip("-n", host.name, "link", "set", "lo", "up")  # workloads listen on 127.0.0.1
        return host

    def close(self) -> None:
        for host in self.hosts.values():
            host.stop()
        for host in self.hosts.values():
            ip("link", "del", host.veth, check=False)
            ip("netns", "del", host.name, check=False)
        ip("link", "del", self.bridge, check=False)


def free_subnet(prefix: str) -> int:
    """A random X with no address of this machine in `<prefix>.X.` (prefix like "10.232"): tests that run at once
    each get their own subnet."""
    used = ip("-4", "-o", "addr", "show").stdout
    for _ in range(50):
        third = random.randint(0, 255)
        if f"{prefix}.{third}." not in used:
            return third
    raise AssertionError(f"no free {prefix}.X.0 subnet")


@contextmanager
def lan() -> Iterator[Lan]:
    """A bridge 10.232.X.0/24 with the host on it; hosts are added with `add_host`; all removed afterwards."""
    if shutil.which("ip") is None:
        pytest.skip("iproute2 (`ip`) is not installed")
    tag = f"{os.getpid() % 1000:03d}{random.randint(0, 0xFFF):03x}"
    bridge = f"br{tag}"
    made = ip("link", "add", bridge, "type", "bridge", check=False)
    if made.returncode != 0:
        pytest.skip(f"`ip link add` is not permitted here ({made.stderr.strip()}): needs root or CAP_NET_ADMIN")
    network = Lan(tag, free_subnet("10.232"), bridge)
    try:
        ip("addr", "add", f"{network.gateway}/24", "dev", bridge)
        ip("link", "set", bridge, "up")
        probe = ip("netns", "add", f"aiot-{tag}-probe", check=False)
        if probe.returncode != 0:
            pytest.skip(f"`ip netns add` is not permitted here ({probe.stderr.strip()}): needs root or CAP_SYS_ADMIN")
        ip("netns", "del", f"aiot-{tag}-probe", check=False)
        with _forwarding_allowed(bridge):
            yield network
    finally:
        network.close()


@contextmanager
def _forwarding_allowed(bridge: str) -> Iterator[None]:
    """Traffic between the hosts crosses the bridge, which (with br_netfilter) passes iptables' FORWARD chain:
    a machine whose FORWARD policy is DROP (a default Docker engine sets it) would cut the hosts apart. One
    ACCEPT rule for this bridge only, removed afterwards."""
    rule = ["FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"]
    added = (
        shutil.which("iptables") is not None
        and subprocess.run(["iptables", "-I", *rule], capture_output=True, check=False).returncode == 0
    )
    try:
        yield
    finally:
        if added:
            subprocess.run(["iptables", "-D", *rule], capture_output=True, check=False)


class Balancer:
    """An L4 balancer: each connection goes to the next backend that accepts it (round robin, fail-over on a
    refused or timed-out connect), then bytes are piped both ways. What a TCP load balancer in front of
    replicas does; it runs its own event loop in a thread so the test's blocking calls do not stall it."""

    def __init__(self, host: str, port: int, backends: list[tuple[str, int]]) -> None:
        self.host, self.port, self.backends = host, port, backends
        self.connections: dict[tuple[str, int], int] = {b: 0 for b in backends}
        self._next = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"balancer-{port}", daemon=True)
        self._server: asyncio.base_events.Server | None = None

    def __enter__(self) -> Balancer:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, self.host, self.port), self._loop
        ).result(10)
        return self

    def __exit__(self, *_exc: object) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        for _ in range(len(self.backends)):
            backend = self.backends[self._next % len(self.backends)]
            self._next += 1
            try:
                opened = await asyncio.wait_for(asyncio.open_connection(*backend), timeout=1.0)
            except (OSError, TimeoutError):
                continue
            self.connections[backend] += 1
            return opened
        return None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = await self._connect()
        if upstream is None:
            writer.close()
            return
        up_reader, up_writer = upstream

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                with suppress(OSError, RuntimeError):
                    dst.close()

        with suppress(asyncio.CancelledError):
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)
