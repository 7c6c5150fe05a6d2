"""Ownership, not only roles, over real HTTP on a populated `aiot up`: each person reaches only what is theirs.

tests/api/test_roles_matrix.py proves each route admits the right *roles*; this module proves that within a
role one person cannot reach another's resources (two end users, two app developers, two AI developers), and
that the secrets the platform hands out (passwords, API tokens, device credentials, workload credentials, join
tokens) appear nowhere after their one-time issuance: not in any API response, not in `GET /api/v1/logs`, not in
the control plane's stdout.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import Deployment, start_populated, wait_for

pytestmark = pytest.mark.slow
DENIED = (403, 404)


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    yield from start_populated(tmp_path_factory.mktemp("perm"), devices=1)


def _status(dep: Deployment, method: str, path: str, who: str, **kwargs: Any) -> int:
    return dep.api.call(method, path, who, ok=(), **kwargs).status_code


def test_an_end_user_cannot_see_or_touch_another_users_instances_and_schedules(dep: Deployment) -> None:
    api, inst, sched = dep.api, dep.pop.ids["instance"], dep.pop.ids["schedule"]
    # The owner sees them (so the denials below are about ownership, not about ids that do not exist).
    assert [i["id"] for i in api.get("/instances", "eve")] == [inst]
    assert [s["id"] for s in api.get("/schedules", "eve")] == [sched]
    assert api.get(f"/schedules/{sched}/occurrences", "eve") is not None
    # Another end user: lists are empty, every id-addressed operation is refused.
    assert api.get("/instances", "eve2") == []
    assert api.get("/schedules", "eve2") == []
    refused = {
        ("GET", f"/instances/{inst}"): {},
        ("POST", f"/instances/{inst}/run"): {"json": {"minutes": 5}},
        ("POST", f"/instances/{inst}/stop"): {},
        ("DELETE", f"/instances/{inst}"): {},
        ("GET", f"/schedules/{sched}"): {},
        ("GET", f"/schedules/{sched}/occurrences"): {},
        ("PATCH", f"/schedules/{sched}"): {"json": {"enabled": False}},
        ("DELETE", f"/schedules/{sched}"): {},
        ("POST", "/schedules"): {
            "json": {
                "app_instance_id": inst,
                "spec": {
                    "timezone": "UTC",
                    "start_date": "2030-01-01",
                    "end_date": "2030-01-02",
                    "times": ["09:00"],
                    "duration_minutes": 10,
                },
            }
        },
        ("GET", f"/logs?app_instance_id={inst}"): {},
    }
    got = {f"{m} {p}": _status(dep, m, p, "eve2", **kw) for (m, p), kw in refused.items()}
    assert all(code in DENIED for code in got.values()), got
    # App developers are not end users of someone else's instance either.
    assert _status(dep, "GET", f"/instances/{inst}", "dev2") in DENIED
    # Nothing changed for the owner.
    assert api.get(f"/schedules/{sched}", "eve")["enabled"] is True
    assert api.get(f"/instances/{inst}", "eve")["id"] == inst


def test_developers_cannot_delete_deprecate_download_or_deploy_anothers_packages(dep: Deployment) -> None:
    cases = [  # (who, kind, ref of someone else's package)
        ("dev2", "apps", "smart-classroom"),
        ("ada2", "models", "comfort"),
        ("ada", "models", "echo"),
    ]
    got: dict[str, int] = {}
    for who, kind, ref in cases:
        for method, suffix, kwargs in (("DELETE", "", {}), ("POST", "/deprecate", {}), ("GET", "/download", {})):
            got[f"{who} {method} /{kind}/{ref}{suffix}"] = _status(dep, method, f"/{kind}/{ref}{suffix}", who, **kwargs)
        if kind == "models":
            got[f"{who} deploy {ref}"] = _status(dep, "POST", f"/models/{ref}/deploy", who, json={"replicas": 1})
    assert all(code in DENIED for code in got.values()), got
    # Still there, still active, for everyone to browse.
    for kind, ref in (("apps", "smart-classroom"), ("models", "comfort"), ("models", "echo")):
        assert dep.api.get(f"/{kind}/{ref}", "eve")["status"] == "active"
    # The owner may (positive control): deploy echo, and its deployment is the owner's alone to remove.
    dep.api.call("POST", "/models/echo/deploy", "ada2", json={"replicas": 1})
    assert _status(dep, "DELETE", "/deployments/echo", "ada") in DENIED
    workloads = dep.api.get("/workloads", "ada2")
    echo_id = dep.api.get("/models/echo")["id"]
    assert workloads and all(w["package_id"] == echo_id for w in workloads)
    assert dep.api.get("/workloads", "ada") == []
    assert _status(dep, "GET", f"/workloads/{workloads[0]['id']}", "ada") in DENIED


def test_a_user_cannot_list_or_revoke_anothers_tokens(dep: Deployment) -> None:
    eve_tokens = dep.api.get("/auth/tokens", "eve")
    assert eve_tokens
    eve2_ids = {t["id"] for t in dep.api.get("/auth/tokens", "eve2")}
    assert not eve2_ids & {t["id"] for t in eve_tokens}
    for token in eve_tokens:
        assert _status(dep, "DELETE", f"/auth/tokens/{token['id']}", "eve2") in DENIED
    assert dep.api.call("GET", "/auth/me", "eve").json()["username"] == "eve"


def _secrets(dep: Deployment) -> dict[str, str]:
    """Every secret handed out so far, plus the secret half of each token (what the log redaction must drop),
    plus the derived NATS passwords of the workloads that exist."""
    from aiot.deployer.workloads import workload_password
    from aiot.secrets_store import platform_secret
    from aiot.settings import Settings

    found = dict(dep.pop.secrets)
    for name, value in list(found.items()):
        if value.count(".") >= 2:  # aiot.<id>.<secret>: the id may be shown, the secret never
            found[f"{name} (secret part)"] = value.rsplit(".", 1)[1]
    secret = platform_secret(Settings(data_dir=dep.data_dir))
    for workload in dep.api.get("/workloads"):
        found[f"workload {workload['id']} NATS password"] = workload_password(
            secret, workload["id"], workload.get("generation", 1)
        )
    found["platform NATS password"] = json.loads((dep.data_dir / "nats" / "platform-credentials.json").read_text())[
        "password"
    ]
    found["platform secret key"] = secret.decode()
    return found


def _leaks(text: str, secrets: dict[str, str]) -> list[str]:
    return [name for name, value in secrets.items() if len(value) >= 8 and value in text]


def test_secrets_never_appear_in_api_responses_logs_or_stdout(dep: Deployment) -> None:
    api = dep.api
    # Provoke the places secrets could slip into: a failed login with a real password of someone else, a
    # rotated device credential (issued once, in that response only), a password change, a bad bearer token.
    device = dep.pop.devices["temperature-0"]
    rotated = api.call("POST", f"/devices/{device['id']}/credentials/rotate").json()
    issued = json.dumps(rotated)
    api.call(
        "POST", "/auth/login", None, ok=(401,), json={"username": "eve", "password": dep.pop.secrets["admin password"]}
    )
    api.call("GET", "/auth/me", None, ok=(401,), headers={"Authorization": f"Bearer {api.tokens['eve']}x"})
    api.call(
        "POST",
        "/auth/password",
        "eve2",
        ok=(204,),
        json={"current_password": dep.pop.secrets["user password"], "new_password": "another-long-password-9"},
    )
    dep.pop.secrets["eve2 new password"] = "another-long-password-9"
    secrets = _secrets(dep)
    new_password = next((v for k, v in rotated.get("connect", rotated).items() if "password" in k), None)
    assert new_password and new_password in issued
    secrets["rotated device password"] = new_password
    # Every GET that lists or shows something, as admin (who sees the most) and as each other role.
    ids = dep.pop.ids
    paths = [
        "/users",
        "/users/eve",
        "/auth/me",
        "/auth/tokens",
        "/devices",
        f"/devices/{device['id']}",
        "/device-types",
        "/locations",
        "/models",
        "/models/comfort",
        "/apps",
        "/apps/smart-classroom",
        "/instances",
        f"/instances/{ids['instance']}",
        "/schedules",
        f"/schedules/{ids['schedule']}",
        "/deployments",
        "/deployments/echo",
        "/workloads",
        "/nodes",
        "/outbox",
        "/status",
        "/agent/assignments",
    ]
    paths += [f"/workloads/{w['id']}" for w in api.get("/workloads")]
    seen = 0
    for who in ("admin", "ai_developer", "app_developer", "end_user"):
        for path in paths:
            response = api.call("GET", path, who, ok=())
            seen += 1
            assert not _leaks(response.text, secrets), (who, path, _leaks(response.text, secrets))

    # The log stream (everything the platform's services logged, as an admin sees it) and stdout.
    def logged() -> dict | None:
        body = api.get("/logs?limit=1000")
        return body if body["count"] > 0 else None

    records = wait_for("log records in the stream", logged, timeout=30)
    time.sleep(1.5)  # let the provoked requests' records land too
    records = api.get("/logs?limit=1000")
    text = json.dumps(records["records"])
    assert not _leaks(text, secrets), _leaks(text, secrets)
    stdout = dep.plane.log()
    assert not _leaks(stdout, secrets), _leaks(stdout, secrets)
    # The scan means something: the stream and stdout are not empty, and the API really does issue secrets.
    assert records["count"] >= 10 and len(stdout) > 1000
    print(
        f"\nsecret scan: {len(secrets)} secrets x {seen} API responses, {records['count']} log records, "
        f"{len(stdout)} bytes of stdout: no leak"
    )
