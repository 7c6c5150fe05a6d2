"""Issue acceptance: the whole bad-package corpus, sent through the HTTP API, is rejected with a 4xx naming the
fault, and leaves nothing behind in the object store or the database."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from aiot.artifacts.packing import zip_folder
from aiot.artifacts.repository import ArtifactRepository
from aiot.blobs.base import ARTIFACTS
from aiot.blobs.factory import open_blob_store
from aiot.store.catalog import AppPackage, DeviceType, ModelPackage
from aiot.store.models import Role
from tests.artifacts.test_bad_packages import CASES
from tests.support.live import LivePlatform

from .conftest import EXAMPLES
from .test_samples_roundtrip import push, push_device_types

WHO = {"models": Role.ai_developer, "apps": Role.app_developer, "device-types": Role.admin}


def _counts(live: LivePlatform) -> tuple[int, int, int]:
    with live.ctx.db.session() as session:
        return tuple(
            session.scalar(select(func.count()).select_from(t)) for t in (ModelPackage, AppPackage, DeviceType)
        )  # type: ignore[return-value]


async def test_bad_corpus_through_the_api(live: LivePlatform, tmp_path: Path) -> None:
    # The platform holds every sample model and device type, as the library-level corpus assumes.
    await push_device_types(live)
    for name in ("face-detector", "comfort"):
        await push(live, "models", zip_folder(EXAMPLES / "models" / name, tmp_path / f"{name}.zip"), Role.ai_developer)
    repo = ArtifactRepository(live.ctx.db, open_blob_store(live.ctx.settings, live.ctx.bus, ARTIFACTS))
    objects_before, counts_before = sorted(await repo.object_names()), _counts(live)

    replayable = [c for c in CASES if hasattr(c.build, "upload")]
    assert len(replayable) >= 20
    failures = []
    for case in replayable:
        collection, payload = case.build.upload  # type: ignore[attr-defined]
        headers = {
            **live.headers(WHO[collection]),
            "X-Filename": case.file if collection == "device-types" else "pkg.zip",
        }
        response = await live.client.post(f"/api/v1/{collection}", content=payload(), headers=headers)
        if not 400 <= response.status_code < 500:
            failures.append(f"{case.id}: HTTP {response.status_code}")
            continue
        error = response.json()["error"]
        problems = error["details"].get("problems", [])
        named = any((p["code"], p["file"], p["field"]) == (case.code, case.file, case.field) for p in problems)
        if not named or case.code not in str(problems):
            failures.append(f"{case.id}: expected {case.code} in {case.file} [{case.field}], got {problems}")
        if "!r}" in error["message"] or "{value" in error["message"]:
            failures.append(f"{case.id}: unformatted message template: {error['message']}")
        if case.file not in error["message"]:
            failures.append(f"{case.id}: message does not name {case.file}: {error['message']}")
    assert failures == [], "\n".join(failures)
    assert sorted(await repo.object_names()) == objects_before
    assert _counts(live) == counts_before
    assert not list((live.ctx.settings.data_dir / "tmp").iterdir())  # no upload left on disk either
