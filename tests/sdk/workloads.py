"""Run workloads the way the node agent does: a config.json (mode 0600), AIOT_WORKLOAD_CONFIG, a clean
environment, `python -m platform_sdk.serving` / `platform_sdk.app_runner`, stdout/stderr captured."""

from __future__ import annotations

import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from .harness import EXAMPLES, device_type

PYTHON = sys.executable
SRC = Path(__file__).resolve().parents[2] / "src"


def model_token(model_id: str) -> str:
    """The token these tests' replicas of `model_id` require (the platform derives one per model)."""
    return f"test-token-{model_id}"


def model_auth(model_id: str) -> dict[str, str]:
    """Headers of a caller holding the model's token."""
    return {"Authorization": f"Bearer {model_token(model_id)}"}


def binding(model_id: str, name: str, version: str = "1.0.0") -> dict[str, str]:
    """A `models.<alias>` entry of an app's config, with the model's token as the platform gives it."""
    return {"model_id": model_id, "name": name, "version": version, "token": model_token(model_id)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path: Path, doc: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh, indent=2)
    return path


def base_config(
    workload_id: str,
    kind: str,
    nats_url: str,
    password: str,
    workdir: Path,
    *,
    interval: float = 0.25,
    hang_after: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    doc = {
        "workload_id": workload_id,
        "kind": kind,
        "generation": 1,
        "node_id": "nod_test",
        "nats": {"servers": [nats_url], "user": workload_id, "password": password},
        "heartbeat": {
            "file": str(workdir / "heartbeat"),
            "interval": interval,
            "subject": f"aiot.hb.{workload_id}",
        },
        "log_subject": f"aiot.logs.{workload_id}",
    }
    if hang_after is not None:
        doc["heartbeat"]["hang_after"] = hang_after
    doc.update(extra)
    return doc


def bindings(**aliases: list[str]) -> dict[str, list[dict[str, Any]]]:
    from .harness import DEVICES

    return {
        alias: [{"device_id": d, "device_type": device_type(DEVICES[d])} for d in ids] for alias, ids in aliases.items()
    }


def clean_env(config_path: Path) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "AIOT_WORKLOAD_CONFIG": str(config_path),
        "PYTHONPATH": str(SRC),  # this tree's platform_sdk, not whichever checkout the venv was installed from
    }
    return env


class Proc:
    """A workload process with its output lines collected in a queue (and kept in `lines`)."""

    def __init__(self, args: list[str], config_path: Path, cwd: Path, stdin: bool = False) -> None:
        self.popen = subprocess.Popen(
            args,
            cwd=cwd,
            env=clean_env(config_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        self.lines: list[str] = []
        self.queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line.rstrip("\n"))
            self.queue.put(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def next_json(self, timeout: float, predicate: Any = None) -> dict[str, Any]:
        """The next stdout line that is a JSON object (matching `predicate`), else AssertionError."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no matching JSON line within {timeout}s; output:\n{self.output()[-3000:]}")
            try:
                line = self.queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line.startswith("{"):
                try:
                    doc = json.loads(line)
                except ValueError:
                    continue
                if predicate is None or predicate(doc):
                    return doc

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


class Driver(Proc):
    """tests/sdk/driver.py: runs one JSON command per stdin line with platform_sdk, answers on stdout."""

    def ask(self, op: str, timeout: float = 20.0, **args: Any) -> dict[str, Any]:
        self.send(op, **args)
        return self.next_json(timeout, lambda d: "ok" in d)

    def send(self, op: str, **args: Any) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.popen.stdin.flush()


def copy_package(name: str, kind: str, dest: Path) -> Path:
    target = dest / name
    shutil.copytree(EXAMPLES / kind / name, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def start_model(platform: Any, workdir: Path, workload_id: str, model_id: str, package: str) -> tuple[Proc, str]:
    workdir.mkdir(parents=True, exist_ok=True)
    pkg = copy_package(package, "models", workdir)
    manifest = json.loads((pkg / "model.json").read_text())
    port = free_port()
    cfg = base_config(
        workload_id,
        "model",
        platform.nats.url,
        platform.passwords[workload_id],
        workdir,
        package={
            "id": model_id,
            "name": manifest["name"],
            "version": manifest["version"],
            "manifest": manifest,
        },
        package_dir=str(pkg),
        serve={
            "host": "127.0.0.1",
            "port": port,
            "public_url": f"http://127.0.0.1:{port}",
            "token": model_token(model_id),
        },
    )
    path = write_config(workdir / "config.json", cfg)
    return Proc([PYTHON, "-m", "platform_sdk.serving"], path, pkg), f"http://127.0.0.1:{port}"


def wait_healthy(proc: Proc, url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise AssertionError(f"model server exited with {proc.popen.returncode}:\n{proc.output()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"model server at {url} not healthy within {timeout}s:\n{proc.output()}")


def start_app(
    platform: Any,
    workdir: Path,
    workload_id: str,
    package_dir: Path,
    manifest: dict[str, Any],
    *,
    interval: float = 0.25,
    hang_after: float | None = None,
    **extra: Any,
) -> Proc:
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = base_config(
        workload_id,
        "app",
        platform.nats.url,
        platform.passwords[workload_id],
        workdir,
        interval=interval,
        hang_after=hang_after,
        package={
            "id": "app_test",
            "name": manifest["name"],
            "version": manifest["version"],
            "manifest": manifest,
        },
        package_dir=str(package_dir),
        app_instance_id=f"ins_{workload_id}",
        **extra,
    )
    path = write_config(workdir / "config.json", cfg)
    return Proc([PYTHON, "-m", "platform_sdk.app_runner"], path, package_dir)
