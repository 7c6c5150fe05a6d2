"""A real platform for the benches: `aiot up --nodes N` in a temp data dir, logged in as the admin, with the
few API calls the benches need (device types, a location, devices, packages, app instances)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
from _common import BIN, EXAMPLES, free_port

ADMIN_PASSWORD = "bench-admin-password-1"


class Cluster:
    """`aiot up` as a subprocess; `close()` stops it (SIGTERM, then SIGKILL) and only it."""

    def __init__(self, data_dir: Path, nodes: int, **env: str) -> None:
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        base = {k: v for k, v in os.environ.items() if not k.startswith("AIOT_")}
        base.update(
            AIOT_DATA_DIR=str(data_dir),
            AIOT_PORT=str(self.port),
            AIOT_ADMIN_PASSWORD=ADMIN_PASSWORD,
            AIOT_LOG_LEVEL="WARNING",
            XDG_CONFIG_HOME=str(data_dir / "xdg"),
            **env,
        )
        self.log_path = data_dir / "up.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "aiot"), "up", "--nodes", str(nodes)],
                env=base,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started = time.monotonic()
        self.token = ""
        self.client = httpx.Client(base_url=f"{self.url}/api/v1", timeout=120)

    def wait_ready(self, nodes: int, timeout: float = 90) -> float:
        """Healthy, logged in, `nodes` nodes ready; returns seconds since start."""
        self.wait("control plane healthy", self._healthy, timeout)
        r = httpx.post(f"{self.url}/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
        r.raise_for_status()
        self.token = r.json()["token"]
        self.client.headers["Authorization"] = f"Bearer {self.token}"
        self.wait(
            f"{nodes} ready nodes",
            lambda: len([n for n in self.get("/nodes") if n["status"] == "ready"]) >= nodes,
            timeout,
        )
        return time.monotonic() - self.started

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"aiot up exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str) -> Any:
        r = self.client.get(path)
        if r.status_code != 200:
            raise RuntimeError(f"GET {path}: {r.status_code} {r.text[:500]}")
        return r.json()

    def post(self, path: str, ok: tuple[int, ...] = (200, 201), **kwargs: Any) -> Any:
        r = self.client.post(path, **kwargs)
        if r.status_code not in ok:
            raise RuntimeError(f"POST {path}: {r.status_code} {r.text[:500]}")
        return r.json() if r.content else None

    def wait(self, what: str, probe: Callable[[], Any], timeout: float, every: float = 0.05) -> Any:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = probe()
            if last:
                return last
            time.sleep(every)
        raise RuntimeError(f"timed out after {timeout}s waiting for {what}; last: {last}")

    # ------------------------------------------------------------------ set-up helpers

    def device_types(self, *names: str) -> None:
        for name in names:
            self.post(
                "/device-types",
                content=(EXAMPLES / "device-types" / f"{name}.json").read_bytes(),
                headers={"Content-Type": "application/json"},
            )

    def location(self, name: str) -> dict:
        return self.post("/locations", json={"name": name, "kind": "school", "timezone": "UTC"})

    def device(self, name: str, device_type: str, location: str) -> dict:
        return self.post("/devices", json={"name": name, "device_type": device_type, "location": location})

    def push(self, kind: str, folder: Path) -> dict:
        from aiot.artifacts.packing import zip_folder

        archive = zip_folder(folder, self.data_dir.parent / f"{folder.name}-{time.monotonic_ns()}.zip")
        return self.post(f"/{kind}", content=archive.read_bytes(), headers={"Content-Type": "application/zip"})

    def instance(self, app: str, location: str, **settings: Any) -> dict:
        return self.post("/instances", json={"app": app, "location": location, "settings": settings})

    def nats(self) -> dict:
        state = json.loads((self.data_dir / "nats" / "state.json").read_text())
        creds = json.loads((self.data_dir / "nats" / "platform-credentials.json").read_text())
        return {
            "url": f"nats://127.0.0.1:{state['client_port']}",
            "user": "aiot-platform",
            "password": creds.get("password"),
        }

    # ------------------------------------------------------------------ processes

    def agent_pids(self) -> dict[str, int]:
        """Node name -> pid of this platform's `aiot node join` processes."""
        found = {}
        for proc in psutil.process_iter(["cmdline"]):
            cmd = proc.info["cmdline"] or []
            if "join" in cmd and "--name" in cmd and str(self.data_dir) in " ".join(cmd):
                found[cmd[cmd.index("--name") + 1]] = proc.pid
        return found

    def close(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def workload_pid(workload_id: str, module: str = "platform_sdk") -> int | None:
    """Pid of the workload's own Python process (serving wrapper or app runner) of `workload_id`, if one runs.
    The bubblewrap launcher has the same command line and environment; it is skipped, since signalling it
    is not signalling the workload (SIGSTOP of bwrap leaves the app beating)."""
    for proc in psutil.process_iter(["cmdline"]):
        try:
            cmd = proc.info["cmdline"] or []
            if cmd and Path(cmd[0]).name == "bwrap":
                continue
            if module in " ".join(cmd) and workload_id in proc.environ().get("AIOT_WORKLOAD_CONFIG", ""):
                return proc.pid
        except psutil.Error:
            continue
    return None
