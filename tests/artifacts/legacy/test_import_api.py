"""`POST /api/v1/import`: original-format zips converted and stored as the caller, with the caller's rights;
bad originals get a 422 naming the file and key and leave nothing behind."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from aiot.store.catalog import ModelPackage
from aiot.store.devices import Device
from aiot.store.models import Role, User
from tests.support.live import LivePlatform, live_platform

from .originals import app_files, device_instance_files, device_type_files, model_files, to_zip


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[LivePlatform]:
    async with live_platform(tmp_path) as platform:
        yield platform


async def _import(live: LivePlatform, who: Role, files: dict[str, bytes], tmp_path: Path, name: str, **params: object):
    archive = to_zip(files, tmp_path / name)
    return await live.client.post(
        "/api/v1/import",
        content=archive.read_bytes(),
        params=params,
        headers={**live.headers(who), "Content-Type": "application/zip", "X-Filename": name},
    )


async def test_all_four_formats_import_as_the_caller(live: LivePlatform, tmp_path: Path) -> None:
    r = await _import(live, Role.admin, device_type_files(), tmp_path, "types.zip")
    assert r.status_code == 201, r.text
    assert {t["name"] for t in r.json()["stored"]} == {"legacy-temp", "legacy-light", "legacy-cam", "legacy-fan"}

    r = await _import(live, Role.admin, device_instance_files(), tmp_path, "devices.zip")
    assert r.status_code == 201, r.text
    stored = r.json()["stored"]
    assert [loc["name"] for loc in stored["locations"]] == ["mg-road-pune"]
    assert all(d["connect"]["password"] and d["location"] == "mg-road-pune" for d in stored["devices"])

    r = await _import(live, Role.ai_developer, model_files(), tmp_path, "model.zip")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["stored"]["name"] == "fan-advisor" and body["stored"]["status"] == "active"
    assert body["converted"]["manifest"]["entrypoint"] == "aiot_legacy_entry:LegacyModel"
    with live.ctx.db.session() as session:
        row = session.scalar(select(ModelPackage).where(ModelPackage.name == "fan-advisor"))
        owner = session.scalar(select(User).where(User.id == row.owner_id))
        assert owner.role == Role.ai_developer  # stored as the caller

    # the original platform's endpoint shape: the model's owner (or an admin) only, and a clear 503 until deployed
    assert (await live.client.post("/predict/fan-advisor", json={"temperature": 1})).status_code == 401
    r = await live.client.post("/predict/fan-advisor", json={"temperature": 1}, headers=live.headers(Role.end_user))
    assert r.status_code == 403, r.text
    r = await live.client.post("/predict/fan-advisor", json={"temperature": 1}, headers=live.headers(Role.ai_developer))
    assert r.status_code == 503 and "no running replica" in r.text, r.text
    r = await live.client.post("/predict/no-such-model", json={}, headers=live.headers(Role.end_user))
    assert r.status_code == 404, r.text

    r = await _import(
        live, Role.app_developer, app_files("5f1c0ffee"), tmp_path, "app.zip", model="5f1c0ffee=fan-advisor"
    )
    assert r.status_code == 201, r.text
    assert r.json()["stored"]["manifest"]["context"]["models"]["model_0"]["name"] == "fan-advisor"


async def test_roles_and_refusals_leave_nothing_behind(live: LivePlatform, tmp_path: Path) -> None:
    r = await _import(live, Role.app_developer, device_type_files(), tmp_path, "types.zip")
    assert r.status_code == 403, r.text
    r = await _import(live, Role.ai_developer, app_files(), tmp_path, "app.zip")
    assert r.status_code == 403, r.text
    r = await _import(live, Role.end_user, model_files(), tmp_path, "model.zip")
    assert r.status_code == 403, r.text
    r = await _import(live, Role.app_developer, device_instance_files(), tmp_path, "devices.zip")
    assert r.status_code == 403, r.text
    with live.ctx.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Device)) == 0

    # refused originals: a 422 naming the file and key, and nothing stored
    files = {k: v for k, v in model_files().items() if k != "postprocess.py"}
    r = await _import(live, Role.ai_developer, files, tmp_path, "bad.zip")
    assert r.status_code == 422, r.text
    problem = r.json()["error"]["details"]["problems"][0]
    assert problem["file"] == "postprocess.py" and problem["field"] == "config.json postprocessing.name"
    with live.ctx.db.session() as session:
        assert session.scalar(select(func.count()).select_from(ModelPackage)) == 0
    # devices of types not registered yet: refused, none registered (one transaction)
    r = await _import(live, Role.admin, device_instance_files(), tmp_path, "devices.zip")
    assert r.status_code in (404, 422), r.text
    with live.ctx.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Device)) == 0
