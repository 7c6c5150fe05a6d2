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

from aiot.accounts import users as accounts
from aiot.api.app import API_PREFIX, API_ROUTERS
from aiot.api.security import Allow, _Public
from aiot.artifacts import names
from aiot.notify.outbox import enqueue
from aiot.store.catalog import AppPackage, DeviceType, ModelPackage
from aiot.store.devices import Device
from aiot.store.engine import Database
from aiot.store.models import Role, User
from aiot.store.runtime import Workload, WorkloadKind

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
        for router in API_ROUTERS
        for r in router.routes
        if isinstance(r, APIRoute)
    ]
    # Cross-check with what the app really serves, so a router mounted outside API_ROUTERS cannot hide.
    served = {
        (path, m.upper())
        for path, ops in api.app.openapi()["paths"].items()
        if path.startswith(API_PREFIX)
        for m in ops
    }
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
                        f"{method} {url} as {role.value}: {response.status_code} {response.text}"
                    )
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
# (add a key there if your thing is new), or, when every user of the role may read it whoever owns it, to
# PUBLIC_BY_DESIGN with the reason. `test_every_route_taking_an_id_has_an_ownership_case` fails for a method
# and route that takes an id or a name, is open to a non-admin role, and is in neither.


@dataclass(frozen=True)
class Owned:
    """One request addressing A's thing; `{key}` in the path, the params or the body is filled from the world."""

    method: str
    path: str
    role: Role
    json: dict | None = None
    params: dict | None = None
    denied: tuple[int, ...] = (404,)  # what B gets: 404 where existence must not leak
    owner: str = ""  # the owner B's refusal must name (package names: B learns whom to ask)


@dataclass(frozen=True)
class OwnedList:
    """A listing A's thing must appear in for A and not for B (`field` of each row holds the id)."""

    path: str
    role: Role
    key: str
    field: str = "id"
    params: dict | None = None


_SPEC = {
    "timezone": "UTC",
    "start_date": "2030-01-01",
    "end_date": "2030-01-02",
    "times": ["09:00"],
    "duration_minutes": 10,
}
_DEVICE_READERS = (Role.end_user, Role.app_developer, Role.ai_developer)
OWNED_ROUTES: list[Owned] = [
    *[
        case
        for role in _DEVICE_READERS
        for case in (
            Owned("GET", "/devices/{device}", role),
            Owned("GET", "/devices/{device}/latest", role),
            Owned("GET", "/devices/{device}/history", role),
            Owned("GET", "/locations/{location}", role),
            Owned("GET", "/devices", role, params={"location": "{location}"}),
        )
    ],
    Owned("POST", "/instances", Role.end_user, json={"app": "{app}", "location": "{location}"}),
    Owned("GET", "/instances/{instance}", Role.end_user),
    Owned("POST", "/instances/{instance}/run", Role.end_user, json={"minutes": 5}),
    Owned("POST", "/instances/{instance}/stop", Role.end_user),
    Owned("POST", "/instances/{instance}/upgrade", Role.end_user, json={"version": "1.0.0"}),
    Owned("POST", "/instances/{instance}/rollback", Role.end_user),
    Owned("GET", "/instances/{instance}/history", Role.end_user),
    Owned(
        "POST",
        "/models/{model_name}/rollout",
        Role.ai_developer,
        json={"version": "1.0.0"},
        denied=(403,),
        owner="a-aideveloper",
    ),
    Owned("POST", "/models/{model_name}/rollback", Role.ai_developer, denied=(403,), owner="a-aideveloper"),
    Owned("GET", "/models/{model_name}/rollouts", Role.ai_developer, denied=(403,), owner="a-aideveloper"),
    Owned("POST", "/schedules", Role.end_user, json={"app_instance_id": "{instance}", "spec": _SPEC}),
    Owned("GET", "/schedules/{schedule}", Role.end_user),
    Owned("GET", "/schedules/{schedule}/occurrences", Role.end_user),
    Owned("PATCH", "/schedules/{schedule}", Role.end_user, json={"name": "renamed"}),
    Owned("GET", "/logs", Role.end_user, params={"app_instance_id": "{instance}"}, denied=(403, 404)),
    Owned("GET", "/logs", Role.end_user, params={"workload_id": "{app_workload}"}, denied=(403,)),
    Owned("GET", "/logs", Role.app_developer, params={"app_instance_id": "{instance}"}, denied=(403,)),
    Owned("GET", "/logs/stream", Role.app_developer, params={"workload_id": "{app_workload}"}, denied=(403,)),
    Owned("GET", "/logs", Role.ai_developer, params={"workload_id": "{model_workload}"}, denied=(403,)),
    Owned("GET", "/outbox/{email}", Role.end_user),
    # package names belong to their first uploader: B of the same role is refused, naming the owner (403)
    Owned("GET", "/models/{model}/download", Role.ai_developer, denied=(403,), owner="a-aideveloper"),
    Owned("GET", "/apps/{app}/download", Role.app_developer, denied=(403,), owner="a-appdeveloper"),
    Owned("GET", "/apps/{app}/instances", Role.app_developer, denied=(403,), owner="a-appdeveloper"),
    Owned(
        "POST", "/models/{model}/deploy", Role.ai_developer, json={"replicas": 1}, denied=(403,), owner="a-aideveloper"
    ),
    Owned("POST", "/models/{model}/predict", Role.ai_developer, json={"inputs": [1]}, denied=(403,)),
    Owned("GET", "/workloads/{model_workload}", Role.ai_developer),
    Owned("GET", "/workloads/{app_workload}", Role.app_developer),
    Owned("GET", "/workloads/{model_workload}/load", Role.ai_developer),
    Owned("GET", "/workloads/{app_workload}/load", Role.app_developer),
    Owned("DELETE", "/auth/tokens/{token}", Role.end_user),
    # destructive ones last: A's own call removes the thing
    Owned("DELETE", "/schedules/{schedule}", Role.end_user),
    Owned("DELETE", "/instances/{instance}", Role.end_user),
    Owned("DELETE", "/deployments/{deployment}", Role.ai_developer, denied=(403,)),
    Owned("POST", "/models/{model}/deprecate", Role.ai_developer, denied=(403,), owner="a-aideveloper"),
    Owned("POST", "/apps/{app}/deprecate", Role.app_developer, denied=(403,), owner="a-appdeveloper"),
    Owned("DELETE", "/models/{model}", Role.ai_developer, denied=(403,), owner="a-aideveloper"),
    Owned("DELETE", "/apps/{app}", Role.app_developer, denied=(403,), owner="a-appdeveloper"),
]
OWNED_LISTS: list[OwnedList] = [
    *[OwnedList("/devices", role, "device") for role in _DEVICE_READERS],
    *[OwnedList("/locations", role, "location") for role in _DEVICE_READERS],
    OwnedList("/apps/{app}/locations", Role.end_user, "location"),
    OwnedList("/instances", Role.end_user, "instance"),
    OwnedList("/schedules", Role.end_user, "schedule"),
    OwnedList("/schedules", Role.end_user, "schedule", params={"app_instance_id": "{instance}"}),
    OwnedList("/outbox", Role.end_user, "email"),
    OwnedList("/workloads", Role.ai_developer, "model_workload"),
    OwnedList("/workloads", Role.app_developer, "app_workload"),
    OwnedList("/auth/tokens", Role.end_user, "token"),
]
# Routes taking an id or a name that every user of the role may read, whoever owns the thing: B gets what A
# gets (the test checks it), with the reason. The only other way to cover a route is an `Owned` case above.
PUBLIC_BY_DESIGN: list[tuple[Owned, str]] = [
    (
        Owned("GET", "/models/{model}", Role.ai_developer),
        "the catalogue: app developers choose models from it (names, versions, manifests; never the zip)",
    ),
    (Owned("GET", "/apps/{app}", Role.end_user), "the catalogue: end users choose apps from it (never the zip)"),
    (
        Owned("GET", "/device-types/{device_type}", Role.app_developer),
        "device types are the admins' shared vocabulary every package is written against",
    ),
    (
        Owned("GET", "/deployments/{deployment}", Role.ai_developer),
        "state and replica count only; replica addresses hidden (tests/deployer/test_deployer_api.py)",
    ),
]


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


def _claim(session: Any, row: ModelPackage | AppPackage, owner: str) -> None:
    """Write a package version owned by `owner` (a username), as an upload would, without a message bus."""
    row.owner_id = session.scalar(select(User.id).where(User.username == owner))
    names.claim(session, names.kind_of(type(row)), row.name, row.owner_id)
    session.add(row)
    session.flush()


@pytest.fixture
def owned_world(api: TestClient, database: Database) -> OwnedWorld:
    """A's home (a location with a device, granted to every A), A's app instance and schedule there; AI
    developer A's model, its deployment and replica; app developer A's app and a workload of its instance; an
    extra token of end user A."""
    roles = [r for r in Role if r != Role.admin]
    a = {r: _headers(database, f"a-{r.value.replace('_', '')}", r) for r in roles}
    b = {r: _headers(database, f"b-{r.value.replace('_', '')}", r) for r in roles}
    admin = _headers(database, "root", Role.admin)
    with database.session() as session:
        _claim(
            session,
            AppPackage(name="hello", version="1.0.0", sha256="0" * 64, size=1, manifest={}, kind="backend"),
            "a-appdeveloper",
        )
        model = ModelPackage(name="vision", version="1.0.0", sha256="1" * 64, size=1, manifest={})
        _claim(session, model, "a-aideveloper")
        ids: dict[str, str] = {"app": "hello", "model": model.id, "model_name": model.name}

    def ok(response: Any) -> dict:
        assert response.status_code in (200, 201), response.text
        return response.json()

    ids["device_type"] = ok(
        api.post(
            "/api/v1/device-types",
            headers={**admin, "X-Filename": "temperature.json"},
            content=(DEVICE_TYPES / "temperature.json").read_bytes(),
        )
    )["name"]
    ids["location"] = ok(api.post("/api/v1/locations", headers=admin, json={"name": "A Home"}))["id"]
    ok(api.post("/api/v1/locations", headers=admin, json={"name": "B Home"}))
    with database.session() as session:
        device = Device(name="thermo", type_id=session.scalar(select(DeviceType.id)), location_id=ids["location"])
        session.add(device)
        session.flush()
        ids["device"] = device.id
    for role in roles:
        ok(
            api.post(
                "/api/v1/locations/A Home/grants", headers=admin, json={"user": f"a-{role.value.replace('_', '')}"}
            )
        )
        ok(
            api.post(
                "/api/v1/locations/B Home/grants", headers=admin, json={"user": f"b-{role.value.replace('_', '')}"}
            )
        )
    ids["instance"] = ok(
        api.post("/api/v1/instances", headers=a[Role.end_user], json={"app": "hello", "location": "A Home"})
    )["id"]
    deployment = ok(
        api.post(f"/api/v1/models/{ids['model']}/deploy", headers=a[Role.ai_developer], json={"replicas": 1})
    )
    ids["deployment"], ids["model_workload"] = deployment["id"], deployment["workloads"][0]["id"]
    with database.session() as session:
        owner = session.scalar(select(User.id).where(User.username == "a-enduser"))
        ids["email"] = enqueue(session, "a@example.com", "hello", "text", kind="test", user_id=owner).id
        ids["token"] = accounts.issue_token(session, session.get(User, owner), ttl=timedelta(minutes=10)).record.id
        app = session.scalar(select(AppPackage).where(AppPackage.name == "hello"))
        workload = Workload(
            kind=WorkloadKind.app,
            package_id=app.id,
            package_sha256=app.sha256,
            owner_id=owner,
            group_id=ids["instance"],
            nats_password_bcrypt="!",
        )  # never logs in: not a process
        session.add(workload)
        session.flush()
        ids["app_workload"] = workload.id
    ids["schedule"] = ok(
        api.post(
            "/api/v1/schedules", headers=a[Role.end_user], json={"app_instance_id": ids["instance"], "spec": _SPEC}
        )
    )["id"]
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
            rows = api.get(url, headers=headers, params=_fill_ids(listing.params, world.ids)).json()
            if (wanted in {row[listing.field] for row in rows}) != present:
                wrong.append(f"{who} ({listing.role.value}) GET {url}: {wanted} {'missing' if present else 'shown'}")
    for case in OWNED_ROUTES:
        url = API_PREFIX + _fill_ids(case.path, world.ids)
        kwargs = {"json": _fill_ids(case.json, world.ids), "params": _fill_ids(case.params, world.ids)}
        as_b = api.request(case.method, url, headers=world.b[case.role], **kwargs)
        if as_b.status_code not in case.denied:
            wrong.append(f"B ({case.role.value}) {case.method} {url} -> {as_b.status_code}, want {case.denied}")
        elif case.owner and as_b.json()["error"]["details"].get("owner") != case.owner:
            wrong.append(f"B ({case.role.value}) {case.method} {url}: the refusal does not name {case.owner}")
        as_a = api.request(case.method, url, headers=world.a[case.role], **kwargs)
        if as_a.status_code in (401, 403, 404):  # 503 is fine here: this app has no message bus
            wrong.append(f"A ({case.role.value}) {case.method} {url} -> {as_a.status_code} {as_a.text[:120]}")
    assert wrong == [], "\n".join(wrong)


def test_public_by_design_reads_are_the_same_for_b(api: TestClient, owned_world: OwnedWorld) -> None:
    """What PUBLIC_BY_DESIGN claims is what happens: B reads A's thing like A (so the list cannot hide a leak
    that was meant to be closed, nor drift from the routes)."""
    world = owned_world
    for case, reason in PUBLIC_BY_DESIGN:
        assert reason, f"{case.method} {case.path}: give the reason it is public"
        url = API_PREFIX + _fill_ids(case.path, world.ids)
        as_a = api.request(case.method, url, headers=world.a[case.role])
        as_b = api.request(case.method, url, headers=world.b[case.role])
        assert as_a.status_code == as_b.status_code == 200, (case, as_a.text, as_b.text)


def test_every_route_taking_an_id_has_an_ownership_case(api: TestClient) -> None:
    def shape(path: str) -> str:  # "/devices/{device}" and "/devices/{device_id}" are the same route
        return re.sub(r"\{[^}]+\}", "{}", path)

    owned = {(c.method, shape(c.path)) for c in OWNED_ROUTES}
    owned |= {("GET", shape(listing.path)) for listing in OWNED_LISTS}
    public = {(c.method, shape(c.path)) for c, _ in PUBLIC_BY_DESIGN}
    assert not owned & public, f"both owned and public by design: {owned & public}"
    missing, served = [], set()
    for route in _api_routes(api):
        path = route.path.removeprefix(API_PREFIX)
        audience = route.audience
        if "{" not in path or not isinstance(audience, Allow) or not audience.roles - {Role.admin}:
            continue  # no id, or admins only (admins see everything: there is no B to keep out)
        for method in route.methods:
            served.add((method, shape(path)))
            if (method, shape(path)) not in owned | public:
                missing.append(f"{method} {path}")
    assert missing == [], f"routes taking an id with no A-vs-B case (OWNED_ROUTES) or PUBLIC_BY_DESIGN: {missing}"
    assert public <= served, f"PUBLIC_BY_DESIGN names routes that are not served: {public - served}"
