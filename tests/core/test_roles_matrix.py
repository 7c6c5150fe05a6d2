"""Every /api/v1 route declares its audience, and enforces it: each role allowed or 403, anonymous 401."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from aiot.accounts import service as accounts
from aiot.api.app import API_PREFIX, API_ROUTERS
from aiot.api.security import Allow, _Public
from aiot.store.engine import Database
from aiot.store.models import Role


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
