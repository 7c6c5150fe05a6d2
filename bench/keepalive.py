"""Keep-alive soak: 5 model calls a second for minutes, across idle gaps around the replica's keep-alive timeout.

The race it hunts: a pooled connection that the replica (uvicorn) closes for idleness just as the client sends
the next request on it; the request fails with ReadError / RemoteProtocolError although the replica is healthy.
In the demo this surfaced as `ModelUnavailable` in an app about every 3 minutes.

What runs: an embedded nats-server and one real comfort replica (`python -m platform_sdk.serving`, the model
token), with its keep-alive timeout lowered to `--keepalive` seconds (`serve.keepalive_s`; 75 s in production)
so that minutes hold hundreds of chances to hit the race. Two callers follow the same schedule side by side:

- sdk: the SDK's model client (`platform_sdk.models.ModelClient`: pool expiry, one retry on a fresh connection
  for a connection the server closed), pointed at the replica directly (no registry lookup);
- naive: a plain `httpx.AsyncClient` with its default pool and no retry (the peer that shows the race is real).

Schedule: bursts of 3 s at 5 calls/s, then an idle gap cycling through keep-alive - 50 ms, exactly, + 50 ms,
+ 0.5 s and + 1.5 s.

    .venv/bin/python bench/keepalive.py                 # 180 s (the issue's 3 minutes)
    .venv/bin/python bench/keepalive.py --smoke         # 12 s (CI)

Target (issue "Deployment lifecycle"): 0 failed SDK calls.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from _common import EXAMPLES, PYTHON, ROOT, emit, free_port, machine, parser, stop, summary, wait_http, workload_env
from _common import write_config as _write_config

MODEL_ID = "mdl_soakcomfort"
TOKEN = "soak-model-token-0123456789abcdefghijklmnopqrstuvwxyz"
INPUTS = {"temperature": 31.5, "light": 120}
RATE = 5.0
BURST_S = 3.0


def start_replica(nats: Any, work: Path, keepalive: float) -> tuple[subprocess.Popen, str]:
    pkg = work / "comfort"
    shutil.copytree(EXAMPLES / "models" / "comfort", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    manifest = json.loads((pkg / "model.json").read_text())
    port = free_port()
    cfg = {
        "workload_id": "wl_soak",
        "kind": "model",
        "generation": 1,
        "node_id": "nod_bench",
        "nats": {"servers": [nats.url], "user": nats.platform_user, "password": nats.platform_password},
        "heartbeat": {"file": str(work / "soak.hb"), "interval": 1.0, "subject": "aiot.hb.wl_soak"},
        "log_subject": "aiot.logs.wl_soak",
        "package": {"id": MODEL_ID, "name": "comfort", "version": manifest["version"], "manifest": manifest},
        "package_dir": str(pkg),
        "serve": {
            "host": "127.0.0.1",
            "port": port,
            "public_url": f"http://127.0.0.1:{port}",
            "token": TOKEN,
            "keepalive_s": keepalive,
        },
    }
    config = _write_config(work / "replica.json", cfg)
    proc = subprocess.Popen(
        [PYTHON, "-m", "platform_sdk.serving"],
        cwd=pkg,
        env=workload_env(config),
        stdout=(work / "replica.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    return proc, f"http://127.0.0.1:{port}"


def gaps(keepalive: float) -> list[float]:
    return [keepalive - 0.05, keepalive, keepalive + 0.05, keepalive + 0.5, keepalive + 1.5]


class Caller:
    """One side of the comparison: `call()` makes one prediction and records its outcome."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.latencies: list[float] = []
        self.failures: list[str] = []

    async def call(self) -> None:
        started = time.perf_counter()
        try:
            await self._call()
        except Exception as exc:  # noqa: BLE001 - a failed call is the measurement
            self.failures.append(f"{type(exc).__name__}: {str(exc)[:200]}")
            return
        self.latencies.append(time.perf_counter() - started)

    async def _call(self) -> None:
        raise NotImplementedError

    def report(self) -> dict[str, Any]:
        s = summary(self.latencies)
        return {
            "calls": len(self.latencies) + len(self.failures),
            "failed": len(self.failures),
            "failure_samples": self.failures[:5],
            "p50_ms": s["p50"],
            "p99_ms": s["p99"],
        }


class SdkCaller(Caller):
    def __init__(self, url: str) -> None:
        super().__init__("sdk")
        from platform_sdk.models import ModelClient

        binding = SimpleNamespace(model_id=MODEL_ID, name="comfort", token=TOKEN)
        runtime = SimpleNamespace(cfg=SimpleNamespace(models={"comfort": binding}))

        class DirectClient(ModelClient):
            async def endpoints(self, model_id: str, label: str, *, fresh: bool = False) -> list[dict[str, Any]]:
                return [{"url": url}]  # the replica itself: this bench is about the HTTP hop, not the registry

        self.client = DirectClient(runtime)  # type: ignore[arg-type]

    async def _call(self) -> None:
        body = await self.client.post("comfort", "/v1/predict", {"inputs": INPUTS}, 10.0)
        assert body["outputs"]["fan"] == "on", body


class NaiveCaller(Caller):
    def __init__(self, url: str) -> None:
        super().__init__("naive")
        import httpx

        self.url = f"{url}/v1/predict"
        self.client = httpx.AsyncClient(trust_env=False, timeout=10.0)

    async def _call(self) -> None:
        response = await self.client.post(
            self.url, json={"inputs": INPUTS}, headers={"authorization": f"Bearer {TOKEN}"}
        )
        response.raise_for_status()


async def soak(caller: Caller, seconds: float, keepalive: float) -> None:
    deadline = time.monotonic() + seconds
    cycle = 0
    while time.monotonic() < deadline:
        burst_end = time.monotonic() + BURST_S
        while time.monotonic() < burst_end:
            tick = time.monotonic()
            await caller.call()
            await asyncio.sleep(max(0.0, 1 / RATE - (time.monotonic() - tick)))
        await asyncio.sleep(gaps(keepalive)[cycle % 5])
        cycle += 1


async def main_async(args: Any) -> dict[str, Any]:
    from aiot.bus.embedded import EmbeddedNats

    seconds = 12.0 if args.smoke else args.seconds
    with tempfile.TemporaryDirectory(prefix="aiot-bench-keepalive-") as tmp:
        work = Path(tmp)
        nats = EmbeddedNats(work / "nats")
        await nats.start()
        replica = None
        try:
            replica, url = start_replica(nats, work, args.keepalive)
            await asyncio.to_thread(wait_http, f"{url}/healthz", 120, replica)
            sdk, naive = SdkCaller(url), NaiveCaller(url)
            await asyncio.gather(soak(sdk, seconds, args.keepalive), soak(naive, seconds, args.keepalive))
        finally:
            stop(replica, 10)
            await nats.stop()
    result = {"sdk": sdk.report(), "naive": naive.report()}
    return {
        "benchmark": "keepalive",
        "smoke": args.smoke,
        "machine": machine(),
        "settings": {
            "seconds": seconds,
            "rate_per_s": RATE,
            "burst_s": BURST_S,
            "server_keepalive_s": args.keepalive,
            "gaps_s": gaps(args.keepalive),
        },
        "target": "0 failed SDK calls",
        "callers": result,
        "targets_met": {"sdk_no_failed_call": result["sdk"]["failed"] == 0},
        "ok": result["sdk"]["failed"] == 0 and result["sdk"]["calls"] > 0,
    }


def main() -> None:
    p = parser(__doc__, "unused")
    p.add_argument("--seconds", type=float, default=180.0, help="how long both callers keep calling")
    p.add_argument("--keepalive", type=float, default=2.0, help="the replica's keep-alive timeout, seconds")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    emit(asyncio.run(main_async(args)), args.output)


if __name__ == "__main__":
    main()
