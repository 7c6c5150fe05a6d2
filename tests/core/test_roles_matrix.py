"""Every /api/v1 route declares its audience, and enforces it: each role allowed or 403, anonymous 401; and
every route that takes an id keeps one user's things from another user of the same role (404/403)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import select

from aiot.accounts import service as accounts
from aiot.api.app import API_PREFIX, API_ROUTERS
from aiot.api.security import Allow, _Public
from aiot.notify.outbox import enqueue
from aiot.store.catalog import AppPackage, DeviceType
from aiot.store.devices import Device
from aiot.store.engine import Database
from aiot.store.models import Role, User

DEVICE_TYPES = Path(__file__).resolve().parents[2] / "examples" / "device-types"


def _audience(route: APIRoute) -> Allow | _Public | None:
    """The one Allow/Public dependency a route declares (searching nested dependencies too)."""
    found: list[Allow | _Public] = []
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        if isinstance(dep.call, Allow | _Public):
            found.append(dep.call)
        stack.extend(dep.dependencies)
    assert len(found) <= 1, f"{route.path} declares more than one audience: {found}"
    return found[0] if found else None


@dataclass(frozen=True)
class _Route:
    path: str
    methods: set[str]
    audience: Allow | _Public | None


def _api_routes(api: TestClient) -> list[_Route]:
    routes = [
        _Route(API_PREFIX + r.path, set(r.methods), _audience(r))
        for router in API_ROUTERS for r in router.routes if isinstance(r, APIRoute)
    ]
    # Cross-check with what the app really serves, so a router mounted outside API_ROUTERS cannot hide.
    served = {(path, m.upper()) for path, ops in api.app.openapi()["paths"].items() if path.startswith(API_PREFIX)
              for m in ops}
    declared = {(r.path, m) for r in routes for m in r.methods}
    assert served == declared, f"served but not in API_ROUTERS: {served - declared}"
    return routes


def test_every_api_route_declares_its_audience(api: TestClient) -> None:
    routes = _api_routes(api)
    assert len(routes) >= 10
    missing = [f"{sorted(r.methods)} {r.path}" for r in routes if r.audience is None]
    assert missing == [], f"routes without Allow/AnyUser/Public: {missing}"


def _fill(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "doesnotexist", path)


def test_role_by_endpoint_matrix(api: TestClient, users: dict[Role, str], database: Database) -> None:
    checked = 0
    for route in _api_routes(api):
        audience = route.audience
        for method in route.methods:
            url = _fill(route.path)
            anonymous = api.request(method, url, json={})
            if isinstance(audience, _Public):
                assert anonymous.status_code not in (401, 403), f"{method} {url} should be public"
                continue
            assert anonymous.status_code == 401, f"{method} {url} anonymous -> {anonymous.status_code}"
            assert anonymous.json()["error"]["code"] == "unauthorized"
            for role in Role:
                # A fresh token per call: logout or password routes may revoke the one they were called with.
                with database.session() as session:
                    user = accounts.get_user(session, users[role])
                    token = accounts.issue_token(session, user, ttl=timedelta(minutes=5)).token
                response = api.request(method, url, json={}, headers={"Authorization": f"Bearer {token}"})
                if role in audience.roles:
                    assert response.status_code not in (401, 403), (
                        f"{method} {url} as {role.value}: {response.status_code} {response.text}")
                else:
                    assert response.status_code == 403, f"{method} {url} as {role.value}: {response.status_code}"
                    assert response.json()["error"]["code"] == "forbidden"
                checked += 1
    assert checked >= 20


@pytest.mark.parametrize("path", ["/healthz", "/metrics", "/docs", "/openapi.json"])
def test_public_operational_endpoints(api: TestClient, path: str) -> None:
    assert api.get(path).status_code == 200


def test_unknown_route_gets_json_error(api: TestClient) -> None:
    response = api.get("/api/v1/no-such-thing")
    assert response.status_code == 404
    assert set(response.json()["error"]) == {"code", "message", "details"}


def test_bad_json_body_names_the_field(api: TestClient) -> None:
    response = api.post("/api/v1/auth/login", json={"username": "x"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_failed"
    assert [p["field"] for p in error["details"]["problems"]] == ["password"]


# ---------------------------------------------------------------------- ownership: user A against user B
#
# The matrix above proves roles; this proves owners. Two users of the same role, A and B: A's thing must work
# for A and be invisible (404) or refused (403) for B. To cover a new route, add a row to OWNED_ROUTES (or to
# OWNED_LISTS for a listing that must filter) naming the thing of A it addresses: a key of `OwnedWorld.ids`
# (add a key there if your thing is new). `test_every_route_taking_an_id_has_an_ownership_case` fails for a
# route that takes an id, is open to a non-admin role, and is neither covered here nor listed in NOT_YET_OWNED.


@dataclass(frozen=True)
class Owned:
    """One request addressing A's thing; `{key}` in the path, the params or the body is filled from the world."""

    method: str
    path: str
    role: Role
    json: dict | None = None
    params: dict | None = None
    denied: tuple[int, ...] = (404,)  # what B gets: 404 where existence must not leak


@dataclass(frozen=True)
class OwnedList:
    """A listing A's thing must appear in for A and not for B (`field` of each row holds the id)."""

    path: str
    role: Role
    key: str
    field: str = "id"
    params: dict | None = None


_SPEC = {"timezone": "UTC", "start_date": "2030-01-01", "end_date": "2030-01-02", "times": ["09:00"],
         "duration_minutes": 10}
_DEVICE_READERS = (Role.end_user, Role.app_developer, Role.ai_developer)
OWNED_ROUTES: list[Owned] = [
    *[case for role in _DEVICE_READERS for case in (
        Owned("GET", "/devices/{device}", role),
        Owned("GET", "/devices/{device}/latest", role),
        Owned("GET", "/devices/{device}/history", role),
        Owned("GET", "/locations/{location}", role),
        Owned("GET", "/devices", role, params={"location": "{location}"}),
    )],
    Owned("POST", "/instances", Role.end_user, json={"app": "{app}", "location": "{location}"}),
    Owned("GET", "/instances/{instance}", Role.end_user),
    Owned("POST", "/instances/{instance}/run", Role.end_user, json={"minutes": 5}),
    Owned("POST", "/instances/{instance}/stop", Role.end_user),
    Owned("POST", "/schedules", Role.end_user, json={"app_instance_id": "{instance}", "spec": _SPEC}),
    Owned("GET", "/schedules/{schedule}", Role.end_user),
    Owned("GET", "/schedules/{schedule}/occurrences", Role.end_user),
    Owned("PATCH", "/schedules/{schedule}", Role.end_user, json={"name": "renamed"}),
    Owned("GET", "/logs", Role.end_user, params={"app_instance_id": "{instance}"}, denied=(403, 404)),
    Owned("GET", "/outbox/{email}", Role.end_user),
    # destructive ones last: A's own call removes the thing
    Owned("DELETE", "/schedules/{schedule}", Role.end_user),
    Owned("DELETE", "/instances/{instance}", Role.end_user),
]
OWNED_LISTS: list[OwnedList] = [
    *[OwnedList("/devices", role, "device") for role in _DEVICE_READERS],
    *[OwnedList("/locations", role, "location") for role in _DEVICE_READERS],
    OwnedList("/apps/{app}/locations", Role.end_user, "location"),
    OwnedList("/instances", Role.end_user, "instance"),
    OwnedList("/schedules", Role.end_user, "schedule"),
    OwnedList("/outbox", Role.end_user, "email"),
]
# Routes that take an id and are open to a non-admin role, whose owner check another change adds. Move a
# route from here into OWNED_ROUTES when it gets one; the coverage test keeps this list honest.
NOT_YET_OWNED = {
    "/models/{ref}", "/models/{ref}/download", "/models/{ref}/deprecate", "/models/{ref}/deploy",
    "/apps/{ref}", "/apps/{ref}/download", "/apps/{ref}/deprecate", "/apps/{ref}/instances",
    "/deployments/{ref}", "/workloads/{workload_id}", "/auth/tokens/{token_id}", "/device-types/{ref}",
    "/logs/archives/{day}",
}


@dataclass
class OwnedWorld:
    ids: dict[str, str]
    a: dict[Role, dict[str, str]]  # role -> headers of user A
    b: dict[Role, dict[str, str]]


def _headers(database: Database, username: str, role: Role) -> dict[str, str]:
    with database.session() as session:
        user = User(username=username, role=role, password_hash="!unusable")  # tokens only: no slow hashing
        session.add(user)
        session.flush()
        return {"Authorization": f"Bearer {accounts.issue_token(session, user, ttl=timedelta(minutes=10)).token}"}


@pytest.fixture
def owned_world(api: TestClient, database: Database) -> OwnedWorld:
    """A's home (a location with a device, granted to every A), A's app instance and schedule there."""
    roles = [r for r in Role if r != Role.admin]
    a = {r: _headers(database, f"a-{r.value.replace('_', '')}", r) for r in roles}
    b = {r: _headers(database, f"b-{r.value.replace('_', '')}", r) for r in roles}
    admin = _headers(database, "root", Role.admin)
    with database.session() as session:
        session.add(AppPackage(name="hello", version="1.0.0", sha256="0" * 64, size=1, manifest={}, kind="backend"))
    ids: dict[str, str] = {"app": "hello"}

    def ok(response: Any) -> dict:
        assert response.status_code in (200, 201), response.text
        return response.json()

    ok(api.post("/api/v1/device-types", headers={**admin, "X-Filename": "temperature.json"},
                content=(DEVICE_TYPES / "temperature.json").read_bytes()))
    ids["location"] = ok(api.post("/api/v1/locations", headers=admin, json={"name": "A Home"}))["id"]
    ok(api.post("/api/v1/locations", headers=admin, json={"name": "B Home"}))
    with database.session() as session:
        device = Device(name="thermo", type_id=session.scalar(select(DeviceType.id)), location_id=ids["location"])
        session.add(device)
        session.flush()
        ids["device"] = device.id
    for role in roles:
        ok(api.post("/api/v1/locations/A Home/grants", headers=admin,
                    json={"user": f"a-{role.value.replace('_', '')}"}))
        ok(api.post("/api/v1/locations/B Home/grants", headers=admin,
                    json={"user": f"b-{role.value.replace('_', '')}"}))
    ids["instance"] = ok(api.post("/api/v1/instances", headers=a[Role.end_user],
                                  json={"app": "hello", "location": "A Home"}))["id"]
    with database.session() as session:
        owner = session.scalar(select(User.id).where(User.username == "a-enduser"))
        ids["email"] = enqueue(session, "a@example.com", "hello", "text", kind="test", user_id=owner).id
    ids["schedule"] = ok(api.post("/api/v1/schedules", headers=a[Role.end_user],
                                  json={"app_instance_id": ids["instance"], "spec": _SPEC}))["id"]
    return OwnedWorld(ids, a, b)


def _fill_ids(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, dict):
        return {k: _fill_ids(v, ids) for k, v in value.items()}
    return value


def test_user_b_cannot_reach_user_a_s_things(api: TestClient, owned_world: OwnedWorld) -> None:
    world, wrong = owned_world, []
    for listing in OWNED_LISTS:  # first: some routes below delete A's things
        url = API_PREFIX + _fill_ids(listing.path, world.ids)
        wanted = world.ids[listing.key]
        for who, headers, present in (("A", world.a[listing.role], True), ("B", world.b[listing.role], False)):
            rows = api.get(url, headers=headers, params=listing.params).json()
            if (wanted in {row[listing.field] for row in rows}) != present:
                wrong.append(f"{who} ({listing.role.value}) GET {url}: {wanted} {'missing' if present else 'shown'}")
    for case in OWNED_ROUTES:
        url = API_PREFIX + _fill_ids(case.path, world.ids)
        kwargs = {"json": _fill_ids(case.json, world.ids), "params": _fill_ids(case.params, world.ids)}
        as_b = api.request(case.method, url, headers=world.b[case.role], **kwargs)
        if as_b.status_code not in case.denied:
            wrong.append(f"B ({case.role.value}) {case.method} {url} -> {as_b.status_code}, want {case.denied}")
        as_a = api.request(case.method, url, headers=world.a[case.role], **kwargs)
        if as_a.status_code in (401, 403, 404):  # 503 is fine here: this app has no message bus
            wrong.append(f"A ({case.role.value}) {case.method} {url} -> {as_a.status_code} {as_a.text[:120]}")
    assert wrong == [], "\n".join(wrong)


def test_every_route_taking_an_id_has_an_ownership_case(api: TestClient) -> None:
    def shape(path: str) -> str:  # "/devices/{device}" and "/devices/{device_id}" are the same route
        return re.sub(r"\{[^}]+\}", "{}", path)

    covered = {shape(c.path) for c in OWNED_ROUTES} | {shape(listing.path) for listing in OWNED_LISTS}
    missing = []
    for route in _api_routes(api):
        path = route.path.removeprefix(API_PREFIX)
        audience = route.audience
        if "{" not in path or not isinstance(audience, Allow) or not audience.roles - {Role.admin}:
            continue  # no id, or admins only (admins see everything: there is no B to keep out)
        if shape(path) not in covered and path not in NOT_YET_OWNED:
            missing.append(path)
    assert missing == [], f"routes taking an id with no A-vs-B case in OWNED_ROUTES: {missing}"
    stale = {p for p in NOT_YET_OWNED if shape(p) in covered}
    assert not stale, f"covered now, remove from NOT_YET_OWNED: {stale}"
