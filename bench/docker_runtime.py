"""The docker runtime beside the process runtime: deployment time (cold, warm) and serving throughput.

Two real platforms in one run, each `aiot up --nodes 1` on a fresh data dir: one whose node runs workloads as
sandboxed processes (`AIOT_NODE_RUNTIME=process`, bubblewrap), one whose node runs a container each
(`AIOT_NODE_RUNTIME=docker`, the local Docker engine). Measured on both:

- deployment of the smart-home app: `POST /instances/{id}/run` to `workload_state == "running"`; cold = the
  first run (environment built by uv; on docker also the image `aiot-env:<key>` built), then warm (median);
- serving: the comfort model (one replica) called through the control plane's stable URL at concurrency 8,
  the two platforms alternating round by round (`bench/_loadgen.py`, its own process). Twice: as shipped
  (`resources.cpu` 0.25, which the docker runtime enforces as a CPU quota and the process runtime only
  reserves at placement), and a copy asking for 1.5 cores (`comfort-wide`: a quota the load never reaches,
  so the figure is the container's own overhead).

The docker side needs a running engine (scripts/test-services starts one); images are built locally, nothing
is pulled. Cold docker deployments include the image build; a second node on the same engine reuses it.

    .venv/bin/python bench/docker_runtime.py              # warm x5, 3 serving rounds x 5 s
    .venv/bin/python bench/docker_runtime.py --smoke      # warm x1, 1 round x 1 s
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _cluster import Cluster
from _common import EXAMPLES, Sampler, emit, machine, parser
from deployment import DEVICES, start_all, stop_all
from serving import load

RUNTIMES = ("process", "docker")
HOT = {"inputs": {"temperature": 31.5, "light": 120}}


def _images_of(tmp: Path) -> list[str]:
    """Tags of the environment images built from this run's temporary dir."""
    from aiot.agent.docker_runtime import LABEL_ENV, docker_client

    images = docker_client().images.list(filters={"label": LABEL_ENV})
    return sorted(t for i in images if Path(i.labels[LABEL_ENV]).is_relative_to(tmp) for t in i.tags)


def _remove_images(tmp: Path) -> None:
    """The run's environments lived in a temporary dir: their images can never be reused (only those: another
    process may be using the engine at the same time)."""
    from aiot.agent.docker_runtime import DockerRuntime

    DockerRuntime("bench").remove_env_images(tmp)


def _prepare(cluster: Cluster) -> str:
    """Devices, the smart-home app and one instance, the comfort model deployed; returns the instance id."""
    cluster.wait_ready(1, timeout=180)
    cluster.device_types("temperature", "light", "fan", "ac", "lamp")
    cluster.location("home")
    for name, dtype in DEVICES:
        cluster.device(name, dtype, "home")
    cluster.push("apps", EXAMPLES / "apps" / "smart-home")
    return cluster.instance("smart-home", "home")["id"]


def _wide_comfort(tmp: Path) -> Path:
    """The comfort sample renamed `comfort-wide`, asking for 1.5 cores (what fits beside the rest on 2)."""
    folder = tmp / "comfort-wide"
    if not folder.exists():
        shutil.copytree(EXAMPLES / "models" / "comfort", folder)
        manifest = json.loads((folder / "model.json").read_text())
        manifest["name"], manifest["resources"]["cpu"] = "comfort-wide", 1.5
        (folder / "model.json").write_text(json.dumps(manifest, indent=2))
    return folder


def _deploy_model(cluster: Cluster, folder: Path) -> float:
    name = json.loads((folder / "model.json").read_text())["name"]
    cluster.push("models", folder)
    started = time.monotonic()
    cluster.post(f"/models/{name}/deploy", json={"replicas": 1})
    cluster.wait(
        f"{name} running",
        lambda: any(w["state"] == "running" for w in cluster.get(f"/deployments/{name}")["workloads"]),
        300,
        0.1,
    )
    return round(time.monotonic() - started, 3)


def measure(tmp: Path, warm_runs: int, rounds: int, seconds: float, wide: bool = True) -> dict[str, Any]:
    """Both runtimes side by side; `wide=False` (the smoke run) leaves out the 1.5-core copy of the model."""
    clusters = {rt: Cluster(tmp / rt / "data", nodes=1, AIOT_NODE_RUNTIME=rt) for rt in RUNTIMES}
    try:
        out: dict[str, Any] = {rt: {} for rt in RUNTIMES}
        for rt, cluster in clusters.items():
            instance = _prepare(cluster)
            row = out[rt]
            row["node_labels"] = cluster.get("/nodes")[0]["labels"]
            row["app_cold_s"] = start_all(cluster, [instance])
            stop_all(cluster, [instance])
            warm = []
            for _ in range(warm_runs):
                warm.append(start_all(cluster, [instance]))
                stop_all(cluster, [instance])
            row["app_warm_s"] = warm
            row["app_warm_median_s"] = round(statistics.median(warm), 3)
            row["model_cold_deploy_s"] = _deploy_model(cluster, EXAMPLES / "models" / "comfort")
            if wide:
                row["model_wide_deploy_s"] = _deploy_model(cluster, _wide_comfort(tmp))
        built = _images_of(tmp)
        out["docker"]["images_built"] = built
        body = Path(tmp / "body.json")
        body.write_text(json.dumps(HOT))
        served = (("comfort", "serving_c8"), ("comfort-wide", "serving_wide_c8"))[: 2 if wide else 1]
        for model, key in served:
            results: dict[str, list[dict[str, Any]]] = {rt: [] for rt in RUNTIMES}
            for _ in range(rounds):
                for rt, cluster in clusters.items():
                    url = f"{cluster.url}/models/admin/{model}/v1/predict"
                    auth = {"Authorization": f"Bearer {cluster.token}"}
                    results[rt].append(load(url, body, 8, seconds, Sampler(cluster.proc.pid), auth))
            for rt in RUNTIMES:
                runs = results[rt]
                out[rt][key] = {
                    "rps_median": round(statistics.median(r["rps"] for r in runs), 1),
                    "p50_ms_median": round(statistics.median(r["p50_ms"] for r in runs), 3),
                    "p99_ms_median": round(statistics.median(r["p99_ms"] for r in runs), 3),
                    "errors": sum(r["errors"] for r in runs),
                    "rounds": runs,
                }
        return out
    finally:
        for cluster in clusters.values():
            cluster.close()
        _remove_images(tmp)


def _ratio(docker: dict[str, Any], process: dict[str, Any], key: str) -> float | None:
    if key not in docker:
        return None
    return round(docker[key]["rps_median"] / max(process[key]["rps_median"], 1e-9), 2)


def _no_errors(*sides: dict[str, Any]) -> bool:
    return all(side[k]["errors"] == 0 for side in sides for k in ("serving_c8", "serving_wide_c8") if k in side)


def main() -> None:
    p = parser(__doc__, "unused")
    args = p.parse_args()
    warm_runs, rounds, seconds = (1, 1, 1.0) if args.smoke else (5, 3, 5.0)
    with tempfile.TemporaryDirectory(prefix="aiot-bench-docker-") as tmp:
        result = measure(Path(tmp), warm_runs, rounds, seconds, wide=not args.smoke)
    process, docker = result["process"], result["docker"]
    emit(
        {
            "benchmark": "docker_runtime",
            "machine": machine(),
            "result": result,
            "ratios": {
                "app_warm_docker_over_process": round(docker["app_warm_median_s"] / process["app_warm_median_s"], 2),
                "app_cold_docker_over_process": round(docker["app_cold_s"] / process["app_cold_s"], 2),
                "serving_rps_docker_over_process": _ratio(docker, process, "serving_c8"),
                "serving_wide_rps_docker_over_process": _ratio(docker, process, "serving_wide_c8"),
            },
            "smoke": bool(args.smoke),
            "targets_met": {"no_serving_errors": _no_errors(docker, process)},
            "ok": _no_errors(docker, process),
        },
        args.output,
    )


if __name__ == "__main__":
    main()
