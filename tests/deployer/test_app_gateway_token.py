"""A web app's port admits the app gateway only (attack: call the app's port on its node and skip the
gateway's owner check). The port is held by the SDK's guard (platform_sdk.web_guard) with the instance's token
as the platform derives it; the gateway sends that token, nobody else has it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
from sqlalchemy import select

from aiot.apps.instances import start_instance
from aiot.deployer.endpoint_tokens import gateway_token
from aiot.secrets_store import platform_secret
from aiot.store.apps import AppInstance
from aiot.store.catalog import AppPackage
from aiot.store.devices import Location, LocationGrant
from aiot.store.models import Role, User
from aiot.store.runtime import WorkloadStatus
from platform_sdk.web_guard import GatewayGuard, private_port
from tests.conftest import free_port
from tests.support.live import LivePlatform, live_platform


class Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        body = f"hello from the app; token seen: {self.headers.get('x-aiot-gateway-token')}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def guarded_app(token: str) -> Iterator[str]:
    """A tiny web app behind the guard, the way app_runner starts one; yields the advertised address."""
    upstream, port = private_port(), free_port()
    server = ThreadingHTTPServer(("127.0.0.1", upstream), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    GatewayGuard("127.0.0.1", port, token, upstream).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()


def running_instance(live: LivePlatform) -> tuple[str, str]:
    """(instance id, workload id) of an end user's web-app instance whose workload is reported running."""
    with live.ctx.db.session() as session:
        location = Location(name="Home")
        app = AppPackage(
            name="hello",
            version="1.0.0",
            sha256="0" * 64,
            size=1,
            kind="web",
            manifest={"name": "hello", "version": "1.0.0", "kind": "web", "entrypoint": "x:y"},
        )
        session.add_all([location, app])
        session.flush()
        owner = session.scalar(select(User).where(User.username == "enduser1"))
        assert owner is not None
        instance = AppInstance(app_id=app.id, location_id=location.id, owner_id=owner.id, name="hello")
        session.add_all([instance, LocationGrant(location_id=location.id, user_id=owner.id)])
        session.flush()
        workload = start_instance(session, platform_secret(live.ctx.settings), instance, occurrence_id=None, until=None)
        session.flush()
        status = session.get(WorkloadStatus, workload.id)
        assert status is not None
        status.state, status.generation = "running", workload.generation
        return instance.id, workload.id


def report_endpoint(live: LivePlatform, workload_id: str, url: str) -> None:
    with live.ctx.db.session() as session:
        status = session.get(WorkloadStatus, workload_id)
        assert status is not None
        status.endpoint = url


async def test_app_port_admits_the_gateway_only(tmp_path: Path) -> None:
    async with live_platform(tmp_path) as live:
        instance_id, workload_id = running_instance(live)
        secret = platform_secret(live.ctx.settings)
        with guarded_app(gateway_token(secret, instance_id)) as url:
            report_endpoint(live, workload_id, url)
            async with httpx.AsyncClient(timeout=10) as direct:
                for headers in (
                    {},
                    {"X-AIOT-Gateway-Token": "guess"},
                    {"X-AIOT-Gateway-Token": gateway_token(secret, "ins_another")},
                ):
                    refused = await direct.get(url + "/", headers=headers)
                    assert refused.status_code == 403 and "hello" not in refused.text
            page = await _through_the_apps_origin(live, instance_id)
            assert page.status_code == 200, page.text
            assert page.text == "hello from the app; token seen: None"  # the guard strips it on the way in
            stranger = await live.client.get(f"/apps/{instance_id}/", headers=live.headers(Role.app_developer))
            assert stranger.status_code == 404  # the gateway's owner check still stands in front


async def _through_the_apps_origin(live: LivePlatform, instance_id: str) -> httpx.Response:
    """The owner opens the platform address, takes the ticket to the apps origin and gets the page there."""
    from urllib.parse import urlsplit

    from aiot.api.appsorigin import create_apps_app

    apps = create_apps_app(live.ctx)
    apps_url = "http://localhost:18081"
    apps.state.apps_url = apps_url
    apps.state.platform_url = "http://aiot.test"
    live.client._transport.app.state.apps_url = apps_url  # type: ignore[attr-defined]
    door = await live.client.get(f"/apps/{instance_id}/", headers=live.headers(Role.end_user))
    assert door.status_code == 303, door.text
    target = urlsplit(door.headers["location"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=apps), base_url=apps_url) as client:
        entered = await client.get(f"{target.path}?{target.query}")
        assert entered.status_code == 303, entered.text
        return await client.get(entered.headers["location"])
