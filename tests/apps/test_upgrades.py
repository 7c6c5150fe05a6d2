"""Deployment-lifecycle acceptance: explicit upgrades of an app instance, watched, and rolled back by themselves.

A real platform (`aiot up --nodes 1`) runs a small backend app whose every version logs its version at start.
Version 2.0.0 raises on start: upgrading a running instance to it crash-loops, so the platform goes back to
1.0.0 (which runs, and logs, again), says why in the history and mails the owner. A good upgrade succeeds after
the soak period, and a rollback by hand returns to the version it replaced.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import free_port
from tests.support.processes import RunningPlatform, start_platform

pytestmark = pytest.mark.slow

GOOD = (
    "import logging\nimport platform_sdk\n\nlogging.basicConfig(level=logging.INFO)\n"
    "logging.getLogger('probe').info('probe %s started', {version!r})\nplatform_sdk.run()\n"
)
CRASHES = "raise RuntimeError('version {version} cannot start: missing setting')\n"


def app_zip(version: str, body: str, upgrade: str = "stop-first") -> bytes:
    manifest = {
        "format": 1,
        "name": "upgrade-probe",
        "version": version,
        "kind": "backend",
        "entrypoint": "main.py",
        "upgrade": upgrade,
        "description": "logs its version",
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.json", json.dumps(manifest))
        archive.writestr("main.py", body.format(version=version))
    return buffer.getvalue()


class Api:
    """Calls as one user (the platform's admin, or the end user `as_user` returns)."""

    def __init__(self, plane: RunningPlatform, username: str = "admin", password: str = "admin-password-1") -> None:
        self.plane = plane
        login = httpx.post(
            f"{plane.url}/api/v1/auth/login", json={"username": username, "password": password}, timeout=30
        )
        assert login.status_code == 200, login.text
        self.headers = {"Authorization": f"Bearer {login.json()['token']}"}
        self.admin: Api = self

    def call(self, method: str, path: str, ok: tuple[int, ...] = (200, 201), **kwargs: Any) -> Any:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        response = httpx.request(method, f"{self.plane.url}/api/v1{path}", headers=headers, timeout=60, **kwargs)
        assert response.status_code in ok, f"{method} {path}: {response.status_code} {response.text}"
        return response.json() if response.content else None

    def wait(self, what: str, probe: Callable[[], Any], timeout: float = 90.0) -> Any:
        return self.plane.wait(what, probe, timeout)

    def upload(self, version: str, body: str, upgrade: str = "stop-first") -> dict:
        return self.call(
            "POST", "/apps", content=app_zip(version, body, upgrade), headers={"Content-Type": "application/zip"}
        )

    def running(self, instance_id: str, app: str) -> dict | None:
        instance = self.call("GET", f"/instances/{instance_id}")
        return instance if instance["app"] == app and instance["workload_state"] == "running" else None

    def logged(self, workload_id: str, text: str) -> bool:
        found = self.admin.call("GET", "/logs", params={"workload_id": workload_id, "text": text, "limit": 5})
        return found["count"] > 0

    def last_rollout(self, instance_id: str) -> dict:
        return self.call("GET", f"/instances/{instance_id}/history")[-1]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    data_dir = tmp_path_factory.mktemp("upgrades") / "data"
    with start_platform(
        data_dir, free_port(), ("--nodes", "1"), AIOT_ROLLOUT_SOAK_SECONDS="3", AIOT_ROLLOUT_MAX_RESTARTS="2"
    ) as plane:
        plane.wait_healthy()
        admin = Api(plane)
        admin.upload("1.0.0", GOOD)
        admin.upload("2.0.0", CRASHES)
        admin.upload("1.1.0", GOOD, upgrade="start-first")
        admin.call("POST", "/locations", json={"name": "Lab", "kind": "building", "timezone": "UTC"})
        admin.call(
            "POST",
            "/users",
            json={"username": "eve", "password": "eve-password-1", "role": "end_user", "email": "eve@example.com"},
        )
        admin.call("POST", "/locations/Lab/grants", json={"user": "eve"})
        eve = Api(plane, "eve", "eve-password-1")  # the end user who owns the instance
        eve.admin = admin
        yield eve


def test_a_crashing_version_is_rolled_back_and_the_old_one_runs_again(api: Api) -> None:
    instance = api.call("POST", "/instances", json={"app": "upgrade-probe:1.0.0", "location": "Lab"})
    api.call("POST", f"/instances/{instance['id']}/run", json={})
    first = api.wait("1.0.0 running", lambda: api.running(instance["id"], "upgrade-probe:1.0.0"))
    api.wait("1.0.0's start in its log", lambda: api.logged(first["workload_id"], "probe 1.0.0 started"))

    rollout = api.call("POST", f"/instances/{instance['id']}/upgrade", json={"version": "2.0.0"})
    assert (rollout["from_version"], rollout["to_version"], rollout["state"]) == ("1.0.0", "2.0.0", "rolling")
    assert api.call("GET", f"/instances/{instance['id']}")["rollout"]["id"] == rollout["id"]

    done = api.wait(
        "the automatic rollback", lambda: (r := api.last_rollout(instance["id"]))["state"] != "rolling" and r
    )
    assert done["state"] == "rolled_back", done
    assert "crash loop" in done["reason"] and "cannot start" in done["reason"], done["reason"]
    again = api.wait("1.0.0 running again", lambda: api.running(instance["id"], "upgrade-probe:1.0.0"))
    assert again["workload_id"] not in (first["workload_id"], None)  # a new run of the old version ...
    api.wait("... that started and logged", lambda: api.logged(again["workload_id"], "probe 1.0.0 started"))
    assert again["rollout"] is None

    history = api.call("GET", f"/instances/{instance['id']}/history")
    assert [(h["from_version"], h["to_version"], h["state"]) for h in history] == [("1.0.0", "2.0.0", "rolled_back")]
    mails = api.call("GET", "/outbox", params={"kind": "rollback"})
    assert len(mails) == 1 and "rolled back to 1.0.0" in mails[0]["subject"], mails
    assert "cannot start" in mails[0]["body"] and "1.0.0, which runs again" in mails[0]["body"], mails

    bad = httpx.post(
        f"{api.plane.url}/api/v1/instances/{instance['id']}/upgrade",
        headers=api.headers,
        json={"version": "9.9.9"},
        timeout=30,
    )
    assert bad.status_code == 404 and "9.9.9" in bad.text and "version" in bad.text, bad.text


def test_a_good_upgrade_succeeds_after_the_soak_and_a_rollback_by_hand_returns(api: Api) -> None:
    instance = next(i for i in api.call("GET", "/instances") if i["app"].startswith("upgrade-probe"))
    old_workload = instance["workload_id"]
    rollout = api.call("POST", f"/instances/{instance['id']}/upgrade", json={"version": "1.1.0"})
    done = api.wait(
        "the upgrade's verdict", lambda: (r := api.last_rollout(instance["id"]))["state"] != "rolling" and r
    )
    assert done["state"] == "succeeded" and done["id"] == rollout["id"], done
    now = api.wait("1.1.0 running", lambda: api.running(instance["id"], "upgrade-probe:1.1.0"))
    assert now["workload_id"] != old_workload
    old = api.admin.call("GET", f"/workloads/{old_workload}")
    assert old["desired"] == "stopped", old  # start-first: the old copy stopped once the new one was proven
    api.wait("1.1.0's start in its log", lambda: api.logged(now["workload_id"], "probe 1.1.0 started"))

    back = api.call("POST", f"/instances/{instance['id']}/rollback")
    assert (back["from_version"], back["to_version"], back["manual_rollback"]) == ("1.1.0", "1.0.0", True)
    api.wait("1.0.0 running after the rollback by hand", lambda: api.running(instance["id"], "upgrade-probe:1.0.0"))
    history = api.call("GET", f"/instances/{instance['id']}/history")
    assert [(h["to_version"], h["state"]) for h in history][:2] == [("2.0.0", "rolled_back"), ("1.1.0", "succeeded")]
    assert history[2]["to_version"] == "1.0.0", history
