"""Shared helpers of the bench scripts: machine facts, percentiles, process sampling, JSON output, ports.

Kept tiny and free of platform imports so every script can use it; the scripts import the platform themselves.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
PYTHON = sys.executable
BIN = Path(sys.executable).parent


def machine() -> dict[str, Any]:
    """Facts that make a figure comparable: cores, load when the run started, memory, versions."""
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "memory_total_mb": round(psutil.virtual_memory().total / 2**20),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def pct(values: Iterable[float], p: float, scale: float = 1000.0, digits: int = 3) -> float | None:
    """The p-quantile (0..1) of `values` times `scale` (seconds -> ms by default); None when empty."""
    data = sorted(values)
    if not data:
        return None
    return round(scale * data[min(len(data) - 1, int(p * len(data)))], digits)


def summary(values: Iterable[float], scale: float = 1000.0) -> dict[str, float | int | None]:
    data = sorted(values)
    return {
        "n": len(data),
        "p50": pct(data, 0.5, scale),
        "p90": pct(data, 0.9, scale),
        "p99": pct(data, 0.99, scale),
        "max": pct(data, 1.0, scale),
    }


def ratio(ours: float | None, peer: float | None, digits: int = 2) -> float | None:
    if ours is None or peer is None or peer == 0:
        return None
    return round(ours / peer, digits)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Sampler:
    """CPU seconds and peak RSS of a process tree (the process and its children), sampled on demand."""

    def __init__(self, pid: int, children: bool = True) -> None:
        self.proc = psutil.Process(pid)
        self.children = children
        self.peak_rss = 0
        self._gone_cpu = 0.0
        self._last: dict[int, float] = {}
        self.start_cpu = self._cpu()

    def _procs(self) -> list[psutil.Process]:
        procs = [self.proc]
        if self.children:
            with contextlib.suppress(psutil.Error):
                procs += self.proc.children(recursive=True)
        return procs

    def _cpu(self) -> float:
        now: dict[int, float] = {}
        for p in self._procs():
            try:
                t = p.cpu_times()
                now[p.pid] = t.user + t.system
            except psutil.Error:
                continue
        for pid, cpu in self._last.items():  # children that exited keep what they used
            if pid not in now:
                self._gone_cpu += cpu
        self._last = now
        return self._gone_cpu + sum(now.values())

    def sample(self) -> None:
        rss = 0
        for p in self._procs():
            try:
                rss += p.memory_info().rss
            except psutil.Error:
                continue
        self.peak_rss = max(self.peak_rss, rss)
        self._cpu()

    def cpu(self) -> float:
        return self._cpu() - self.start_cpu

    def rss_mb(self) -> float:
        return round(self.peak_rss / 2**20, 1)


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> float:
    """Poll `url` until it answers 200; returns seconds waited. Raises with the reason on failure."""
    import httpx

    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer 200 within {timeout}s")


def stop(proc: subprocess.Popen | None, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL: only the process we started."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def exit_on_sigterm() -> None:
    """SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so each script's `finally` stops the platform and
    the servers it started instead of leaving them running in their own sessions."""
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def parser(doc: str, sizes_help: str) -> argparse.ArgumentParser:
    exit_on_sigterm()
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny run for CI (< 30 s)")
    p.add_argument("--sizes", type=str, default="", help=sizes_help)
    p.add_argument("--output", type=Path, default=None, help="also write the JSON summary here")
    return p


def sizes(text: str, default: list[Any], cast: Any = int) -> list[Any]:
    return [cast(s) for s in text.split(",") if s.strip()] or default


def emit(result: dict[str, Any], output: Path | None) -> None:
    """Print the summary; write it to `output` too. Exit status is 0: targets are data, not failures."""
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text + "\n")


def platform_creds_env(nats: Any) -> dict[str, str]:
    return {
        "AIOT_NATS_URL": nats.url,
        "AIOT_NATS_USER": nats.platform_user,
        "AIOT_NATS_PASSWORD": nats.platform_password,
    }


def write_config(path: Path, doc: dict[str, Any]) -> Path:
    """config.json the way the agent writes it (mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh)
    return path


def workload_env(config_path: Path) -> dict[str, str]:
    """The clean environment the agent gives a workload (docs/workload-contract.md)."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "PYTHONUNBUFFERED": "1",
        "AIOT_WORKLOAD_CONFIG": str(config_path),
        "PYTHONPATH": str(ROOT / "src"),
    }  # this tree's platform_sdk, not the venv's install
