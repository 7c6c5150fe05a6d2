"""Fixtures for the scheduler tests: a migrated database plus the scheduling tables, app instances to drive,
a simulated clock, and a recording `InstanceController`.

The scheduling tables have no Alembic migration yet (the lead generates it when integrating), so they are
created here with `Base.metadata.create_all` on top of the migrated schema (a no-op once the migration exists).

The recording controller stands in for the deployer only: it is the seam to another component, and what these
tests check is how often and when the scheduler calls it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aiot.ids import new_id
from aiot.scheduler.rules import parse_spec
from aiot.scheduler.service import SchedulerService
from aiot.services.contract import ServiceContext
from aiot.settings import Settings
from aiot.store import migrate
from aiot.store.apps import AppInstance
from aiot.store.base import Base
from aiot.store.catalog import AppPackage
from aiot.store.devices import Location, LocationGrant
from aiot.store.engine import Database
from aiot.store.models import Role, User
from aiot.store.scheduling import Occurrence, OverlapPolicy, Schedule

SCHEDULING_TABLES = [Schedule.__table__, Occurrence.__table__]


def prepare_database(url: str) -> Database:
    """Migrate, then add the scheduling tables; returns an open `Database`."""
    migrate.upgrade(url)
    db = Database(url)
    Base.metadata.create_all(db.engine, tables=SCHEDULING_TABLES)
    return db


class SimClock:
    """A clock the test moves by hand (the scheduler never sleeps on it)."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now

    def set(self, when: datetime) -> datetime:
        self.now = when
        return when


@dataclass
class Call:
    action: str  # "start" | "stop"
    instance_id: str
    occurrence_id: str
    until: datetime | None
    at: datetime


@dataclass
class RecordingController:
    """Records every start/stop the scheduler asks for; can be told to fail starts."""

    clock: SimClock | None = None
    calls: list[Call] = field(default_factory=list)
    fail_starts: bool = False
    delay: float = 0.0

    async def start(self, instance_id: str, occurrence_id: str, until: datetime) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_starts:
            raise RuntimeError("node pool exhausted")
        self.calls.append(Call("start", instance_id, occurrence_id, until, self._now()))

    async def stop(self, instance_id: str, occurrence_id: str) -> None:
        self.calls.append(Call("stop", instance_id, occurrence_id, None, self._now()))

    def _now(self) -> datetime:
        return self.clock() if self.clock else datetime.now(UTC)

    def of(self, action: str) -> list[Call]:
        return [c for c in self.calls if c.action == action]


def add_instances(db: Database, count: int = 1, owner_id: str | None = None) -> list[str]:
    """App instances (with the user, location and app package they need), inserted directly: fast."""
    with db.session() as session:
        if owner_id is None:
            owner = User(username=new_id("u").lower().replace("_", ""), role=Role.end_user, password_hash="x")
            session.add(owner)
            session.flush()
            owner_id = owner.id
        location = Location(name=new_id("loc"))
        app = AppPackage(
            name=new_id("app").lower(), version="1.0.0", sha256="0" * 64, size=1, manifest={}, kind="backend"
        )
        session.add_all([location, app])
        session.flush()
        session.add(LocationGrant(location_id=location.id, user_id=owner_id))  # owners bind only where granted
        instances = [
            AppInstance(app_id=app.id, location_id=location.id, owner_id=owner_id, name=f"i{n}") for n in range(count)
        ]
        session.add_all(instances)
        session.flush()
        return [i.id for i in instances]


def add_schedule(
    db: Database,
    instance_id: str,
    spec: dict,
    *,
    deadline: int = 300,
    overlap: OverlapPolicy = OverlapPolicy.forbid,
    active_since: datetime,
    now: datetime | None = None,
) -> str:
    parsed = parse_spec(spec, now or active_since)
    with db.session() as session:
        owner = session.get(AppInstance, instance_id).owner_id
        row = Schedule(
            app_instance_id=instance_id,
            owner_id=owner,
            spec=parsed.model_dump(mode="json"),
            timezone=parsed.timezone,
            late_start_deadline_s=deadline,
            overlap=overlap,
            active_since=active_since,
        )
        session.add(row)
        session.flush()
        return row.id


def make_service(db: Database, controller: RecordingController, clock: SimClock, **kwargs: object) -> SchedulerService:
    service = SchedulerService(controller, clock=clock, **kwargs)  # type: ignore[arg-type]
    service.attach(ServiceContext(settings=Settings(database_url=db.url), db=db))
    return service


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Database:
    db = prepare_database(f"sqlite:///{tmp_path / 'aiot.db'}")
    yield db
    db.dispose()
