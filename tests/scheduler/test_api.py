"""The schedules API through a real app (migrated database, embedded NATS, real auth): create, list, show with
next runs in UTC and local time, enable/disable, delete stopping a running occurrence, history, preview,
rejections naming their field, and who may see what."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.routing import APIRoute

from aiot.accounts import users as accounts
from aiot.api.app import API_PREFIX
from aiot.api.routes.schedules import router
from aiot.api.security import Allow
from aiot.launch.http_app import create_app
from aiot.store.base import Base
from tests.scheduler.conftest import SCHEDULING_TABLES, RecordingController, SimClock, add_instances, make_service
from tests.support.live import LivePlatform, live_platform


@dataclass
class Api:
    live: LivePlatform
    client: httpx.AsyncClient
    instance: str  # owned by enduser1
    other_instance: str  # owned by enduser2

    def h(self, who: str) -> dict[str, str]:
        return self.live.headers(who)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with live_platform(tmp_path) as live:
        Base.metadata.create_all(live.ctx.db.engine, tables=SCHEDULING_TABLES)
        live.add_user("enduser2", accounts.Role.end_user)
        with live.ctx.db.session() as session:
            owner = accounts.get_user(session, "enduser1").id
            other = accounts.get_user(session, "enduser2").id
        [mine] = add_instances(live.ctx.db, owner_id=owner)
        [theirs] = add_instances(live.ctx.db, owner_id=other)
        app = create_app(live.ctx)
        app.include_router(router, prefix=API_PREFIX)  # the lead mounts it in create_app when integrating
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://aiot.test", timeout=30) as client:
            yield Api(live, client, mine, theirs)


def body(instance: str, **spec: object) -> dict:
    today = datetime.now(UTC).date()
    base = {
        "timezone": "Asia/Kolkata",
        "start_date": str(today),
        "end_date": str(today + timedelta(days=30)),
        "times": ["09:00"],
        "duration_minutes": 60,
    }
    return {"app_instance_id": instance, "spec": {**base, **spec}}


def test_every_route_declares_its_audience() -> None:
    routes = [r for r in router.routes if isinstance(r, APIRoute)]
    assert len(routes) == 7
    for route in routes:
        audiences = [d.call for d in route.dependant.dependencies if isinstance(d.call, Allow)]
        assert len(audiences) == 1, route.path


async def test_preview_three_times_a_day_and_kolkata(api: Api) -> None:
    today = datetime.now(UTC).date()
    spec = {
        "timezone": "Europe/Paris",
        "start_date": str(today + timedelta(days=1)),
        "end_date": str(today + timedelta(days=1)),
        "every_day": {"count": 3, "start": "08:00", "end": "20:00"},
        "until": "21:00",
    }
    r = await api.client.post(f"{API_PREFIX}/schedules/preview", json={"spec": spec}, headers=api.h("appdeveloper1"))
    assert r.status_code == 200, r.text
    runs = r.json()["occurrences"]
    assert [o["start_local"][11:16] for o in runs] == ["08:00", "14:00", "20:00"]
    assert {o["end_local"][11:16] for o in runs} == {"21:00"}
    spec = {**body("x")["spec"], "start_date": "2026-12-01", "end_date": "2026-12-31"}
    r = await api.client.post(
        f"{API_PREFIX}/schedules/preview",
        headers=api.h("enduser1"),
        json={"spec": spec, "count": 2, "after": "2026-12-01T00:00:00Z"},
    )
    assert r.json()["occurrences"] == [
        {
            "start_utc": "2026-12-01T03:30:00+00:00",
            "end_utc": "2026-12-01T04:30:00+00:00",
            "start_local": "2026-12-01T09:00:00+05:30",
            "end_local": "2026-12-01T10:00:00+05:30",
        },
        {
            "start_utc": "2026-12-02T03:30:00+00:00",
            "end_utc": "2026-12-02T04:30:00+00:00",
            "start_local": "2026-12-02T09:00:00+05:30",
            "end_local": "2026-12-02T10:00:00+05:30",
        },
    ]
    assert (await api.client.post(f"{API_PREFIX}/schedules/preview", json={"spec": spec})).status_code == 401


BAD_SPECS = [
    ({"start_date": "2020-01-01", "end_date": "2020-02-01"}, "spec.end_date"),
    ({"start_date": "2099-02-02", "end_date": "2099-02-01"}, "spec.start_date"),
    ({"timezone": "Asia/Calcutta-ish"}, "spec.timezone"),
    ({"times": ["9:60"]}, "spec.times.0"),
    ({"until": "10:00"}, "spec.duration_minutes"),
]


async def test_bad_specs_are_422_naming_the_field(api: Api) -> None:
    for spec, field in BAD_SPECS:
        for path in ("/schedules", "/schedules/preview"):
            r = await api.client.post(f"{API_PREFIX}{path}", json=body(api.instance, **spec), headers=api.h("enduser1"))
            assert r.status_code == 422, r.text
            error = r.json()["error"]
            assert error["code"] == "validation_failed" and error["details"]["field"] == field, (path, error)
            assert field.removeprefix("spec.") in error["message"]
    r = await api.client.post(
        f"{API_PREFIX}/schedules",
        headers=api.h("enduser1"),
        json={**body(api.instance), "policy": {"overlap": "queue"}},
    )
    assert r.status_code == 422 and r.json()["error"]["details"]["problems"][0]["field"] == "policy.overlap"
    with api.live.ctx.db.session() as session:
        from aiot.store.scheduling import Schedule

        assert session.query(Schedule).count() == 0  # nothing half-written


async def test_who_may_schedule_which_instance(api: Api) -> None:
    url = f"{API_PREFIX}/schedules"
    r = await api.client.post(url, json=body(api.other_instance), headers=api.h("enduser1"))
    assert r.status_code == 404 and r.json()["error"]["details"]["field"] == "app_instance_id"
    r = await api.client.post(url, json=body("ins_nope"), headers=api.h("admin1"))
    assert r.status_code == 404
    assert (await api.client.post(url, json=body(api.instance), headers=api.h("appdeveloper1"))).status_code == 403
    r = await api.client.post(url, json=body(api.other_instance), headers=api.h("admin1"))  # admins: any instance
    assert r.status_code == 201 and r.json()["enabled"] is True
    with api.live.ctx.db.session() as session:  # the schedule belongs to the instance's owner, not the admin
        assert r.json()["owner_id"] == accounts.get_user(session, "enduser2").id
    theirs = r.json()["id"]
    r = await api.client.post(url, json=body(api.instance), headers=api.h("enduser1"))
    mine = r.json()["id"]
    assert [s["id"] for s in (await api.client.get(url, headers=api.h("enduser1"))).json()] == [mine]
    assert [s["id"] for s in (await api.client.get(url, headers=api.h("enduser2"))).json()] == [theirs]
    assert {s["id"] for s in (await api.client.get(url, headers=api.h("admin1"))).json()} == {mine, theirs}
    assert (await api.client.get(f"{url}/{theirs}", headers=api.h("enduser1"))).status_code == 404
    assert (await api.client.delete(f"{url}/{theirs}", headers=api.h("enduser1"))).status_code == 404
    assert (await api.client.get(f"{url}/{theirs}", headers=api.h("enduser2"))).status_code == 200


async def test_schedule_lifecycle_with_a_running_occurrence(api: Api) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    at = now + timedelta(minutes=2)
    spec = {
        "timezone": "UTC",
        "start_date": str(now.date()),
        "end_date": str(now.date() + timedelta(days=1)),
        "times": [at.strftime("%H:%M")],
        "duration_minutes": 30,
    }
    r = await api.client.post(
        f"{API_PREFIX}/schedules",
        headers=api.h("enduser1"),
        json={
            "app_instance_id": api.instance,
            "spec": spec,
            "name": "daily",
            "policy": {"late_start_deadline_s": 600, "overlap": "replace"},
        },
    )
    assert r.status_code == 201, r.text
    created = r.json()
    sid = created["id"]
    assert sid.startswith("sch_") and created["policy"] == {"late_start_deadline_s": 600, "overlap": "replace"}
    assert created["next"][0]["start_utc"] == at.isoformat()

    clock = SimClock(at + timedelta(minutes=1))  # the scheduler runs a minute after the start: a late start
    controller = RecordingController(clock)
    service = make_service(api.live.ctx.db, controller, clock)
    api.live.ctx.services["scheduler"] = service
    await service.tick()
    [start] = controller.of("start")
    assert (start.instance_id, start.until) == (api.instance, at + timedelta(minutes=30))

    shown = (await api.client.get(f"{API_PREFIX}/schedules/{sid}?count=2", headers=api.h("enduser1"))).json()
    assert shown["running"]["id"] == start.occurrence_id and shown["running"]["state"] == "started"
    assert len(shown["next"]) == 2
    occs = (await api.client.get(f"{API_PREFIX}/schedules/{sid}/occurrences", headers=api.h("enduser1"))).json()
    assert occs[-1]["id"] == start.occurrence_id and occs[-1]["fired_by"] == service.replica
    assert all(o["id"].startswith("occ_") for o in occs)
    planned = (
        await api.client.get(f"{API_PREFIX}/schedules/{sid}/occurrences?state=planned", headers=api.h("enduser1"))
    ).json()
    assert planned and {o["state"] for o in planned} == {"planned"}

    r = await api.client.patch(f"{API_PREFIX}/schedules/{sid}", json={"enabled": False}, headers=api.h("enduser1"))
    assert r.status_code == 200 and r.json()["enabled"] is False and r.json()["next"] == []
    after = (await api.client.get(f"{API_PREFIX}/schedules/{sid}/occurrences", headers=api.h("enduser1"))).json()
    assert [o["state"] for o in after] == ["started"]  # future runs dropped, the current run goes on
    r = await api.client.patch(f"{API_PREFIX}/schedules/{sid}", json={"enabled": True}, headers=api.h("enduser1"))
    assert r.json()["enabled"] is True and r.json()["next"]

    r = await api.client.delete(f"{API_PREFIX}/schedules/{sid}", headers=api.h("enduser1"))
    assert r.status_code == 204
    [stop] = controller.of("stop")
    assert (stop.instance_id, stop.occurrence_id) == (api.instance, start.occurrence_id)
    assert (await api.client.get(f"{API_PREFIX}/schedules/{sid}", headers=api.h("enduser1"))).status_code == 404
    await service.tick()
    assert len(controller.calls) == 2  # nothing left to fire or stop


async def test_a_new_schedule_has_its_runs_at_once(api: Api) -> None:
    """The runs of the next 48 h exist when the schedule is created (and when it is enabled again), not when a
    scheduler replica's refill gets to it: with 10,000 schedules created at once that refill, spread over
    passes, fired some runs up to 72 s late (`bench/scheduler.py`)."""
    r = await api.client.post(f"{API_PREFIX}/schedules", headers=api.h("enduser1"), json=body(api.instance))
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    planned = (
        await api.client.get(f"{API_PREFIX}/schedules/{sid}/occurrences?state=planned", headers=api.h("enduser1"))
    ).json()
    assert len(planned) >= 2, planned  # the next two 09:00 Asia/Kolkata (and one under way, if it is 09:xx there)
    await api.client.patch(f"{API_PREFIX}/schedules/{sid}", json={"enabled": False}, headers=api.h("enduser1"))
    r = await api.client.patch(f"{API_PREFIX}/schedules/{sid}", json={"enabled": True}, headers=api.h("enduser1"))
    assert r.status_code == 200, r.text
    again = (
        await api.client.get(f"{API_PREFIX}/schedules/{sid}/occurrences?state=planned", headers=api.h("enduser1"))
    ).json()
    assert len(again) >= 2, again
