"""Telemetry loop: sensor reading -> app callback -> controller command -> controller state.

Ours (through the platform): a simulated thermometer publishes on `aiot.dev.<id>.data`; the ingest service
(`aiot service run ingest`, its own process) validates it and republishes it on `aiot.readings.<id>`; an app
(`python -m platform_sdk.app_runner`, a real app package) gets it in its `@on_reading` callback and calls
`controller("display").send("show", text=...)`, which publishes the command and waits for the acknowledged
state; a simulated display controller (its own process) answers on `aiot.dev.<id>.state`.

Peer (the limit): the same loop written with raw nats-py and no platform: one process subscribes to the raw
device subject, publishes the same command and waits for the same acknowledgement, one reading at a time (as
the SDK's `run()` does). Same device simulator, same controller process.

Latency = arrival of the controller's state message at the benchmark minus the reading's timestamp (both taken
on this machine's wall clock). Loss = readings sent minus distinct acknowledged states after a drain, minus the
readings the app coalesced by its declared policy (`--delivery latest` in its app.json: while a callback runs,
only each sensor's newest reading waits; the app reports its count with every command).

    .venv/bin/python bench/telemetry.py                     # rates 1000, 2000, 4000 readings/s, 10 s each
    .venv/bin/python bench/telemetry.py --smoke             # 200 readings/s for 2 s
    .venv/bin/python bench/telemetry.py --sizes 500,1000    # readings/s (cost growth with rate)
    .venv/bin/python bench/telemetry.py --delivery latest   # the probe app declares delivery "latest"
    .venv/bin/python bench/telemetry.py --commands one-way  # the callbacks send one-way commands (send_nowait)

Targets (issue 8): p50 < 5 ms and p99 < 25 ms at 1,000 readings/s; report the highest rate with no loss.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import (
    BIN,
    EXAMPLES,
    PYTHON,
    Sampler,
    emit,
    machine,
    parser,
    ratio,
    sizes,
    stop,
    summary,
    workload_env,
    write_config,
)

from aiot.bus.client import Bus
from aiot.bus.codec import encode_reading
from aiot.bus.embedded import EmbeddedNats
from aiot.devices import inventory
from aiot.devices.ingest import READINGS_STREAM
from aiot.launch.catalog import build_services  # noqa: F401 - registers device users
from aiot.store import migrate
from aiot.store.catalog import DeviceKind, DeviceType
from aiot.store.engine import Database

SENSORS = 10
APP = """
from platform_sdk import controller, delivery_stats, on_reading, run

display = controller("display")


@on_reading("sensor")
def forward(reading):
    coalesced = delivery_stats()["coalesced"]
    display.SEND("show", text=f"{reading.device_id} {reading.ts.isoformat()} {coalesced}")


def main():
    run()
"""
CONTROLLER = """
import asyncio, sys
import nats
from aiot.bus.codec import decode_command, encode_state

async def main():
    nc = await nats.connect(sys.argv[1], user=sys.argv[2], password=sys.argv[3])
    subject = f"aiot.dev.{sys.argv[4]}.state"

    async def on_cmd(msg):
        cmd = decode_command(msg.data)
        await nc.publish(subject, encode_state({"text": cmd.args.get("text", ""), "level": "info"},
                                                cmd_id=cmd.cmd_id))

    await nc.subscribe(f"aiot.dev.{sys.argv[4]}.cmd", cb=on_cmd)
    await nc.flush()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await nc.drain()

asyncio.run(main())
"""
PEER = """
import asyncio, json, sys, uuid
from datetime import datetime, timezone
import nats

async def main():
    nc = await nats.connect(sys.argv[1], user=sys.argv[2], password=sys.argv[3])
    display, one_way = sys.argv[4], sys.argv[5] == "one-way"
    queue, waiting = asyncio.Queue(), {}

    async def on_data(msg):
        queue.put_nowait(msg)

    async def on_state(msg):
        doc = json.loads(msg.data)
        fut = waiting.pop(doc.get("cmd_id"), None)
        if fut is not None and not fut.done():
            fut.set_result(doc["state"])

    await nc.subscribe(f"aiot.dev.{display}.state", cb=on_state)
    await nc.subscribe("aiot.dev.*.data", cb=on_data)
    await nc.flush()
    print("ready", flush=True)

    async def loop():
        while True:
            msg = await queue.get()
            device = msg.subject.split(".")[2]
            if device == display:
                continue
            reading = json.loads(msg.data)
            cmd_id = uuid.uuid4().hex
            fut = asyncio.get_running_loop().create_future()
            waiting[cmd_id] = fut
            body = {"cmd_id": cmd_id, "command": "show", "args": {"text": f"{device} {reading['ts']}"},
                    "ts": datetime.now(timezone.utc).isoformat()}
            await nc.publish(f"aiot.dev.{display}.cmd", json.dumps(body).encode())
            if one_way:  # the acknowledgement still comes (the benchmark times it), nobody waits for it here
                waiting.pop(cmd_id, None)
                continue
            try:
                await asyncio.wait_for(fut, 5.0)
            except asyncio.TimeoutError:
                waiting.pop(cmd_id, None)

    task = asyncio.create_task(loop())
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    task.cancel()
    await nc.close()

asyncio.run(main())
"""


def _register(db: Database, sensors: int) -> tuple[list[str], str, dict, dict]:
    temperature = json.loads((EXAMPLES / "device-types/temperature.json").read_text())
    display = json.loads((EXAMPLES / "device-types/display.json").read_text())
    with db.session() as session:
        session.add(DeviceType(name="temperature", kind=DeviceKind.sensor, definition=temperature, sha256="b"))
        session.add(DeviceType(name="display", kind=DeviceKind.controller, definition=display, sha256="b"))
        inventory.create_location(session, name="bench-site", timezone="UTC")
        ids = [
            inventory.create_device(session, name=f"t{i}", device_type="temperature", location="bench-site")[0].id
            for i in range(sensors)
        ]
        panel = inventory.create_device(session, name="panel", device_type="display", location="bench-site")[0].id
    return ids, panel, temperature, display


class Probe:
    """Publishes readings at a rate and times the controller's acknowledged states."""

    def __init__(self, bus: Bus, sensors: list[str], display: str) -> None:
        self.bus, self.sensors, self.display = bus, sensors, display
        self.latencies: list[float] = []
        self.seen: set[str] = set()
        self.measure_from = 0.0
        self.first = asyncio.Event()
        self.coalesced = 0  # the app's count of readings coalesced by a "latest" policy (0 for the peer)
        self.hops: list[float] = []  # reading -> its validated record on aiot.readings.<id> (ours only)

    async def attach(self) -> None:
        async def on_state(msg: Any) -> None:
            now = time.time()
            doc = json.loads(msg.data)
            text = (doc.get("state") or {}).get("text", "")
            parts = text.split(" ")
            if len(parts) < 2:
                return
            sent = datetime.fromisoformat(parts[1]).timestamp()
            if len(parts) > 2:
                self.coalesced = max(self.coalesced, int(parts[2]))
            self.first.set()
            if sent >= self.measure_from and text not in self.seen:
                self.seen.add(text)
                self.latencies.append(now - sent)

        await self.bus.subscribe(f"aiot.dev.{self.display}.state", on_state)
        await self.bus.flush()

    async def attach_readings(self) -> None:
        """Also time the first hop: a reading's validated record arriving from ingest (where the app gets it)."""

        async def on_record(msg: Any) -> None:
            now = time.time()
            sent = datetime.fromisoformat(json.loads(msg.data)["ts"].replace("Z", "+00:00")).timestamp()
            if sent >= self.measure_from:
                self.hops.append(now - sent)

        await self.bus.subscribe("aiot.readings.*", on_record)
        await self.bus.flush()

    async def publish(self, rate: float, seconds: float) -> int:
        """Send `rate` readings/s for `seconds`, round-robin over the sensors; returns how many were sent."""
        sent = 0
        start = time.perf_counter()
        while True:
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                break
            due = int(rate * elapsed) + 1
            while sent < due:
                device = self.sensors[sent % len(self.sensors)]
                await self.bus.nc.publish(
                    f"aiot.dev.{device}.data",
                    encode_reading({"temperature": 20.0 + (sent % 50) / 10}, ts=datetime.now(UTC)),
                )
                sent += 1
            await asyncio.sleep(0.002)
        return sent

    async def warm_up(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.first.is_set():
            if time.monotonic() > deadline:
                raise RuntimeError("no acknowledged state within the warm-up: the loop is not working")
            await self.publish(20, 0.25)
        await asyncio.sleep(0.5)

    async def measure(self, rate: float, seconds: float) -> dict[str, Any]:
        self.latencies, self.seen, self.hops = [], set(), []
        await asyncio.sleep(0.5)  # the states of earlier readings are in
        coalesced_before = self.coalesced
        self.measure_from = time.time()
        started = time.perf_counter()
        sent = await self.publish(rate, seconds)
        elapsed = time.perf_counter() - started
        last, quiet_since = -1, time.monotonic()
        while time.monotonic() - quiet_since < 2.0 and len(self.seen) < sent:  # drain
            if len(self.seen) != last:
                last, quiet_since = len(self.seen), time.monotonic()
            await asyncio.sleep(0.1)
        s = summary(self.latencies)
        hop = summary(self.hops) if self.hops else None
        coalesced = self.coalesced - coalesced_before
        return {
            "rate": rate,
            "seconds": round(elapsed, 2),
            "sent": sent,
            "acknowledged": len(self.seen),
            "coalesced_by_policy": coalesced,
            "lost": sent - len(self.seen) - coalesced,
            "achieved_rate": round(sent / elapsed, 1),
            "p50_ms": s["p50"],
            "p90_ms": s["p90"],
            "p99_ms": s["p99"],
            "max_ms": s["max"],
            "ingest_hop_p50_ms": hop["p50"] if hop else None,
            "ingest_hop_p99_ms": hop["p99"] if hop else None,
        }


async def run_side(
    side: str, rates: list[float], seconds: float, tmp: Path, delivery: str = "every", commands: str = "wait"
) -> dict[str, Any]:
    work = tmp / side
    work.mkdir()
    url = f"sqlite:///{work / 'aiot.db'}"
    migrate.upgrade(url)
    db = Database(url)
    sensor_ids, display_id, temperature, display = _register(db, SENSORS)
    nats = EmbeddedNats(work / "nats")
    await nats.start()
    creds = [nats.url, nats.platform_user, nats.platform_password]
    procs: dict[str, subprocess.Popen] = {}
    bus = None
    try:
        procs["controller"] = subprocess.Popen(
            [PYTHON, "-c", CONTROLLER, *creds, display_id], text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        if side == "ours":
            env = {
                **os.environ,
                "AIOT_DATA_DIR": str(work),
                "AIOT_DATABASE_URL": url,
                "AIOT_NATS_URL": nats.url,
                "AIOT_NATS_USER": nats.platform_user,
                "AIOT_NATS_PASSWORD": nats.platform_password,
                "AIOT_LOG_LEVEL": "WARNING",
            }
            procs["ingest"] = subprocess.Popen(
                [str(BIN / "aiot"), "service", "run", "ingest"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=(work / "ingest.log").open("wb"),
            )
            procs["app"] = _start_app(work, nats, sensor_ids, display_id, temperature, display, delivery, commands)
        else:
            procs["app"] = subprocess.Popen(
                [PYTHON, "-c", PEER, *creds, display_id, commands],
                text=True,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
        for name in ("controller",) + (() if side == "ours" else ("app",)):
            line = procs[name].stdout.readline().strip()  # type: ignore[union-attr]
            if line != "ready":
                raise RuntimeError(f"{name} did not start: {line!r}")
        bus = await Bus.connect(
            nats.url, user=nats.platform_user, password=nats.platform_password, name="bench-telemetry", attempts=5
        )
        if side == "ours":
            for _ in range(150):  # the ingest service creates its stream when it is up
                try:
                    await bus.js.stream_info(READINGS_STREAM)
                    break
                except Exception:  # noqa: BLE001
                    await asyncio.sleep(0.2)
        probe = Probe(bus, sensor_ids, display_id)
        await probe.attach()
        if side == "ours":
            await probe.attach_readings()
        await probe.warm_up()
        samplers = {name: Sampler(p.pid) for name, p in procs.items()}
        runs = []
        for rate in rates:
            before = {n: s.cpu() for n, s in samplers.items()}
            done = asyncio.Event()

            async def sample(done: asyncio.Event = done) -> None:
                while not done.is_set():
                    for s in samplers.values():
                        s.sample()
                    await asyncio.sleep(0.5)

            task = asyncio.create_task(sample())
            run = await probe.measure(rate, seconds)
            done.set()
            await task
            run["cpu_s"] = {n: round(s.cpu() - before[n], 2) for n, s in samplers.items()}
            run["peak_rss_mb"] = {n: s.rss_mb() for n, s in samplers.items()}
            runs.append(run)
        return {"runs": runs}
    finally:
        if bus is not None:
            await bus.close()
        for proc in procs.values():
            if proc.stdin is not None:
                try:
                    proc.stdin.write("stop\n")
                    proc.stdin.flush()
                except OSError:
                    pass
            stop(proc, 10)
        await nats.stop()
        db.dispose()


def _start_app(
    work: Path,
    nats: EmbeddedNats,
    sensors: list[str],
    display_id: str,
    temperature: dict,
    display: dict,
    delivery: str = "every",
    commands: str = "wait",
) -> subprocess.Popen:
    pkg = work / "probe-app"
    pkg.mkdir()
    (pkg / "probe.py").write_text(APP.replace("SEND", "send_nowait" if commands == "one-way" else "send"))
    manifest = {
        "format": 1,
        "name": "telemetry-probe",
        "version": "1.0.0",
        "kind": "backend",
        "entrypoint": "probe:main",
        "context": {
            "sensors": {"sensor": {"device_type": "temperature", "delivery": delivery}},
            "controllers": {"display": {"device_type": "display"}},
        },
    }
    (pkg / "app.json").write_text(json.dumps(manifest))
    wid = "wl_bench_probe"
    cfg = {
        "workload_id": wid,
        "kind": "app",
        "generation": 1,
        "node_id": "nod_bench",
        "nats": {"servers": [nats.url], "user": nats.platform_user, "password": nats.platform_password},
        "heartbeat": {"file": str(work / "heartbeat"), "interval": 1.0, "subject": f"aiot.hb.{wid}"},
        "log_subject": f"aiot.logs.{wid}",
        "package": {"id": "app_bench", "name": "telemetry-probe", "version": "1.0.0", "manifest": manifest},
        "package_dir": str(pkg),
        "app_instance_id": "ins_bench",
        "sensors": {"sensor": [{"device_id": d, "device_type": temperature} for d in sensors]},
        "controllers": {"display": [{"device_id": display_id, "device_type": display}]},
        "settings": {},
    }
    config = write_config(work / "app-config.json", cfg)
    return subprocess.Popen(
        [PYTHON, "-m", "platform_sdk.app_runner"],
        cwd=pkg,
        env=workload_env(config),
        stdout=(work / "app.log").open("wb"),
        stderr=subprocess.STDOUT,
    )


async def main_async(args: Any) -> dict[str, Any]:
    rates = sizes(args.sizes, [200.0] if args.smoke else [1000.0, 2000.0, 4000.0], float)
    seconds = 2.0 if args.smoke else args.seconds
    with tempfile.TemporaryDirectory(prefix="aiot-bench-telemetry-") as tmp:
        ours = await run_side("ours", rates, seconds, Path(tmp), args.delivery, args.commands)
        peer = await run_side("peer", rates, seconds, Path(tmp), commands=args.commands)
    comparison = []
    for o, p in zip(ours["runs"], peer["runs"], strict=True):
        comparison.append(
            {
                "rate": o["rate"],
                "ours_p50_ms": o["p50_ms"],
                "peer_p50_ms": p["p50_ms"],
                "p50_ratio": ratio(o["p50_ms"], p["p50_ms"]),
                "ours_p99_ms": o["p99_ms"],
                "peer_p99_ms": p["p99_ms"],
                "p99_ratio": ratio(o["p99_ms"], p["p99_ms"]),
                "ours_lost": o["lost"],
                "peer_lost": p["lost"],
            }
        )

    def best(runs: list[dict]) -> float | None:
        ok = [r["rate"] for r in runs if r["lost"] == 0]
        return max(ok) if ok else None

    at_1000 = next((o for o in ours["runs"] if o["rate"] == 1000.0), None)
    targets = {
        "p50_under_5ms_at_1000": (at_1000["p50_ms"] or 1e9) < 5 if at_1000 else None,
        "p99_under_25ms_at_1000": (at_1000["p99_ms"] or 1e9) < 25 if at_1000 else None,
    }
    return {
        "benchmark": "telemetry",
        "smoke": args.smoke,
        "machine": machine(),
        "settings": {
            "rates": rates,
            "seconds_per_rate": seconds,
            "sensors": SENSORS,
            "delivery": args.delivery,
            "commands": args.commands,
        },
        "target": "p50 < 5 ms and p99 < 25 ms at 1,000 readings/s; highest rate with no loss",
        "ours": ours,
        "peer_raw_nats": peer,
        "comparison": comparison,
        "highest_rate_no_loss": {
            "ours": best(ours["runs"]),
            "peer_raw_nats": best(peer["runs"]),
            "tested_up_to": max(rates),
        },
        "targets_met": targets,
        "ok": all(v is not False for v in targets.values()),
    }


def main() -> None:
    p = parser(__doc__, "comma-separated readings/s (default 1000,2000,4000; smoke 200)")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds of load per rate")
    p.add_argument(
        "--delivery",
        choices=("every", "latest"),
        default="every",
        help="the probe app's delivery policy (app.json): readings it coalesces under latest count as delivered",
    )
    p.add_argument(
        "--commands",
        choices=("wait", "one-way"),
        default="wait",
        help="wait: the app's callback waits for each acknowledgement (send); one-way: it does not (send_nowait), "
        "and the peer likewise",
    )
    args = p.parse_args()
    emit(asyncio.run(main_async(args)), args.output)


if __name__ == "__main__":
    sys.exit(main())
