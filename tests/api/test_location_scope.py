"""End users (and developers) see, read and bind only devices at locations an admin granted them.

Each attack here worked on the platform before grants existed: an end user listed every device, read another
home's readings and bound an app at another user's home.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from aiot.accounts import users as accounts
from aiot.devices.inventory import get_location
from aiot.store.catalog import AppPackage, DeviceType
from aiot.store.devices import Device
from aiot.store.engine import Database
from aiot.store.models import Role, User

DEVICE_TYPES = Path(__file__).resolve().parents[2] / "examples" / "device-types"


@dataclass
class World:
    """Two homes: enduser1 was granted "Alice Home" (its kitchen included), enduser2 "Bob Home"."""

    admin: dict[str, str]
    alice: dict[str, str]  # enduser1
    bob: dict[str, str]  # enduser2
    dev: dict[str, str]  # appdeveloper1, no grants
    kitchen_thermo: str  # at Alice Kitchen, below Alice Home
    bob_thermo: str  # at Bob Home


def add_device(database: Database, name: str, location: str) -> str:
    """Inserted directly: registering through the API would bcrypt a credential these tests never use."""
    with database.session() as session:
        device = Device(
            name=name, type_id=session.scalar(select(DeviceType.id)), location_id=get_location(session, location).id
        )
        session.add(device)
        session.flush()
        return device.id


def grant(api: TestClient, admin: dict[str, str], location: str, user: str) -> None:
    response = api.post(f"/api/v1/locations/{location}/grants", headers=admin, json={"user": user})
    assert response.status_code in (200, 201), response.text


def people(database: Database, who: dict[str, Role]) -> dict[str, dict[str, str]]:
    """Users with a token each, made directly (no password hashing: these tests are about scope, not login)."""
    headers = {}
    with database.session() as session:
        for username, role in who.items():
            user = User(username=username, role=role, password_hash="!unusable")
            session.add(user)
            session.flush()
            token = accounts.issue_token(session, user, ttl=timedelta(minutes=10)).token
            headers[username] = {"Authorization": f"Bearer {token}"}
    return headers


@pytest.fixture
def world(api: TestClient, database: Database) -> World:
    h = people(
        database,
        {
            "admin1": Role.admin,
            "enduser1": Role.end_user,
            "enduser2": Role.end_user,
            "appdeveloper1": Role.app_developer,
        },
    )
    with database.session() as session:
        session.add(AppPackage(name="hello", version="1.0.0", sha256="0" * 64, size=1, manifest={}, kind="backend"))
    admin = h["admin1"]
    response = api.post(
        "/api/v1/device-types",
        headers={**admin, "X-Filename": "temperature.json"},
        content=(DEVICE_TYPES / "temperature.json").read_bytes(),
    )
    assert response.status_code in (200, 201), response.text
    for name, parent in (("Alice Home", None), ("Alice Kitchen", "Alice Home"), ("Bob Home", None)):
        response = api.post("/api/v1/locations", headers=admin, json={"name": name, "parent": parent})
        assert response.status_code == 201, response.text
    kitchen = add_device(database, "thermo", "Alice Kitchen")
    bobs = add_device(database, "thermo", "Bob Home")
    grant(api, admin, "Alice Home", "enduser1")
    grant(api, admin, "Bob Home", "enduser2")
    return World(admin, h["enduser1"], h["enduser2"], h["appdeveloper1"], kitchen, bobs)


def _ids(rows: list[dict]) -> set[str]:
    return {r["id"] for r in rows}


def test_end_user_lists_only_devices_at_granted_locations(api: TestClient, world: World) -> None:
    assert _ids(api.get("/api/v1/devices", headers=world.alice).json()) == {world.kitchen_thermo}  # subtree
    assert _ids(api.get("/api/v1/devices", headers=world.bob).json()) == {world.bob_thermo}
    assert _ids(api.get("/api/v1/devices", headers=world.admin).json()) == {world.kitchen_thermo, world.bob_thermo}
    names = {r["name"] for r in api.get("/api/v1/locations", headers=world.alice).json()}
    assert names == {"Alice Home", "Alice Kitchen"}
    other = api.get("/api/v1/devices", headers=world.alice, params={"location": "Bob Home"})
    assert other.status_code == 404 and other.json()["error"]["details"]["field"] == "location"


@pytest.mark.parametrize("suffix", ["", "/latest", "/history"])
def test_reading_a_device_outside_the_grants_is_404_like_a_missing_one(
    api: TestClient, world: World, suffix: str
) -> None:
    theirs = api.get(f"/api/v1/devices/{world.bob_thermo}{suffix}", headers=world.alice)
    missing = api.get(f"/api/v1/devices/dev_doesnotexist{suffix}", headers=world.alice)
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["error"]["message"].replace(world.bob_thermo, "X") == missing.json()["error"][
        "message"
    ].replace("dev_doesnotexist", "X")  # existence does not leak
    mine = api.get(f"/api/v1/devices/{world.kitchen_thermo}{suffix}", headers=world.alice)
    assert mine.status_code != 404  # passes the check (503 for readings here: this app has no bus)


def test_other_users_location_is_invisible(api: TestClient, world: World) -> None:
    response = api.get("/api/v1/locations/Bob Home", headers=world.alice)
    assert response.status_code == 404 and response.json()["error"]["details"]["field"] == "location"
    assert api.get("/api/v1/locations/Alice Kitchen", headers=world.alice).status_code == 200
    offered = api.get("/api/v1/apps/hello/locations", headers=world.alice).json()  # the schedule form's picker
    assert {r["name"] for r in offered} == {"Alice Home", "Alice Kitchen"}


def test_instance_at_another_users_location_is_refused(api: TestClient, world: World) -> None:
    response = api.post("/api/v1/instances", headers=world.alice, json={"app": "hello", "location": "Bob Home"})
    assert response.status_code == 404, response.text
    assert response.json()["error"]["details"]["field"] == "location"
    mine = api.post("/api/v1/instances", headers=world.alice, json={"app": "hello", "location": "Alice Kitchen"})
    assert mine.status_code == 201, mine.text
    by_admin = api.post("/api/v1/instances", headers=world.admin, json={"app": "hello", "location": "Bob Home"})
    assert by_admin.status_code == 201, by_admin.text  # admins may bind anywhere


def test_revoked_grant_hides_the_location_and_refuses_runs_and_schedules(api: TestClient, world: World) -> None:
    instance = api.post(
        "/api/v1/instances", headers=world.alice, json={"app": "hello", "location": "Alice Kitchen"}
    ).json()["id"]
    running = api.post(f"/api/v1/instances/{instance}/run", headers=world.alice, json={"minutes": 5})
    assert running.status_code == 200 and running.json()["state"] == "running", running.text
    revoked = api.delete("/api/v1/locations/Alice Home/grants/enduser1", headers=world.admin)
    assert revoked.status_code == 204, revoked.text
    assert api.get(f"/api/v1/instances/{instance}", headers=world.alice).json()["state"] == "idle"  # stopped
    assert api.get("/api/v1/devices", headers=world.alice).json() == []
    assert api.get(f"/api/v1/devices/{world.kitchen_thermo}", headers=world.alice).status_code == 404
    run = api.post(f"/api/v1/instances/{instance}/run", headers=world.alice, json={"minutes": 5})
    assert run.status_code == 403 and run.json()["error"]["details"]["field"] == "location"
    today = datetime.now(UTC).date()
    spec = {
        "timezone": "UTC",
        "start_date": str(today),
        "end_date": str(today + timedelta(days=3)),
        "times": ["09:00"],
        "duration_minutes": 30,
    }
    schedule = api.post("/api/v1/schedules", headers=world.alice, json={"app_instance_id": instance, "spec": spec})
    assert schedule.status_code == 403 and schedule.json()["error"]["details"]["field"] == "location"
    again = api.delete("/api/v1/locations/Alice Home/grants/enduser1", headers=world.admin)
    assert again.status_code == 404 and again.json()["error"]["details"]["field"] == "user"


def test_app_developer_sees_device_types_but_devices_only_where_granted(api: TestClient, world: World) -> None:
    assert [t["name"] for t in api.get("/api/v1/device-types", headers=world.dev).json()] == ["temperature"]
    assert api.get("/api/v1/devices", headers=world.dev).json() == []
    assert api.get(f"/api/v1/devices/{world.bob_thermo}/history", headers=world.dev).status_code == 404
    grant(api, world.admin, "Bob Home", "appdeveloper1")
    assert _ids(api.get("/api/v1/devices", headers=world.dev).json()) == {world.bob_thermo}


def test_grants_are_listed_and_checked(api: TestClient, world: World) -> None:
    again = api.post("/api/v1/locations/Alice Home/grants", headers=world.admin, json={"user": "enduser1"})
    assert again.status_code == 200  # idempotent
    listed = api.get("/api/v1/location-grants", headers=world.admin, params={"user": "enduser1"}).json()
    assert [(g["location"], g["user"]) for g in listed] == [("Alice Home", "enduser1")]
    per_location = api.get("/api/v1/locations/Bob Home/grants", headers=world.admin).json()
    assert [g["user"] for g in per_location] == ["enduser2"]
    to_admin = api.post("/api/v1/locations/Bob Home/grants", headers=world.admin, json={"user": "admin1"})
    assert to_admin.status_code == 422 and to_admin.json()["error"]["details"]["field"] == "user"
    nobody = api.post("/api/v1/locations/Bob Home/grants", headers=world.admin, json={"user": "nobody"})
    assert nobody.status_code == 404 and nobody.json()["error"]["details"]["field"] == "user"
    self_grant = api.post("/api/v1/locations/Bob Home/grants", headers=world.alice, json={"user": "enduser1"})
    assert self_grant.status_code == 403
