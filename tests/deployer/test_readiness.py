"""Readiness gate: an app workload bound to a model is not placed until a replica of that model is running.

Before the gate the app was placed at once, started before its model, exited with ModelUnavailable and
crash-looped (3 restarts in the demo's first minute). The agents' side is played over the real HTTP protocol.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiot.deployer.workloads import new_workload
from aiot.secrets_store import platform_secret
from aiot.store.models import Role
from aiot.store.runtime import WorkloadKind
from tests.deployer.helpers import deploy_comfort
from tests.support.live import LivePlatform, live_platform

from .test_deployer_api import _assignments, _join, _report

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


async def _workload(live: LivePlatform, workload_id: str) -> dict:
    response = await live.client.get(f"/api/v1/workloads/{workload_id}", headers=live.headers(Role.admin))
    assert response.status_code == 200, response.text
    return response.json()


async def _until(what: str, check, timeout: float = 10.0):  # noqa: ANN001, ANN202 - small test helper
    for _ in range(int(timeout / 0.2)):
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


async def test_app_waits_for_its_model_then_starts_and_says_why(tmp_path: Path) -> None:
    async with live_platform(tmp_path, services=("nats-auth", "deployer")) as live:
        live.ctx.settings.node_grace_seconds = 120  # the fake agent reports only when the test says so
        node = await _join(live, "n1")
        model_id = await deploy_comfort(live, tmp_path, 1)
        with live.ctx.db.session() as session:  # the workload an app instance bound to comfort becomes
            app = new_workload(
                session,
                platform_secret(live.ctx.settings),
                kind=WorkloadKind.app,
                package_id="app_test",
                sha256="0" * 64,
                owner_id=None,
                group_id="ins_test",
                config={"kind": "app", "models": {"comfort": {"model_id": model_id, "name": "comfort"}}},
                resources={"cpu": 0.1, "memory_mb": 64},
            )
            app_id = app.id

        async def waiting() -> dict | None:
            detail = await _workload(live, app_id)
            return detail if detail.get("state") == "waiting" else None

        detail = await _until("the app to wait", waiting)
        assert detail["reason"] == "model comfort: 0 of 1 replicas ready", detail
        assert detail["node_id"] is None
        replica = next(a for a in await _assignments(live, node) if a["workload_id"] != app_id)
        await asyncio.sleep(1.5)  # several deployer passes: still held while the replica only starts
        await _report(
            live,
            node,
            workloads=[
                {"workload_id": replica["workload_id"], "generation": replica["generation"], "state": "starting"}
            ],
        )
        await asyncio.sleep(1.5)
        assert (await _workload(live, app_id))["node_id"] is None

        await _report(
            live,
            node,
            workloads=[
                {
                    "workload_id": replica["workload_id"],
                    "generation": replica["generation"],
                    "state": "running",
                    "endpoint": "http://127.0.0.1:1",
                }
            ],
        )

        async def placed() -> list | None:
            mine = [a for a in await _assignments(live, node) if a["workload_id"] == app_id]
            return mine or None

        await _until("the app to be placed once its model is ready", placed)


async def test_past_the_deadline_the_app_shows_failed_with_the_reason(tmp_path: Path) -> None:
    async with live_platform(tmp_path, services=("nats-auth", "deployer")) as live:
        live.ctx.settings.model_ready_deadline_seconds = 0.5
        await _join(live, "n1")
        with live.ctx.db.session() as session:
            app = new_workload(
                session,
                platform_secret(live.ctx.settings),
                kind=WorkloadKind.app,
                package_id="app_test",
                sha256="0" * 64,
                owner_id=None,
                group_id="ins_test",
                config={"kind": "app", "models": {"m": {"model_id": "mdl_gone", "name": "gone"}}},
                resources={"cpu": 0.1, "memory_mb": 64},
            )
            app_id = app.id

        async def failed() -> dict | None:
            detail = await _workload(live, app_id)
            return detail if detail.get("state") == "failed" else None

        detail = await _until("the app to fail", failed)
        assert detail["reason"].startswith("model gone: 0 of 0 replicas ready (still not ready after 0.5s)"), detail
