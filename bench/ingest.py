"""Telemetry ingest: N simulated sensors at R Hz for D seconds through the platform's ingest service.

Measures, in one run on one machine:
- readings sent by the simulators vs readings stored in the AIOT_READINGS history stream (loss = difference);
- CPU seconds and peak RSS of the ingest service (`aiot service run ingest`, its own process);
- the same for a peer: a raw nats-py subscriber that only counts the same messages (the floor any ingest has to
  pay for receiving them), so `cpu_ratio` says what validation + storage cost on top.

    .venv/bin/python bench/ingest.py                 # 200 sensors, 5 Hz, 60 s (the issue's target)
    .venv/bin/python bench/ingest.py --smoke         # 20 sensors, 5 Hz, 5 s (CI)
    .venv/bin/python bench/ingest.py --sizes 50,200  # cost growth across sizes
    .venv/bin/python bench/ingest.py --flood 20000,80000 --replicas 2 --duration 60   # the issue's 20x target

`--flood RATES` sends each total rate (readings/s over `--sensors` devices, from `bench/_flood.py`, one process)
twice: once with only the raw subscriber listening (the peer), then with only the platform's ingest replicas
(`--replicas N` x `aiot service run ingest`, one queue group), so neither takes CPU from the other. It reports
readings stored in history, lost, ingest CPU per reading, and reading -> history latency (the instant ingest's
validated record reaches a subscriber on `aiot.readings.<id>` minus the reading's own timestamp), sampled on
every 10th device.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
from _common import machine, pct

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
import asyncio, os, sys, nats
async def main():
    env = os.environ
    nc = await nats.connect(env["BENCH_NATS_URL"], user=env["BENCH_NATS_USER"], password=env["BENCH_NATS_PASSWORD"])
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


def _bench_env(nats: EmbeddedNats) -> dict[str, str]:
    """The peer's and the load generator's connection, in their environment (never on a command line)."""
    return {
        **os.environ,
        "BENCH_NATS_URL": nats.url,
        "BENCH_NATS_USER": nats.platform_user,
        "BENCH_NATS_PASSWORD": nats.platform_password,
    }


def _service_env(data: Path, url: str, nats: EmbeddedNats) -> dict[str, str]:
    """What `aiot service run ingest` needs: the data dir, the database and the embedded server's platform user."""
    return {
        **os.environ,
        "AIOT_DATA_DIR": str(data),
        "AIOT_DATABASE_URL": url,
        "AIOT_NATS_URL": nats.url,
        "AIOT_NATS_USER": nats.platform_user,
        "AIOT_NATS_PASSWORD": nats.platform_password,
        "AIOT_LOG_LEVEL": "WARNING",
    }


async def _until_stream(bus: Bus) -> None:
    """Wait until the ingest service has created its stream."""
    for _ in range(100):
        try:
            await bus.js.stream_info(READINGS_STREAM)
            return
        except Exception:  # noqa: BLE001
            await asyncio.sleep(0.2)


def _database(data: Path, sensors: int) -> tuple[str, Database, list[str]]:
    """A fresh SQLite platform database in `data` with `sensors` thermometers: (url, database, device ids)."""
    url = f"sqlite:///{data / 'aiot.db'}"
    migrate.upgrade(url)
    db = Database(url)
    return url, db, _register(db, sensors)


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
        url, db, device_ids = _database(data, sensors)
        nats = EmbeddedNats(data)
        await nats.start()
        env = _service_env(data, url, nats)
        ingest = subprocess.Popen(
            [str(Path(sys.executable).parent / "aiot"), "service", "run", "ingest"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(data / "ingest.log").open("wb"),
        )
        peer = subprocess.Popen(
            [sys.executable, "-c", PEER],
            env=_bench_env(nats),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        bus = await Bus.connect(
            nats.url, user=nats.platform_user, password=nats.platform_password, name="bench", attempts=5
        )
        try:
            assert peer.stdout is not None and peer.stdout.readline().strip() == "ready"
            await _until_stream(bus)
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


async def _until_history(bus: Bus, sent: int, timeout: float) -> int:
    """Stored readings once every sent one is stored or `timeout` passes."""
    deadline, stored = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        stored = (await bus.js.stream_info(READINGS_STREAM)).state.messages
        if stored >= sent:
            break
        await asyncio.sleep(0.5)
    return stored


async def run_flood(sensors: int, rate: float, duration: float, replicas: int) -> dict:
    """One `--flood` rate: the raw subscriber alone, then the ingest replicas alone (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="aiot-bench-") as tmp:
        data = Path(tmp)
        url, db, device_ids = _database(data, sensors)
        devices_file = data / "devices.txt"
        devices_file.write_text("\n".join(device_ids))
        nats = EmbeddedNats(data)
        await nats.start()
        flood_cmd = [sys.executable, str(ROOT / "bench" / "_flood.py"), str(devices_file), str(rate)]
        env = _service_env(data, url, nats)
        bus = await Bus.connect(
            nats.url, user=nats.platform_user, password=nats.platform_password, name="bench", attempts=5
        )
        procs: list[subprocess.Popen] = []
        try:
            # 1. the peer alone
            peer = subprocess.Popen([sys.executable, "-c", PEER], env=_bench_env(nats), stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True)  # fmt: skip
            procs.append(peer)
            assert peer.stdout is not None and peer.stdin is not None and peer.stdout.readline().strip() == "ready"
            peer_sampler = Sampler(peer.pid)
            peer_flood = json.loads(subprocess.run([*flood_cmd, str(duration)], env=_bench_env(nats),
                                                   capture_output=True, text=True, check=True).stdout)  # fmt: skip
            await asyncio.sleep(1.0)
            peer.stdin.write("done\n")
            peer.stdin.flush()
            peer_count = int(peer.stdout.readline().strip())
            peer_cpu = peer_sampler.cpu()
            peer.wait(10)

            # 2. the ingest replicas alone
            log = (data / "ingest.log").open("wb")
            ingests = [
                subprocess.Popen(
                    [str(Path(sys.executable).parent / "aiot"), "service", "run", "ingest"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                )  # fmt: skip
                for _ in range(replicas)
            ]
            procs.extend(ingests)
            await _until_stream(bus)
            await _until_ingest_subscribed(nats.monitor_url)
            await asyncio.sleep(1.0)
            latencies: list[float] = []

            async def probe(msg: Any) -> None:
                arrived = time.time()
                ts = json.loads(msg.data)["ts"]
                latencies.append(arrived - datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp())

            for device_id in device_ids[::10]:
                await bus.nc.subscribe(subjects.readings_subject(device_id), cb=probe)
            samplers = [Sampler(p.pid) for p in ingests]
            flood = await asyncio.create_subprocess_exec(
                *flood_cmd, str(duration), env=_bench_env(nats), stdout=subprocess.PIPE
            )
            flooded = json.loads((await flood.communicate())[0])
            stored = await _until_history(bus, flooded["sent"], 30.0)
            ingest_cpu = sum(s.cpu() for s in samplers)
            sent = flooded["sent"]
            return {
                "sensors": sensors,
                "rate_per_s": rate,
                "replicas": replicas,
                "duration_s": flooded["elapsed_s"],
                "generator_behind_max_s": flooded["behind_max_s"],
                "sent": sent,
                "stored_in_history": stored,
                "lost": sent - stored,
                "latency_ms": {
                    "p50": pct(latencies, 0.5, digits=1),
                    "p99": pct(latencies, 0.99, digits=1),
                    "max": pct(latencies, 1.0, digits=1),
                    "samples": len(latencies),
                },  # fmt: skip
                "ingest_cpu_s": round(ingest_cpu, 2),
                "ingest_cores_busy": round(ingest_cpu / flooded["elapsed_s"], 2),
                "ingest_cpu_us_per_reading": round(1e6 * ingest_cpu / max(sent, 1), 1),
                "peer_sent": peer_flood["sent"],
                "peer_received": peer_count,
                "peer_cpu_us_per_reading": round(1e6 * peer_cpu / max(peer_flood["sent"], 1), 1),
                "cpu_ratio_ingest_over_peer": round(ingest_cpu / max(peer_cpu, 1e-6), 2),
                "load_avg_1m_after": round(os.getloadavg()[0], 2),
            }
        finally:
            await bus.close()
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(15)
                    except subprocess.TimeoutExpired:  # an ingest replica still working through a backlog
                        proc.kill()
                        proc.wait()
            await nats.stop()
            db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sensors", type=int, default=200)
    parser.add_argument("--rate", type=float, default=5.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--sizes", type=str, default="", help="comma-separated sensor counts for cost growth")
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI")
    parser.add_argument("--flood", type=str, default="", help="comma-separated total readings/s (see above)")
    parser.add_argument("--replicas", type=int, default=2, help="ingest replicas in --flood runs")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    if args.flood:
        floods = []
        for rate in args.flood.split(","):
            floods.append(asyncio.run(run_flood(args.sensors, float(rate), args.duration, args.replicas)))
            print(json.dumps(floods[-1]), file=sys.stderr, flush=True)  # each rate as it is done
        result = {
            "benchmark": "ingest_flood",
            "target": "80,000 readings/s for 60 s, 0 lost, p99 reading -> history < 250 ms (issue 18)",
            "machine": machine(),
            "runs": floods,
            "ok": all(r["lost"] == 0 for r in floods),
        }
    else:
        if args.smoke:
            args.sensors, args.duration = 20, 5.0
        sizes = [int(s) for s in args.sizes.split(",") if s] or [args.sensors]
        runs = [asyncio.run(run_once(n, args.rate, args.duration)) for n in sizes]
        result = {
            "benchmark": "ingest",
            "target": "no reading lost; report ingest CPU",
            "machine": machine(),
            "runs": runs,
            "ok": all(r["lost"] == 0 for r in runs),
        }
        if args.smoke:  # the flood path too, tiny, so it never rots
            result["flood"] = asyncio.run(run_flood(20, 1000.0, 2.0, 1))
            result["ok"] = result["ok"] and result["flood"]["lost"] == 0
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
