"""Two instances of one app started at once both find their model undeployed; the second one's insert of the
model's deployment then violates its unique key. Before, that start failed (the scheduler marked the run
`failed`, seen in the multi-host test on PostgreSQL); now the start runs once more and uses the deployment the
other start made."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError

from aiot.apps import service as apps_service
from aiot.services.contract import ServiceContext
from aiot.settings import Settings
from aiot.store.engine import Database


async def test_a_start_that_lost_the_deployment_race_is_run_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def racing_start(session: Any, secret: bytes, instance: Any, **_: Any) -> None:
        calls.append(instance)
        if len(calls) == 1:
            raise IntegrityError("INSERT INTO model_deployments", {}, Exception("uq_model_deployments_model_id"))

    async def no_wake(_ctx: Any) -> None:
        return None

    monkeypatch.setattr(apps_service, "start_instance", racing_start)
    monkeypatch.setattr(apps_service, "get_instance", lambda _session, instance_id: instance_id)
    monkeypatch.setattr(apps_service, "workloads_changed", no_wake)
    ctx = ServiceContext(settings=Settings(data_dir=tmp_path), db=Database(f"sqlite:///{tmp_path / 'a.db'}"))
    await apps_service.DeployerInstanceController(ctx).start("ins_1", "occ_1", None)
    assert calls == ["ins_1", "ins_1"]
