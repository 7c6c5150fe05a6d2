"""Model gateway overhead: the comfort model called through the control plane's stable URL vs its replica directly.

What runs: an embedded nats-server; a control plane (the real FastAPI app with the gateway, SQLite, uvicorn) in
this process; the comfort model pushed and deployed through the API, its replica started as the node agent
would (`python -m platform_sdk.serving`, the model's real token) and recorded as running. The load generator
(`bench/_loadgen.py`, its own process) then alternates, round by round:

- direct: `POST <replica>/v1/predict` with the model's token (what a bound app's SDK does);
- gateway: `POST <control plane>/models/<owner>/comfort/v1/predict` with the owner's API token (user token
  check, cached replica lookup, least-outstanding pick, one pooled hop to the replica).

    .venv/bin/python bench/gateway.py                 # concurrency 1 and 8, 3 rounds x 3 s
    .venv/bin/python bench/gateway.py --smoke         # c 1, 1 round of 1 s (CI)

Target (issue "Performance"): the gateway's own overhead over a direct replica call < 1 ms at p50 (c=1).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
from datetime import timedelta
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
    sizes,
    stop,
    wait_http,
    workload_env,
    write_config,
)
from serving import _median_run, load

OWNER = "benchdev"


async def _control_plane(work: Path) -> tuple[Any, Any, str]:
    """The API app around a context on SQLite and an embedded nats-server; returns (ctx, nats, owner token)."""
    from aiot.accounts import users as accounts
    from aiot.bus import Bus, EmbeddedNats
    from aiot.services.contract import ServiceContext
    from aiot.settings import Settings
    from aiot.store import migrate
    from aiot.store.engine import Database
    from aiot.store.models import Role

    nats = EmbeddedNats(work / "nats")
    await nats.start()
    settings = Settings(
        data_dir=work / "cp", database_url=f"sqlite:///{work / 'aiot.db'}", secret_key="bench-gateway-secret"
    )
    migrate.upgrade(settings.effective_database_url)
    db = Database(settings.effective_database_url)
    bus = await Bus.connect(nats.url, user=nats.platform_user, password=nats.platform_password, name="bench")
    ctx = ServiceContext(settings=settings, db=db, bus=bus, embedded=nats)
    with db.session() as session:
        user = accounts.create_user(session, username=OWNER, password="bench-password-1", role=Role.ai_developer)
        token = accounts.issue_token(session, user, ttl=timedelta(hours=2)).token
    return ctx, nats, token


async def _deploy_comfort(ctx: Any, token: str, work: Path) -> tuple[str, str, int]:
    """Push and deploy comfort through the API; returns (model id, workload id, generation)."""
    import httpx

    from aiot.artifacts.packing import zip_folder
    from aiot.launch.http_app import create_app

    archive = zip_folder(EXAMPLES / "models" / "comfort", work / "comfort.zip")
    transport = httpx.ASGITransport(app=create_app(ctx))
    async with httpx.AsyncClient(transport=transport, base_url="http://aiot.bench") as client:
        auth = {"Authorization": f"Bearer {token}"}
        model_id = (await client.post("/api/v1/models", content=archive.read_bytes(), headers=auth)).json()["id"]
        deployed = await client.post(f"/api/v1/models/{model_id}/deploy", json={"replicas": 1}, headers=auth)
        workload = deployed.json()["workloads"][0]
    return model_id, workload["id"], int(workload.get("generation") or 1)


def _start_replica(ctx: Any, nats: Any, model_id: str, workload_id: str, work: Path) -> tuple[Any, str]:
    from aiot.deployer.endpoint_tokens import model_token
    from aiot.secrets_store import platform_secret

    pkg = work / "replica" / "comfort"
    shutil.copytree(EXAMPLES / "models" / "comfort", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    manifest = json.loads((pkg / "model.json").read_text())
    port = free_port()
    cfg = {
        "workload_id": workload_id,
        "kind": "model",
        "generation": 1,
        "node_id": "nod_bench",
        "nats": {"servers": [nats.url], "user": nats.platform_user, "password": nats.platform_password},
        "heartbeat": {"file": str(work / "replica.hb"), "interval": 1.0, "subject": f"aiot.hb.{workload_id}"},
        "log_subject": f"aiot.logs.{workload_id}",
        "package": {"id": model_id, "name": "comfort", "version": manifest["version"], "manifest": manifest},
        "package_dir": str(pkg),
        "serve": {
            "host": "127.0.0.1",
            "port": port,
            "public_url": f"http://127.0.0.1:{port}",
            "token": model_token(platform_secret(ctx.settings), model_id),
        },
    }
    config = write_config(work / "replica.json", cfg)
    proc = subprocess.Popen(
        [PYTHON, "-m", "platform_sdk.serving"],
        cwd=pkg,
        env=workload_env(config),
        stdout=(work / "replica.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    return proc, f"http://127.0.0.1:{port}"


def _record_running(ctx: Any, workload_id: str, endpoint: str) -> None:
    """What the node agent's report would write: the replica runs at `endpoint`."""
    from aiot.store.runtime import Workload, WorkloadStatus

    with ctx.db.session() as session:
        workload = session.get(Workload, workload_id)
        status = session.get(WorkloadStatus, workload_id) or WorkloadStatus(workload_id=workload_id)
        status.generation, status.state, status.endpoint = workload.generation, "running", endpoint
        session.add(status)


async def main_async(args: Any) -> dict[str, Any]:
    import uvicorn

    from aiot.deployer.endpoint_tokens import model_token
    from aiot.launch.http_app import create_app
    from aiot.secrets_store import platform_secret

    concurrencies = sizes(args.sizes, [1] if args.smoke else [1, 8])
    seconds, rounds = (1.0, 1) if args.smoke else (args.seconds, args.rounds)
    with tempfile.TemporaryDirectory(prefix="aiot-bench-gateway-") as tmp:
        work = Path(tmp)
        ctx, nats, token = await _control_plane(work)
        replica = server = None
        try:
            model_id, workload_id, _ = await _deploy_comfort(ctx, token, work)
            replica, replica_url = _start_replica(ctx, nats, model_id, workload_id, work)
            await asyncio.to_thread(wait_http, f"{replica_url}/healthz", 120, replica)
            _record_running(ctx, workload_id, replica_url)
            port = free_port()
            server = uvicorn.Server(
                uvicorn.Config(
                    create_app(ctx), host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off"
                )
            )
            server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
            serving = asyncio.create_task(server.serve())
            gateway_url = f"http://127.0.0.1:{port}/models/{OWNER}/comfort/v1/predict"
            await asyncio.to_thread(wait_http, f"http://127.0.0.1:{port}/healthz", 30, None)
            body_file = work / "body.json"
            body_file.write_text(json.dumps({"inputs": {"temperature": 31.5, "light": 120}}))
            paths = {
                "direct": (
                    f"{replica_url}/v1/predict",
                    {"Authorization": f"Bearer {model_token(platform_secret(ctx.settings), model_id)}"},
                ),
                "gateway": (gateway_url, {"Authorization": f"Bearer {token}"}),
            }
            sampler = Sampler(replica.pid)
            points: dict[str, Any] = {}
            for concurrency in concurrencies:
                runs: dict[str, list[dict[str, Any]]] = {"direct": [], "gateway": []}
                for _ in range(rounds):
                    for name, (url, headers) in paths.items():
                        runs[name].append(
                            await asyncio.to_thread(load, url, body_file, concurrency, seconds, sampler, headers)
                        )
                direct, gateway = _median_run(runs["direct"]), _median_run(runs["gateway"])
                points[str(concurrency)] = {
                    "direct": direct,
                    "gateway": gateway,
                    "p50_overhead_ms": round(gateway["p50_ms"] - direct["p50_ms"], 3),
                    "rps_ratio_gateway_to_direct": round(gateway["rps"] / direct["rps"], 2) if direct["rps"] else None,
                }
            server.should_exit = True
            await asyncio.wait_for(serving, 10)
        finally:
            stop(replica, 10)
            await ctx.bus.close()
            await nats.stop()
            ctx.db.dispose()
    overhead = points["1"]["p50_overhead_ms"] if "1" in points else None
    errors = sum(p[k]["errors"] for p in points.values() for k in ("direct", "gateway"))
    return {
        "benchmark": "gateway",
        "smoke": args.smoke,
        "machine": machine(),
        "settings": {
            "concurrency": concurrencies,
            "seconds_per_point": seconds,
            "rounds": rounds,
            "figure": "median round, direct and gateway alternating",
        },
        "target": "gateway p50 overhead over a direct replica call at c=1 < 1 ms",
        "points": points,
        "errors": errors,
        "targets_met": {"gateway_p50_overhead_c1_under_1ms": overhead is not None and overhead < 1.0},
        "ok": errors == 0 and overhead is not None and overhead < 1.0,
    }


def main() -> None:
    p = parser(__doc__, "comma-separated concurrency levels (default 1,8; smoke 1)")
    p.add_argument("--seconds", type=float, default=3.0, help="measured seconds per point and round")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per concurrency level")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from aiot.cli.server import _loop_factory  # uvloop, as `aiot up` runs the control plane

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        emit(runner.run(main_async(args)), args.output)


if __name__ == "__main__":
    main()
