"""The "your app is running" mail gives the gateway address only, never the app's port on its node (attack: a
direct address lets anyone who sees the mail, or guesses the port, skip the gateway's owner check)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from aiot.apps.instances import start_instance
from aiot.apps.service import AppsService
from aiot.secrets_store import platform_secret
from aiot.store.apps import AppInstance
from aiot.store.catalog import AppPackage
from aiot.store.devices import Location, LocationGrant
from aiot.store.engine import Database
from aiot.store.notify import OutboxEmail
from aiot.store.runtime import WorkloadStatus

from .conftest import make_ctx

NODE_ENDPOINT = "http://127.0.0.1:45871"


def test_app_running_mail_has_only_the_gateway_address(sqlite_db: Database, users: dict, tmp_path: Path) -> None:
    ctx = make_ctx(sqlite_db, tmp_path, public_url="https://aiot.example.test")
    manifest = {"name": "smart-home", "version": "1.0.0", "kind": "web", "entrypoint": "home:main"}
    with sqlite_db.session() as session:
        location = Location(name="Home")
        app = AppPackage(name="smart-home", version="1.0.0", sha256="0" * 64, size=1, manifest=manifest, kind="web")
        session.add_all([location, app])
        session.flush()
        instance = AppInstance(app_id=app.id, location_id=location.id, owner_id=users["alice"][0], name="home")
        session.add_all([instance, LocationGrant(location_id=location.id, user_id=users["alice"][0])])
        session.flush()
        workload = start_instance(session, platform_secret(ctx.settings), instance, occurrence_id=None, until=None)
        session.flush()
        status = session.get(WorkloadStatus, workload.id)
        assert status is not None
        status.state, status.generation, status.endpoint = "running", workload.generation, NODE_ENDPOINT
        instance_id = instance.id

    assert AppsService()._check_sync(ctx) == []

    with sqlite_db.session() as session:
        mails = list(session.scalars(select(OutboxEmail).where(OutboxEmail.kind == "app_running")))
    assert len(mails) == 1 and mails[0].to_address == "alice@example.test"
    text = mails[0].body + (mails[0].html or "")
    assert f"https://aiot.example.test/apps/{instance_id}/" in text
    assert "45871" not in text and "127.0.0.1" not in text, text
