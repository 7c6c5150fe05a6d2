"""Every sample package validates, uploads and downloads byte-identical; versions are immutable."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

from aiot.artifacts.packing import zip_folder
from aiot.store.models import Role
from tests.support.live import LivePlatform

from .conftest import EXAMPLES


async def push_device_types(live: LivePlatform) -> None:
    for path in sorted((EXAMPLES / "device-types").glob("*.json")):
        response = await live.client.post(
            "/api/v1/device-types", content=path.read_bytes(), headers=live.headers(Role.admin)
        )
        assert response.status_code in (200, 201), response.text


async def push(live: LivePlatform, collection: str, archive: Path, who: Role) -> dict:
    response = await live.client.post(
        f"/api/v1/{collection}",
        content=archive.read_bytes(),
        headers={**live.headers(who), "Content-Type": "application/zip"},
    )
    assert response.status_code in (200, 201), response.text
    return response.json()


async def test_every_sample_round_trips(live: LivePlatform, tmp_path: Path) -> None:
    await push_device_types(live)
    types = (await live.client.get("/api/v1/device-types", headers=live.headers(Role.end_user))).json()
    assert {t["name"] for t in types} >= {"camera", "light", "temperature", "fan", "display", "ac", "lamp", "alarm"}
    for collection, folder, who in [
        ("models", "models/face-detector", Role.ai_developer),
        ("models", "models/comfort", Role.ai_developer),
        ("apps", "apps/intruder-alert", Role.app_developer),
        ("apps", "apps/smart-classroom", Role.app_developer),
        ("apps", "apps/smart-home", Role.app_developer),
    ]:
        archive = zip_folder(EXAMPLES / folder, tmp_path / (folder.replace("/", "_") + ".zip"))
        row = await push(live, collection, archive, who)
        download = await live.client.get(f"/api/v1/{collection}/{row['id']}/download", headers=live.headers(who))
        assert download.status_code == 200
        assert download.content == archive.read_bytes(), f"{folder} changed in the round trip"
        assert download.headers["content-type"] == "application/zip"
        shown = await live.client.get(
            f"/api/v1/{collection}/{row['name']}:{row['version']}", headers=live.headers(Role.end_user)
        )
        assert shown.json()["id"] == row["id"]


async def test_same_version_is_immutable(live: LivePlatform, tmp_path: Path) -> None:
    archive = zip_folder(EXAMPLES / "models/comfort", tmp_path / "comfort.zip")
    first = await push(live, "models", archive, Role.ai_developer)
    # The hash of the checked requirements file is recorded; node agents verify it before installing.
    checked = hashlib.sha256((EXAMPLES / "models/comfort/requirements.txt").read_bytes()).hexdigest()
    assert first["manifest"]["requirements_sha256"] == checked
    again = await live.client.post(
        "/api/v1/models", content=archive.read_bytes(), headers=live.headers(Role.ai_developer)
    )
    assert again.status_code == 200 and again.json()["id"] == first["id"]
    changed = tmp_path / "changed.zip"
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(changed, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "model.json":
                manifest = json.loads(data)
                manifest["description"] = "something else"
                data = json.dumps(manifest).encode()
            dst.writestr(item, data)
    conflict = await live.client.post(
        "/api/v1/models", content=changed.read_bytes(), headers=live.headers(Role.ai_developer)
    )
    assert conflict.status_code == 409
    assert conflict.json()["error"]["details"]["field"] == "version"
    repo_objects = await _objects(live)
    assert repo_objects == [first["sha256"]]


async def _objects(live: LivePlatform) -> list[str]:
    from aiot.blobs.base import ARTIFACTS
    from aiot.blobs.factory import open_blob_store

    return sorted(b.name for b in await open_blob_store(live.ctx.settings, live.ctx.bus, ARTIFACTS).list())


async def test_app_needs_its_models_and_device_types(live: LivePlatform, tmp_path: Path) -> None:
    archive = zip_folder(EXAMPLES / "apps/smart-classroom", tmp_path / "classroom.zip")
    response = await live.client.post(
        "/api/v1/apps", content=archive.read_bytes(), headers=live.headers(Role.app_developer)
    )
    assert response.status_code == 422
    problems = response.json()["error"]["details"]["problems"]
    codes = {p["code"] for p in problems}
    assert "unknown_model" in codes and "unknown_device_type" in codes, problems
    assert all(p["file"] == "app.json" and p["field"] for p in problems)
    assert await _objects(live) == []


async def test_delete_only_when_unused_and_owner_rules(live: LivePlatform, tmp_path: Path) -> None:
    await push_device_types(live)
    model = await push(live, "models", zip_folder(EXAMPLES / "models/comfort", tmp_path / "m.zip"), Role.ai_developer)
    app = await push(
        live, "apps", zip_folder(EXAMPLES / "apps/smart-classroom", tmp_path / "a.zip"), Role.app_developer
    )
    other_dev = live.add_user("otherdev", Role.app_developer)
    assert (await live.client.delete(f"/api/v1/apps/{app['id']}", headers=other_dev)).status_code == 403
    refused = await live.client.delete(f"/api/v1/models/{model['id']}", headers=live.headers(Role.ai_developer))
    assert refused.status_code == 409 and "smart-classroom" in refused.json()["error"]["message"]
    in_use_type = await live.client.delete("/api/v1/device-types/fan", headers=live.headers(Role.admin))
    assert in_use_type.status_code == 409
    deprecated = await live.client.post(
        f"/api/v1/models/{model['id']}/deprecate", headers=live.headers(Role.ai_developer)
    )
    assert deprecated.json()["status"] == "deprecated"
    listed = await live.client.get("/api/v1/models", headers=live.headers(Role.end_user))
    assert listed.json() == []
    assert (
        await live.client.delete(f"/api/v1/apps/{app['id']}", headers=live.headers(Role.app_developer))
    ).status_code == 204
    assert (
        await live.client.delete(f"/api/v1/models/{model['id']}", headers=live.headers(Role.ai_developer))
    ).status_code == 204
    assert await _objects(live) == []
    missing = await live.client.get(f"/api/v1/models/{model['id']}", headers=live.headers(Role.end_user))
    assert missing.status_code == 404


async def test_schemas_are_published(live: LivePlatform) -> None:
    for kind in ("model", "app", "device-type"):
        response = await live.client.get(f"/api/v1/schemas/{kind}")
        assert response.status_code == 200 and response.json()["$schema"].startswith("https://json-schema.org")
        published = Path(__file__).resolve().parents[2] / "docs" / "packages" / f"{kind}.schema.json"
        assert json.loads(published.read_text()) == response.json(), f"docs/packages/{published.name} is stale"
    assert (await live.client.get("/api/v1/schemas/nope")).status_code == 404
