"""Telemetry ingest: N simulated sensors at R Hz for D seconds through the platform's ingest service.

Measures, in one run on one machine:
- readings sent by the simulators vs readings stored in the AIOT_READINGS history stream (loss = difference);
- CPU seconds and peak RSS of the ingest service (`aiot service run ingest`, its own process);
- the same for a peer: a raw nats-py subscriber that only counts the same messages (the floor any ingest has to
  pay for receiving them), so `cpu_ratio` says what validation + storage cost on top.

    .venv/bin/python bench/ingest.py                 # 200 sensors, 5 Hz, 60 s (the issue's target)
    .venv/bin/python bench/ingest.py --smoke         # 20 sensors, 5 Hz, 5 s (CI)
    .venv/bin/python bench/ingest.py --sizes 50,200  # cost growth across sizes
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from aiot.bus.client import Bus
from aiot.bus.embedded import EmbeddedNats
from aiot.devices import inventory, subjects
from aiot.devices.ingest import READINGS_STREAM
from aiot.devices.simulators.links import Connection
from aiot.devices.simulators.runner import SimDevice, run_simulators
from aiot.launch.catalog import build_services  # noqa: F401 - registers device users
from aiot.store import migrate
from aiot.store.catalog import DeviceKind, DeviceType
from aiot.store.engine import Database

ROOT = Path(__file__).resolve().parents[1]
PEER = """
import asyncio, sys, nats
async def main():
    nc = await nats.connect(sys.argv[1], user=sys.argv[2], password=sys.argv[3])
    count = 0
    async def cb(msg):
        nonlocal count
        count += 1
    await nc.subscribe("aiot.dev.*.data", cb=cb)
    await nc.flush()
    print("ready", flush=True)
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    print(count, flush=True)
    await nc.close()
asyncio.run(main())
"""


def _register(db: Database, sensors: int) -> list[str]:
    definition = json.loads((ROOT / "examples/device-types/temperature.json").read_text())
    with db.session() as session:
        dtype = DeviceType(name="temperature", kind=DeviceKind.sensor, definition=definition, sha256="bench")
        session.add(dtype)
        inventory.create_location(session, name="bench-site", timezone="UTC")
        return [
            inventory.create_device(session, name=f"t{i}", device_type="temperature", location="bench-site")[0].id
            for i in range(sensors)
        ]


class Sampler:
    """CPU seconds and peak RSS of one process, sampled while the load runs."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.start_cpu = self._cpu()
        self.peak_rss = 0

    def _cpu(self) -> float:
        times = self.proc.cpu_times()
        return times.user + times.system

    def sample(self) -> None:
        self.peak_rss = max(self.peak_rss, self.proc.memory_info().rss)

    def cpu(self) -> float:
        return self._cpu() - self.start_cpu


async def _until_ingest_subscribed(monitor_url: str, timeout: float = 60.0) -> None:
    """Wait until the ingest service subscribes to device messages (the server's /subsz lists it): it creates
    its stream first, and on a loaded machine its subscription can follow seconds later."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2.0) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                doc = (await client.get(f"{monitor_url}/subsz", params={"subs": 1})).json()
                if any(
                    sub.get("subject") == subjects.ALL_DEVICE_MESSAGES for sub in doc.get("subscriptions_list") or []
                ):
                    return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"the ingest service did not subscribe to {subjects.ALL_DEVICE_MESSAGES} in {timeout:g}s")


async def run_once(sensors: int, rate: float, duration: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="aiot-bench-") as tmp:
        data = Path(tmp)
        url = f"sqlite:///{data / 'aiot.db'}"
        migrate.upgrade(url)
        db = Database(url)
        device_ids = _register(db, sensors)
        nats = EmbeddedNats(data)
        await nats.start()
        env = {
            **os.environ,
            "AIOT_DATA_DIR": str(data),
            "AIOT_DATABASE_URL": url,
            "AIOT_NATS_URL": nats.url,
            "AIOT_NATS_USER": nats.platform_user,
            "AIOT_NATS_PASSWORD": nats.platform_password,
            "AIOT_LOG_LEVEL": "WARNING",
        }
        ingest = subprocess.Popen(
            [str(Path(sys.executable).parent / "aiot"), "service", "run", "ingest"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(data / "ingest.log").open("wb"),
        )
        peer = subprocess.Popen(
            [sys.executable, "-c", PEER, nats.url, nats.platform_user, nats.platform_password],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        bus = await Bus.connect(
            nats.url, user=nats.platform_user, password=nats.platform_password, name="bench", attempts=5
        )
        try:
            assert peer.stdout is not None and peer.stdout.readline().strip() == "ready"
            for _ in range(100):  # wait until the ingest service has created its stream
                try:
                    await bus.js.stream_info(READINGS_STREAM)
                    break
                except Exception:  # noqa: BLE001
                    await asyncio.sleep(0.2)
            await _until_ingest_subscribed(nats.monitor_url)  # readings sent before that reach no one
            await asyncio.sleep(0.5)
            samplers = {"ingest": Sampler(ingest.pid), "peer_raw_subscriber": Sampler(peer.pid)}
            connection = Connection(nats_url=nats.url, username=nats.platform_user, password=nats.platform_password)
            sims = [SimDevice(device_id=d, model="temperature", options={"rate": rate}) for d in device_ids]
            stop = asyncio.Event()

            async def sample() -> None:
                while not stop.is_set():
                    for s in samplers.values():
                        s.sample()
                    await asyncio.sleep(0.5)

            sampler_task = asyncio.create_task(sample())
            started = time.perf_counter()
            runner = await run_simulators(sims, connection, duration=duration)
            elapsed = time.perf_counter() - started
            sent = sum(runner.sent.values())
            deadline = time.monotonic() + 30
            stored = 0
            while time.monotonic() < deadline:
                stored = (await bus.js.stream_info(READINGS_STREAM)).state.messages
                if stored >= sent:
                    break
                await asyncio.sleep(0.5)
            await asyncio.sleep(1.0)
            stop.set()
            await sampler_task
            assert peer.stdin is not None
            peer.stdin.write("done\n")
            peer.stdin.flush()
            peer_count = int(peer.stdout.readline().strip())
            cpu = {name: s.cpu() for name, s in samplers.items()}
            return {
                "sensors": sensors,
                "rate_hz": rate,
                "duration_s": round(elapsed, 2),
                "sent": sent,
                "stored_in_history": stored,
                "lost": sent - stored,
                "peer_received": peer_count,
                "ingest_cpu_s": round(cpu["ingest"], 3),
                "peer_cpu_s": round(cpu["peer_raw_subscriber"], 3),
                "ingest_cpu_percent_of_core": round(100 * cpu["ingest"] / elapsed, 1),
                "cpu_ratio_ingest_over_peer": round(cpu["ingest"] / max(cpu["peer_raw_subscriber"], 1e-6), 2),
                "ingest_peak_rss_mb": round(samplers["ingest"].peak_rss / 2**20, 1),
                "ingest_cpu_us_per_reading": round(1e6 * cpu["ingest"] / max(sent, 1), 1),
            }
        finally:
            await bus.close()
            for proc in (ingest, peer):
                proc.terminate()
                proc.wait(10)
            await nats.stop()
            db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sensors", type=int, default=200)
    parser.add_argument("--rate", type=float, default=5.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--sizes", type=str, default="", help="comma-separated sensor counts for cost growth")
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    if args.smoke:
        args.sensors, args.duration = 20, 5.0
    sizes = [int(s) for s in args.sizes.split(",") if s] or [args.sensors]
    runs = [asyncio.run(run_once(n, args.rate, args.duration)) for n in sizes]
    result = {
        "benchmark": "ingest",
        "target": "no reading lost; report ingest CPU",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "runs": runs,
        "ok": all(r["lost"] == 0 for r in runs),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
