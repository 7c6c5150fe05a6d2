"""Model serving: the sample comfort model and face detector behind our wrapper, behind BentoML, and in-process.

Three ways to run the same model class loaded from the same files (`examples/models/<name>`):
- ours: `python -m platform_sdk.serving` with a hand-written workload config (what a node agent writes), one
  process, its default predict thread pool; it talks to a real embedded nats-server (announce, heartbeat);
- peer: BentoML (`bench/peers/bento_models.py`), `bentoml serve`, the same worker count (1), access log off,
  from its own venv (`bench/peers/setup`: BentoML pins its own web stack, so it stays out of the platform's);
- limit: `model.predict(inputs)` called in this process (no HTTP, no JSON), one call after another.

The load generator (`bench/_loadgen.py`) is one separate process per measurement with N keep-alive
connections sending the same JSON request back to back; it reports throughput and p50/p99 latency.

    bench/peers/setup                                    # once: BentoML in its own venv (bench/.peers-venv)
    .venv/bin/python bench/serving.py                    # concurrency 1, 8, 64; 3 rounds x 3 s; both models
    .venv/bin/python bench/serving.py --smoke            # comfort only, c 1 and 8, 1 s, no BentoML (CI)
    .venv/bin/python bench/serving.py --sizes 1,8,64     # the concurrency levels (the "size" of this bench)
    .venv/bin/python bench/serving.py --token-overhead   # only: comfort at c=1, token check on vs off, alternating
    .venv/bin/python bench/serving.py --batching         # only: face detector, adaptive batching on both sides

Our replica checks the model token on every request (`Authorization: Bearer`, platform_sdk.endpoint_auth);
the load generator sends it. `--token-overhead` measures what that check costs: two replicas of comfort, one
with the check and one started with `serve.open` (no check), loaded alternately round by round.

Targets (issue 8): our throughput >= BentoML's at each concurrency; p50 overhead over the in-process call at
concurrency 1 < 2 ms for the comfort model.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    EXAMPLES,
    PYTHON,
    ROOT,
    Sampler,
    emit,
    free_port,
    machine,
    parser,
    ratio,
    sizes,
    stop,
    summary,
    wait_http,
    workload_env,
    write_config,
)

from aiot.bus.embedded import EmbeddedNats

PEERS = Path(__file__).resolve().parent / "peers"
# BentoML pins its own web stack, so it lives in its own venv (built by `bench/peers/setup`), not the platform's.
BENTOML = Path(os.environ.get("BENCH_BENTOML", str(PEERS.parent / ".peers-venv" / "bin" / "bentoml")))
LOADGEN = Path(__file__).resolve().parent / "_loadgen.py"
MODELS = {
    "comfort": {"module": "comfort", "cls": "ComfortModel", "bento": "Comfort"},
    "face-detector": {"module": "detector", "cls": "FaceDetector", "bento": "FaceDetector"},
}


def inputs_for(model: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(in-process inputs, our request body, BentoML's request body) - the same values three ways."""
    if model == "comfort":
        values = {"temperature": 31.5, "light": 120}
        return values, {"inputs": values}, values
    jpeg = (EXAMPLES / "models" / "face-detector" / "example.jpg").read_bytes()
    b64 = base64.b64encode(jpeg).decode()
    return (
        {"image": jpeg, "min_size": 30},
        {"inputs": {"image": {"b64": b64}, "min_size": 30}},
        {"image_b64": b64, "min_size": 30},
    )


def in_process(model: str, seconds: float) -> dict[str, Any]:
    """The limit: predict() called back to back in this process after load()."""
    spec = MODELS[model]
    path = str(EXAMPLES / "models" / model)
    sys.path.insert(0, path)
    try:
        obj = getattr(__import__(spec["module"]), spec["cls"])()
        obj.load()
        values = inputs_for(model)[0]
        for _ in range(20):
            obj.predict(values)
        lat: list[float] = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            obj.predict(values)
            lat.append(time.perf_counter() - t0)
    finally:
        sys.path.remove(path)
    s = summary(lat)
    return {"rps": round(len(lat) / seconds, 1), "p50_ms": s["p50"], "p99_ms": s["p99"], "calls": len(lat)}


BENCH_TOKEN = "bench-model-token-0123456789abcdefghijklmnopqrstuvwxyz"
"""As long as a real one (43 characters of urlsafe base64 from aiot.deployer.endpoint_tokens)."""


def start_ours(
    model: str,
    work: Path,
    nats: EmbeddedNats,
    *,
    check_token: bool = True,
    tag: str = "ours",
    batching: dict[str, Any] | None = None,
) -> tuple[subprocess.Popen, str]:
    pkg = work / tag / model
    shutil.copytree(EXAMPLES / "models" / model, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    manifest = json.loads((pkg / "model.json").read_text())
    if batching:  # what a developer opts in with, in the package's model.json
        manifest["batching"] = batching
        (pkg / "model.json").write_text(json.dumps(manifest, indent=2))
    port = free_port()
    wid = f"wl_bench_{model.replace('-', '')}_{tag.replace('-', '')}"
    cfg = {
        "workload_id": wid,
        "kind": "model",
        "generation": 1,
        "node_id": "nod_bench",
        "nats": {"servers": [nats.url], "user": nats.platform_user, "password": nats.platform_password},
        "heartbeat": {"file": str(work / "ours" / f"{model}.hb"), "interval": 1.0, "subject": f"aiot.hb.{wid}"},
        "log_subject": f"aiot.logs.{wid}",
        "package": {
            "id": f"mdl_bench{model[:4]}",
            "name": manifest["name"],
            "version": manifest["version"],
            "manifest": manifest,
        },
        "package_dir": str(pkg),
        "serve": {
            "host": "127.0.0.1",
            "port": port,
            "public_url": f"http://127.0.0.1:{port}",
            **({"token": BENCH_TOKEN} if check_token else {"open": True}),
        },
    }
    config = write_config(work / tag / f"{model}.json", cfg)
    proc = subprocess.Popen(
        [PYTHON, "-m", "platform_sdk.serving"],
        cwd=pkg,
        env=workload_env(config),
        stdout=(work / f"{tag}-{model}.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    return proc, f"http://127.0.0.1:{port}"


def start_bento(model: str, work: Path, service: str | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {
        **os.environ,
        "BENTOML_DO_NOT_TRACK": "True",
        "BENTOML_HOME": str(work / "bentoml"),
        "BENCH_WORKERS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    proc = subprocess.Popen(
        [
            str(BENTOML),
            "serve",
            f"bento_models:{service or MODELS[model]['bento']}",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=PEERS,
        env=env,
        stdout=(work / f"bento-{model}.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return proc, f"http://127.0.0.1:{port}"


def load(
    url: str, body_file: Path, concurrency: int, seconds: float, sampler: Sampler, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """One load generator process against `url`; samples the server's memory while it runs."""
    env = {**os.environ, "LOADGEN_HEADERS": json.dumps(headers or {})}
    gen = subprocess.Popen(
        [PYTHON, str(LOADGEN), url, str(body_file), str(concurrency), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    cpu0 = sampler.cpu()
    while gen.poll() is None:
        sampler.sample()
        time.sleep(0.2)
    assert gen.stdout is not None
    out = json.loads(gen.stdout.read().strip().splitlines()[-1])
    out["server_cpu_s"] = round(sampler.cpu() - cpu0, 3)
    out["server_peak_rss_mb"] = sampler.rss_mb()
    return out


def start_server(
    name: str, model: str, work: Path, nats: EmbeddedNats, batching: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Start one server and wait until it is ready; returns its process, URLs, request body and sampler. With
    `batching`, both sides batch adaptively: ours through `model.json` `batching`, BentoML through a batchable
    API (`bench/peers/bento_models.py` `FaceDetectorBatched`, one image per request, batched on its side)."""
    _, ours_body, bento_body = inputs_for(model)
    headers: dict[str, str] = {}
    if name in ("ours", "ours-open"):
        proc, base = start_ours(model, work, nats, check_token=name == "ours", tag=name, batching=batching)
        health, predict, body = f"{base}/healthz", f"{base}/v1/predict", ours_body
        headers = {"Authorization": f"Bearer {BENCH_TOKEN}"}  # sent to both: the same bytes on the wire
    elif batching:
        proc, base = start_bento(model, work, service=f"{MODELS[model]['bento']}Batched")
        health, predict, body = f"{base}/readyz", f"{base}/predict", {"images": [bento_body["image_b64"]]}
    else:
        proc, base = start_bento(model, work)
        health, predict, body = f"{base}/readyz", f"{base}/predict", bento_body
    body_file = work / f"{name}-{model}.body.json"
    body_file.write_text(json.dumps(body))
    server: dict[str, Any] = {
        "name": name,
        "proc": proc,
        "predict": predict,
        "body_file": body_file,
        "headers": headers,
        "log": work / f"{name if name.startswith('ours') else 'bento'}-{model}.log",
    }
    try:
        server["start_to_ready_s"] = round(wait_http(health, 120, proc), 2)
    except Exception as exc:  # noqa: BLE001 - reported in the JSON, the other server still runs
        tail = server["log"].read_text(errors="replace")[-1500:] if server["log"].exists() else ""
        server["error"] = {"error": f"{type(exc).__name__}: {exc}", "log_tail": tail}
        stop(proc, 15)
        return server
    server["sampler"] = Sampler(proc.pid)
    server["sampler"].sample()
    server["idle_rss_mb"] = server["sampler"].rss_mb()
    return server


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median throughput (its latencies go with it), plus every round's rps."""
    ordered = sorted(runs, key=lambda r: r["rps"])
    mid = dict(ordered[len(ordered) // 2])
    mid["rps_each_round"] = [r["rps"] for r in runs]
    mid["errors"] = sum(r["errors"] for r in runs)
    return mid


def measure_pair(
    model: str,
    work: Path,
    concurrencies: list[int],
    seconds: float,
    rounds: int,
    nats: EmbeddedNats,
    with_bento: bool,
    batching: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both servers up at once; at each concurrency the load alternates ours, BentoML, ours, ... `rounds`
    times, so a burst of load from elsewhere on the machine hits both sides alike."""
    names = ["ours", "bentoml"] if with_bento else ["ours"]
    servers = [start_server(n, model, work, nats, batching) for n in names]
    try:
        live = [s for s in servers if "error" not in s]
        per: dict[str, list[dict[str, Any]]] = {s["name"]: [] for s in live}
        for c in concurrencies:
            rounds_of: dict[str, list[dict[str, Any]]] = {s["name"]: [] for s in live}
            for _ in range(rounds):
                for s in live:
                    rounds_of[s["name"]].append(
                        load(s["predict"], s["body_file"], c, seconds, s["sampler"], s["headers"])
                    )
            for name, runs in rounds_of.items():
                per[name].append(_median_run(runs))
        out = []
        for s in servers:
            if "error" in s:
                out.append(s["error"])
            else:
                out.append(
                    {"start_to_ready_s": s["start_to_ready_s"], "idle_rss_mb": s["idle_rss_mb"], "runs": per[s["name"]]}
                )
        if not with_bento:
            out.append({"error": f"no BentoML at {BENTOML}: run bench/peers/setup (or --no-bentoml was given)"})
        return out[0], out[1]
    finally:
        for s in servers:
            stop(s["proc"], 15)


def guard_cost_us(calls: int = 100_000) -> dict[str, float]:
    """The check alone, in this process: one request through `TokenGuard` to an app that does nothing, minus
    the same app called bare (the HTTP figures above are at the mercy of the machine's load; this is not)."""
    from platform_sdk.endpoint_auth import MODEL_TOKEN_HEADER, TokenGuard, bearer

    async def bare(scope: Any, receive: Any, send: Any) -> None:
        return None

    guard = TokenGuard(bare, header=MODEL_TOKEN_HEADER, expected=bearer(BENCH_TOKEN))
    scope = {
        "type": "http",
        "path": "/v1/predict",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"user-agent", b"python-httpx/0.27"),
            (b"accept", b"*/*"),
            (b"content-type", b"application/json"),
            (b"content-length", b"40"),
            (b"authorization", f"Bearer {BENCH_TOKEN}".encode()),
        ],
    }

    async def timed(app: Any) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            await app(scope, None, None)
        return time.perf_counter() - start

    async def both() -> tuple[float, float]:
        best_bare, best_guard = float("inf"), float("inf")
        for _ in range(3):
            best_bare = min(best_bare, await timed(bare))
            best_guard = min(best_guard, await timed(guard))
        return best_bare, best_guard

    plain, guarded = asyncio.run(both())
    return {"calls": calls, "per_request_us": round((guarded - plain) / calls * 1e6, 3)}


def token_overhead(work: Path, nats: EmbeddedNats, seconds: float, rounds: int) -> dict[str, Any]:
    """Comfort at concurrency 1: a replica checking the model token against one started without the check,
    both up at once and loaded alternately (`rounds` x `seconds` each); p50 per round, then the median."""
    servers = [start_server(n, "comfort", work, nats) for n in ("ours", "ours-open")]
    try:
        failed = [s["error"] for s in servers if "error" in s]
        if failed:
            return {"error": failed}
        runs: dict[str, list[dict[str, Any]]] = {"ours": [], "ours-open": []}
        for _ in range(rounds):
            for s in servers:
                runs[s["name"]].append(load(s["predict"], s["body_file"], 1, seconds, s["sampler"], s["headers"]))
    finally:
        for s in servers:
            stop(s["proc"], 15)

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    checked = median([r["p50_ms"] for r in runs["ours"]])
    unchecked = median([r["p50_ms"] for r in runs["ours-open"]])
    diffs = [a["p50_ms"] - b["p50_ms"] for a, b in zip(runs["ours"], runs["ours-open"], strict=True)]
    overhead = round(median(diffs), 4)
    return {
        "rounds": rounds,
        "seconds_per_round": seconds,
        "concurrency": 1,
        "p50_ms_with_check": checked,
        "p50_ms_without_check": unchecked,
        "p50_ms_each_round_with": [r["p50_ms"] for r in runs["ours"]],
        "p50_ms_each_round_without": [r["p50_ms"] for r in runs["ours-open"]],
        "rps_with_check": median([r["rps"] for r in runs["ours"]]),
        "rps_without_check": median([r["rps"] for r in runs["ours-open"]]),
        "errors": sum(r["errors"] for r in runs["ours"] + runs["ours-open"]),
        "p50_overhead_ms": overhead,
        "check_alone_in_process": guard_cost_us(),
        "overhead_under_0_5ms": overhead < 0.5,
    }


def compare(model: str, ours: dict, bento: dict, limit: dict) -> dict[str, Any]:
    rows = []
    bento_runs = {r["concurrency"]: r for r in bento.get("runs", [])}
    for r in ours.get("runs", []):
        b = bento_runs.get(r["concurrency"], {})
        rows.append(
            {
                "concurrency": r["concurrency"],
                "ours_rps": r["rps"],
                "bentoml_rps": b.get("rps"),
                "throughput_ratio_ours_over_bentoml": ratio(r["rps"], b.get("rps")),
                "ours_p50_ms": r["p50_ms"],
                "bentoml_p50_ms": b.get("p50_ms"),
                "ours_p99_ms": r["p99_ms"],
                "bentoml_p99_ms": b.get("p99_ms"),
                "ours_errors": r["errors"],
                "bentoml_errors": b.get("errors"),
            }
        )
    c1 = next((r for r in ours.get("runs", []) if r["concurrency"] == 1), None)
    overhead = round(c1["p50_ms"] - limit["p50_ms"], 3) if c1 else None
    throughput_ok = (
        all(
            r["throughput_ratio_ours_over_bentoml"] is not None and r["throughput_ratio_ours_over_bentoml"] >= 1.0
            for r in rows
        )
        if rows
        else None
    )
    return {
        "rows": rows,
        "p50_overhead_over_in_process_c1_ms": overhead,
        "throughput_at_least_bentoml": throughput_ok if bento_runs else None,
        "overhead_under_2ms": (overhead is not None and overhead < 2.0) if model == "comfort" else None,
    }


BATCHING = {"max_batch_size": 16, "max_wait_ms": 2}  # the same on both sides (BentoML: max_latency_ms below)


async def batching_only(args: Any) -> dict[str, Any]:
    """The face detector with adaptive batching on both sides, at concurrency 8 and 64 (issue "Performance")."""
    concurrencies = sizes(args.sizes, [8, 64])
    with tempfile.TemporaryDirectory(prefix="aiot-bench-batching-") as tmp:
        work = Path(tmp)
        nats = EmbeddedNats(work / "nats")
        await nats.start()
        try:
            limit = in_process("face-detector", 3.0)
            ours, bento = await asyncio.to_thread(
                measure_pair, "face-detector", work, concurrencies, args.seconds, args.rounds, nats, True, BATCHING
            )
        finally:
            await nats.stop()
    comparison = compare("face-detector", ours, bento, limit)
    return {
        "benchmark": "serving-batching",
        "machine": machine(),
        "settings": {
            "model": "face-detector (OpenCV Haar cascade; no vectorised batch call: both sides loop per image)",
            "batching": BATCHING,
            "bentoml_batching": {"batchable": True, "max_batch_size": 16, "max_latency_ms": "default (60,000)"},
            "concurrency": concurrencies,
            "seconds_per_point": args.seconds,
            "rounds": args.rounds,
            "workers": 1,
            "bentoml": _bentoml_version(),
        },
        "in_process": limit,
        "ours": ours,
        "bentoml": bento,
        "comparison": comparison,
        "targets_met": {"throughput_at_least_bentoml": comparison["throughput_at_least_bentoml"]},
        "ok": comparison["throughput_at_least_bentoml"] is True,
    }


async def main_async(args: Any) -> dict[str, Any]:
    if args.batching:
        return await batching_only(args)
    concurrencies = sizes(args.sizes, [1, 8] if args.smoke else [1, 8, 64])
    models = ["comfort"] if args.smoke else list(MODELS)
    seconds = 1.0 if args.smoke else args.seconds
    rounds = 1 if args.smoke else args.rounds
    # The smoke run leaves BentoML out unless asked: its start-up alone is ~15 s of the CI budget.
    with_bento = BENTOML.exists() and not args.no_bentoml and (args.bentoml or not args.smoke)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="aiot-bench-serving-") as tmp:
        work = Path(tmp)
        nats = EmbeddedNats(work / "nats")
        await nats.start()
        if args.token_overhead:
            try:
                token = await asyncio.to_thread(token_overhead, work, nats, args.seconds, args.rounds)
            finally:
                await nats.stop()
            return {
                "benchmark": "serving-token-overhead",
                "machine": machine(),
                "token_check": token,
                "target": "p50 overhead of the model-token check at c=1 < 0.5 ms",
                "ok": token.get("overhead_under_0_5ms") is True,
            }
        try:
            for model in models:
                limit = in_process(model, min(seconds * rounds, 3.0))
                ours, bento = await asyncio.to_thread(
                    measure_pair, model, work, concurrencies, seconds, rounds, nats, with_bento
                )
                results[model] = {
                    "in_process": limit,
                    "ours": ours,
                    "bentoml": bento,
                    "comparison": compare(model, ours, bento, limit),
                }
        finally:
            await nats.stop()
    comfort = results["comfort"]["comparison"]
    targets = {
        "throughput_at_least_bentoml": _all(r["comparison"]["throughput_at_least_bentoml"] for r in results.values()),
        "comfort_p50_overhead_c1_under_2ms": comfort["overhead_under_2ms"],
    }
    return {
        "benchmark": "serving",
        "smoke": args.smoke,
        "machine": machine(),
        "settings": {
            "concurrency": concurrencies,
            "seconds_per_point": seconds,
            "rounds": rounds,
            "workers": 1,
            "bentoml": _bentoml_version() if with_bento else None,
            "load_generator": "bench/_loadgen.py (asyncio, keep-alive, its own process)",
            "figure": "median round of `rounds`, ours and BentoML alternating",
        },
        "target": "throughput >= BentoML's at each concurrency; comfort p50 overhead at c=1 < 2 ms",
        "models": results,
        "targets_met": targets,
        "ok": all(v is not False for v in targets.values()),
    }


def _all(values: Any) -> bool | None:
    """True/False over the known values; None when none is known (the peer did not run)."""
    known = [v for v in values if v is not None]
    return all(known) if known else None


def _bentoml_version() -> str | None:
    if not BENTOML.exists():
        return None
    out = subprocess.run([str(BENTOML), "--version"], capture_output=True, text=True, timeout=60)
    return out.stdout.strip().split()[-1] if out.returncode == 0 and out.stdout.strip() else None


def main() -> None:
    p = parser(__doc__, "comma-separated concurrency levels (default 1,8,64; smoke 1,8)")
    p.add_argument("--seconds", type=float, default=3.0, help="measured seconds per concurrency level and round")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per concurrency level")
    p.add_argument("--no-bentoml", action="store_true", help="skip the BentoML peer")
    p.add_argument("--bentoml", action="store_true", help="run the BentoML peer in --smoke too")
    p.add_argument(
        "--batching",
        action="store_true",
        help="only the face detector with adaptive batching on both sides (ours: model.json; BentoML: batchable "
        "API), at concurrency 8 and 64",
    )
    p.add_argument(
        "--token-overhead",
        action="store_true",
        help="only measure the model-token check: comfort at c=1, with vs without, alternating",
    )
    args = p.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    emit(asyncio.run(main_async(args)), args.output)


if __name__ == "__main__":
    main()
