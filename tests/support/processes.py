"""Run platform processes (`aiot up`, CLI commands) as real subprocesses in tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil

AIOT = str(Path(sys.executable).parent / "aiot")


def platform_env(data_dir: Path, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIOT_")}
    env.update(
        AIOT_DATA_DIR=str(data_dir),
        AIOT_PORT=str(port),
        AIOT_ADMIN_PASSWORD="admin-password-1",
        XDG_CONFIG_HOME=str(data_dir / "xdg"),
        AIOT_SERVER=f"http://127.0.0.1:{port}",
    )
    env.update(extra)
    return env


class RunningPlatform:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.proc = proc
        self.port = port
        self.log_path = log_path
        self.url = f"http://127.0.0.1:{port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"control plane exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"control plane not healthy within {timeout}s:\n{self.log()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.proc.send_signal(sig)
        self.proc.wait(timeout=20)

    def wait(self, what: str, probe: Callable[[], Any], timeout: float, every: float = 0.3) -> Any:
        """Poll `probe` until it returns something truthy (returned); on time-out fail naming `what`, the last
        value and the tail of the platform's log."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = probe()
            if last:
                return last
            time.sleep(every)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}\n{self.log()[-3000:]}")


@contextmanager
def start_platform(
    data_dir: Path, port: int, args: tuple[str, ...] = (), command: str = "up", **env: str
) -> Iterator[RunningPlatform]:
    """`aiot <command> *args` (default `aiot up`) on `data_dir`; SIGTERM (then SIGKILL) when the block ends."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / f"up-{time.monotonic_ns()}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [AIOT, command, *args], env=platform_env(data_dir, port, **env), stdout=log, stderr=subprocess.STDOUT
        )
    running = RunningPlatform(proc, port, log_path)
    try:
        yield running
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run_cli(args: list[str], env: dict[str, str], input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AIOT, *args], env=env, capture_output=True, text=True, input=input_text, timeout=60)


def serving_pid(workload_id: str) -> int | None:
    """The model server's own Python process for `workload_id` (not the bwrap sandbox wrapper around it)."""
    for proc in psutil.process_iter(["cmdline"]):
        try:
            cmdline = proc.info["cmdline"] or []
            if (
                cmdline
                and "bwrap" not in cmdline[0]
                and "platform_sdk.serving" in " ".join(cmdline)
                and workload_id in proc.environ().get("AIOT_WORKLOAD_CONFIG", "")
            ):
                return proc.pid
        except psutil.Error:
            continue
    return None
