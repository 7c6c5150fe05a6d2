"""Pre-warm: the model a scheduled run needs is deployed `lead` before the run starts (so the app does not spend
its first minute waiting for it), and a model deployed for app runs is removed once no run has needed it for
`lead`; a model a user deployed is never removed. On a real (migrated SQLite) database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from aiot.apps.prewarm import ScaleBack, prewarm
from aiot.deployer.workloads import deploy_model
from aiot.store import migrate
from aiot.store.apps import AppInstance
from aiot.store.catalog import AppPackage, ModelPackage
from aiot.store.devices import Location
from aiot.store.engine import Database
from aiot.store.models import Role, User
from aiot.store.runtime import DesiredState, ModelDeployment, Workload
from aiot.store.scheduling import Occurrence, OccurrenceState, Schedule

SECRET = b"s" * 32
LEAD = timedelta(minutes=2)
T0 = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)


def _world(tmp_path: Path) -> tuple[Database, dict[str, str]]:
    url = f"sqlite:///{tmp_path / 'aiot.db'}"
    migrate.upgrade(url)
    db = Database(url)
    with db.session() as session:
        user = User(username="eve", role=Role.end_user, password_hash="x")
        location = Location(name="Lab")
        comfort = ModelPackage(name="comfort", version="1.0.0", sha256="1" * 64, size=1, manifest={})
        other = ModelPackage(name="vision", version="1.0.0", sha256="2" * 64, size=1, manifest={})
        session.add_all([user, location, comfort, other])
        session.flush()
        app = AppPackage(
            name="classroom",
            version="1.0.0",
            sha256="0" * 64,
            size=1,
            kind="backend",
            manifest={"context": {"models": {"comfort": {"name": "comfort"}}}},
        )
        session.add(app)
        session.flush()
        instance = AppInstance(
            app_id=app.id, location_id=location.id, owner_id=user.id, name="9 o'clock", models={"comfort": comfort.id}
        )
        session.add(instance)
        session.flush()
        schedule = Schedule(app_instance_id=instance.id, owner_id=user.id, spec={}, timezone="UTC")
        session.add(schedule)
        session.flush()
        occurrence = Occurrence(
            schedule_id=schedule.id, app_instance_id=instance.id, start_at=T0, end_at=T0 + timedelta(hours=1)
        )
        session.add(occurrence)
        session.flush()
        return db, {"comfort": comfort.id, "vision": other.id, "occurrence": occurrence.id}


def _deployment(db: Database, model_id: str) -> ModelDeployment | None:
    with db.session() as session:
        return session.scalar(select(ModelDeployment).where(ModelDeployment.model_id == model_id))


def test_a_scheduled_runs_model_is_deployed_ahead_and_removed_once_no_run_needs_it(tmp_path: Path) -> None:
    db, ids = _world(tmp_path)
    with db.session() as session:
        assert prewarm(session, SECRET, LEAD, now=T0 - timedelta(minutes=10)) == []  # too early
    assert _deployment(db, ids["comfort"]) is None

    with db.session() as session:
        assert prewarm(session, SECRET, LEAD, now=T0 - timedelta(seconds=90)) == [ids["comfort"]]
    deployment = _deployment(db, ids["comfort"])
    assert deployment is not None and deployment.auto and deployment.replicas == 1
    with db.session() as session:
        assert prewarm(session, SECRET, LEAD, now=T0 - timedelta(seconds=60)) == []  # once
        replicas = list(session.scalars(select(Workload).where(Workload.group_id == deployment.id)))
        assert len(replicas) == 1 and replicas[0].desired == DesiredState.running
        deploy_model(session, SECRET, session.get(ModelPackage, ids["vision"]), 1, None)  # a user's deploy

    scale_back = ScaleBack()
    with db.session() as session:  # the run is still ahead: needed
        assert scale_back.run(session, LEAD, now=T0 - timedelta(seconds=30)) == []
        session.get(Occurrence, ids["occurrence"]).state = OccurrenceState.stopped  # it ran and ended
    end = T0 + timedelta(hours=1)
    with db.session() as session:
        assert scale_back.run(session, LEAD, now=end) == []  # idle from now on
    with db.session() as session:
        assert scale_back.run(session, LEAD, now=end + LEAD - timedelta(seconds=1)) == []
    with db.session() as session:
        assert scale_back.run(session, LEAD, now=end + LEAD) == [ids["comfort"]]
        assert scale_back.run(session, LEAD, now=end + 10 * LEAD) == []  # the user's vision stays
        stopped = session.get(Workload, replicas[0].id)
        assert stopped.desired == DesiredState.stopped
    assert _deployment(db, ids["comfort"]) is None
    assert _deployment(db, ids["vision"]) is not None
