"""Deployment: `POST /instances/{id}/run` to the app instance reported running, cold and warm.

A real platform (`aiot up --nodes 1`, fresh data dir) with the sample apps' device types, a location and
devices. For each sample app measured:
- cold: the first run in a fresh data dir: empty environment cache AND empty uv download cache
  (`<data dir>/envs/uv-cache`, the agent's own, not the user's ~/.cache/uv), so uv fetches the SDK's
  requirements (nats-py, numpy, starlette, ...) from the package index;
- env-cold, uv-warm: the instance stopped, its environment deleted from the cache, run again (uv re-links
  from its warm download cache: what a new app with known requirements costs);
- warm: stopped and run again with the environment cached (the usual case: a schedule's next occurrence).
Time = from the POST to `workload_state == "running"` on `GET /instances/{id}` (the agent saw its first
heartbeat, or a web app's port answering), polled every 50 ms.

There is no peer in the same run: the targets are absolute (warm < 2 s, cold < 20 s).

    .venv/bin/python bench/deployment.py                 # smart-home, smart-classroom; 1 and 3 at once; warm x5
    .venv/bin/python bench/deployment.py --smoke         # smart-home; cold, then warm x1 (CI)
    .venv/bin/python bench/deployment.py --sizes 1,3     # instances started at once (cost growth)
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _cluster import Cluster
from _common import EXAMPLES, Sampler, emit, machine, parser, sizes

APPS = {
    "smart-home": {"types": ["temperature", "light", "fan", "ac", "lamp"], "models": []},
    "smart-classroom": {"types": ["temperature", "light", "fan", "ac", "lamp"], "models": ["comfort"]},
}
DEVICES = [("thermo", "temperature"), ("lux", "light"), ("fan", "fan"), ("ac", "ac"), ("lamp", "lamp")]


def running(cluster: Cluster, ids: list[str]) -> bool:
    return all(cluster.get(f"/instances/{i}")["workload_state"] == "running" for i in ids)


def start_all(cluster: Cluster, ids: list[str], timeout: float = 240) -> float:
    started = time.monotonic()
    for i in ids:
        cluster.post(f"/instances/{i}/run", json={})
    cluster.wait("instances running", lambda: running(cluster, ids), timeout)
    return round(time.monotonic() - started, 3)


def stop_all(cluster: Cluster, ids: list[str]) -> None:
    for i in ids:
        cluster.post(f"/instances/{i}/stop")
    cluster.wait(
        "instances stopped", lambda: all(cluster.get(f"/instances/{i}")["workload_state"] is None for i in ids), 60
    )
    time.sleep(0.5)


def env_dirs(data_dir: Path) -> list[Path]:
    root = data_dir / "envs" / "envs"
    return [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")] if root.exists() else []


def measure(apps: list[str], count: int, warm_runs: int, tmp: Path, smoke: bool = False) -> dict[str, Any]:
    cluster = Cluster(tmp / f"n{count}" / "data", nodes=1)
    try:
        boot = cluster.wait_ready(1)
        tree = Sampler(cluster.proc.pid)
        cluster.device_types("temperature", "light", "fan", "ac", "lamp")
        out: dict[str, Any] = {"instances": count, "platform_start_s": round(boot, 2), "apps": {}}
        for app in apps:
            loc = f"room-{app}"
            cluster.location(loc)
            for name, dtype in DEVICES:
                cluster.device(f"{name}-{app}", dtype, loc)
            for model in APPS[app]["models"]:
                cluster.push("models", EXAMPLES / "models" / model)
                cluster.post(f"/models/{model}/deploy", json={"replicas": 1})
                cluster.wait(
                    f"{model} running",
                    lambda m=model: any(w["state"] == "running" for w in cluster.get(f"/deployments/{m}")["workloads"]),
                    300,
                    0.2,
                )
            cluster.push("apps", EXAMPLES / "apps" / app)
            ids = [cluster.instance(app, loc)["id"] for _ in range(count)]
            uv_cache_before = _size_mb(cluster.data_dir / "envs" / "uv-cache")
            sampler = Sampler(cluster.proc.pid)
            row: dict[str, Any] = {"uv_cache_mb_before_cold": uv_cache_before}
            row["cold_s"] = start_all(cluster, ids)
            sampler.sample()
            row["envs_in_cache"] = len(env_dirs(cluster.data_dir))
            stop_all(cluster, ids)
            if not smoke and (app == apps[0] or not APPS[app]["models"]):
                for env in env_dirs(cluster.data_dir):  # drop the envs, keep uv's download cache
                    shutil.rmtree(env)
                row["env_cold_uv_warm_s"] = start_all(cluster, ids)
                stop_all(cluster, ids)
            warm = []
            for _ in range(warm_runs):
                warm.append(start_all(cluster, ids))
                sampler.sample()
                stop_all(cluster, ids)
            row["warm_s"] = warm
            row["warm_median_s"] = round(statistics.median(warm), 3)
            row["warm_max_s"] = max(warm)
            row["platform_tree_peak_rss_mb"] = sampler.rss_mb()
            row["uv_cache_mb_after"] = _size_mb(cluster.data_dir / "envs" / "uv-cache")
            out["apps"][app] = row
        out["platform_tree_cpu_s"] = round(tree.cpu(), 2)
        out["platform_tree_cpu_note"] = "control plane, NATS, agent and workloads, from ready to the end"
        return out
    finally:
        cluster.close()


def _size_mb(path: Path) -> float:
    if not path.exists():
        return 0.0
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 1)


def main() -> None:
    p = parser(__doc__, "comma-separated counts of instances started together (default 1)")
    args = p.parse_args()
    apps = ["smart-home"] if args.smoke else list(APPS)
    counts = sizes(args.sizes, [1] if args.smoke else [1, 3])
    warm_runs = 1 if args.smoke else 5
    with tempfile.TemporaryDirectory(prefix="aiot-bench-deploy-") as tmp:
        runs = [measure(apps, n, warm_runs, Path(tmp), args.smoke) for n in counts]
    first = runs[0]["apps"]
    targets = {
        "warm_under_2s": all(a["warm_median_s"] < 2.0 for a in first.values()),
        "cold_under_20s": all(a["cold_s"] < 20.0 for a in first.values()),
    }
    emit(
        {
            "benchmark": "deployment",
            "smoke": args.smoke,
            "machine": machine(),
            "settings": {
                "apps": apps,
                "warm_runs": warm_runs,
                "instances": counts,
                "measured": "POST /instances/{id}/run -> workload_state running",
            },
            "target": "warm < 2 s, cold < 20 s for the sample apps",
            "runs": runs,
            "targets_met": targets,
            "ok": all(targets.values()),
        },
        args.output,
    )


if __name__ == "__main__":
    sys.exit(main())
