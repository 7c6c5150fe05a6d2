"""Auth callout on an external nats-server: credentials issued after start work at once, without provisioning.

Before: "with an external NATS server the platform cannot rewrite that server's user list, so per-device and
per-workload NATS users must be provisioned there" by hand. Here the test starts its own nats-server configured
only with `aiot nats callout-config`'s block (the platform's user, the callout issuer, a system user), then:
a device registered afterwards connects over MQTT with the credentials the API handed out; a wrong password, a
stolen MQTT client id and a subject outside the device's own are refused; a revoked device's open connection is
closed within 5 s and cannot come back. No server restart or reload at any point.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import httpx
import nats
import pytest

from aiot.accounts import users as accounts
from aiot.bus import Bus, nkey_jwt
from aiot.bus.auth import hash_password
from aiot.bus.binary import find_nats_server
from aiot.bus.callout import server_config
from aiot.launch.catalog import build_services
from aiot.launch.http_app import create_app
from aiot.secrets_store import platform_secret
from aiot.services.contract import ServiceContext
from aiot.settings import Settings
from aiot.store import migrate
from aiot.store.engine import Database
from aiot.store.models import Role
from tests.bus.conftest import free_port
from tests.devices.test_mqtt_client_id import EXAMPLES, Device

pytestmark = pytest.mark.timeout(120)


@asynccontextmanager
async def external_platform(tmp_path: Path) -> AsyncIterator[tuple[ServiceContext, httpx.AsyncClient, dict, int]]:
    """An external nats-server set up with the callout block only, and a control plane using it."""
    port, mqtt_port = free_port(), free_port()
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'aiot.db'}",
        nats_url=f"nats://127.0.0.1:{port}",
        nats_user="aiot-platform",
        nats_password="platform-pw-1",
        nats_callout=True,
        nats_system_user="aiot-system",
        nats_system_password="system-pw-1",
        secret_key="callout-test-secret",
    )
    issuer = nkey_jwt.public_key(nkey_jwt.account_keypair(platform_secret(settings)))
    conf = tmp_path / "nats.conf"
    conf.write_text(
        f'server_name: ext1\nlisten: "127.0.0.1:{port}"\n'
        f'jetstream {{ store_dir: "{tmp_path / "js"}" }}\nmqtt {{ listen: "127.0.0.1:{mqtt_port}" }}\n'
        + server_config(
            issuer, "aiot-platform", hash_password("platform-pw-1"), "aiot-system", hash_password("system-pw-1")
        )
    )
    server = subprocess.Popen(
        [str(find_nats_server()), "-c", str(conf)], stdout=(tmp_path / "nats.log").open("wb"), stderr=subprocess.STDOUT
    )
    migrate.upgrade(settings.effective_database_url)
    db = Database(settings.effective_database_url)
    bus = await Bus.connect(
        settings.nats_url or "", user="aiot-platform", password="platform-pw-1", name="test", attempts=20
    )
    ctx = ServiceContext(settings=settings, db=db, bus=bus, embedded=None)
    services = build_services(["nats-auth"])
    try:
        for service in services:
            ctx.services[service.name] = service
            await service.start(ctx)
        with db.session() as session:
            admin = accounts.create_user(session, username="admin1", password="correct-horse-battery", role=Role.admin)
            token = accounts.issue_token(session, admin, ttl=timedelta(hours=1)).token
        transport = httpx.ASGITransport(app=create_app(ctx))
        async with httpx.AsyncClient(transport=transport, base_url="http://aiot.test", timeout=30) as client:
            yield ctx, client, {"Authorization": f"Bearer {token}"}, mqtt_port
    finally:
        for service in reversed(services):
            await service.stop()
        await bus.close()
        db.dispose()
        server.terminate()
        server.wait(timeout=10)


async def _wait(event, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    return await asyncio.to_thread(event.wait, timeout)


async def test_devices_registered_after_start_connect_through_the_callout(tmp_path: Path) -> None:
    async with external_platform(tmp_path) as (ctx, client, admin, mqtt_port):
        assert ctx.services["nats-auth"].health().state.value == "ok"
        body = (EXAMPLES / "device-types" / "temperature.json").read_bytes()
        assert (await client.post("/api/v1/device-types", content=body, headers=admin)).status_code == 201
        assert (
            await client.post(
                "/api/v1/locations", headers=admin, json={"name": "Lab", "kind": "school", "timezone": "UTC"}
            )
        ).status_code == 201
        made = []
        for name in ("victim", "attacker"):
            response = await client.post(
                "/api/v1/devices", headers=admin, json={"name": name, "device_type": "temperature", "location": "Lab"}
            )
            assert response.status_code == 201, response.text
            made.append(response.json())
        victim_info, attacker_info = made
        for info in made:
            info["connect"].update(mqtt_host="127.0.0.1", mqtt_port=mqtt_port)

        victim = Device(victim_info["connect"], client_id=victim_info["id"]).start()
        wrong = Device({**attacker_info["connect"], "password": "not-the-password"}, client_id=attacker_info["id"])
        thief = Device(attacker_info["connect"], client_id=victim_info["id"])
        try:
            assert await _wait(victim.connected, 10), victim.refusals  # issued after start: works, no reload
            wrong.start()
            assert await _wait(wrong.refused, 10) and not wrong.connected.is_set()
            thief.start()  # a valid credential with another device's client id: refused before any takeover
            assert await _wait(thief.refused, 10) and not thief.connected.is_set()
            await asyncio.sleep(1.0)
            assert victim.connected.is_set() and not victim.disconnected.is_set(), "the victim's session survived"

            violations: list[str] = []

            async def on_error(exc: Exception) -> None:
                violations.append(str(exc))

            plain = await nats.connect(
                ctx.settings.nats_url,
                user=victim_info["connect"]["username"],
                password=victim_info["connect"]["password"],
                error_cb=on_error,
                allow_reconnect=False,
            )
            await plain.subscribe(">")
            await plain.flush()
            await asyncio.sleep(0.3)
            assert any("permissions violation" in v.lower() for v in violations), violations
            await plain.close()

            victim.disconnected.clear()
            revoked = await client.post(f"/api/v1/devices/{victim_info['id']}/credentials/revoke", headers=admin)
            assert revoked.status_code == 204, revoked.text
            started = time.monotonic()
            assert await _wait(victim.disconnected, 5), "the revoked device's open connection was not closed"
            print(f"revoked connection closed after {time.monotonic() - started:.2f}s")
            assert await _wait(victim.refused, 10), "the revoked credential could connect again"
            assert not victim.connected.is_set()
        finally:
            for device in (victim, wrong, thief):
                device.stop()
        health = ctx.services["nats-auth"].health().to_dict()
        assert health["refused"] >= 3 and health["allowed"] >= 2, health


def test_jwts_round_trip_and_a_tampered_one_is_refused() -> None:
    issuer = nkey_jwt.account_keypair(b"secret-one")
    assert nkey_jwt.public_key(issuer) == nkey_jwt.public_key(nkey_jwt.account_keypair(b"secret-one"))
    assert nkey_jwt.public_key(issuer).startswith("A")
    token = nkey_jwt.encode({"sub": "UABC", "nats": {"type": "user", "version": 2}}, issuer)
    claims = nkey_jwt.decode(token)
    assert claims["iss"] == nkey_jwt.public_key(issuer) and claims["sub"] == "UABC" and len(claims["jti"]) == 52
    header, body, sig = token.split(".")
    forged = nkey_jwt._b64encode(nkey_jwt._b64decode(body).replace(b"UABC", b"UXYZ"))
    with pytest.raises(nkey_jwt.JwtError, match="signature"):
        nkey_jwt.decode(f"{header}.{forged}.{sig}")
    other = nkey_jwt.encode({"sub": "UABC"}, nkey_jwt.account_keypair(b"secret-two"))
    with pytest.raises(nkey_jwt.JwtError):  # someone else's signature under our issuer name
        nkey_jwt.decode(f"{header}.{body}.{other.split('.')[2]}")
    with pytest.raises(nkey_jwt.JwtError, match="not a JWT"):
        nkey_jwt.decode("garbage")


async def test_an_unknown_user_makes_one_refresh_then_is_found_and_misses_are_rate_limited() -> None:
    """A credential committed a moment ago (its change notice not applied yet) is found by refreshing the
    directory once, instead of being refused; unknown names cannot turn that into a database load."""
    from aiot.bus.auth import NatsUser
    from aiot.bus.callout import CalloutResponder

    directory: dict[str, NatsUser] = {}
    refreshes: list[int] = []

    async def refresh() -> None:
        refreshes.append(1)
        directory["dev_new"] = NatsUser(username="dev_new", password="pw-new-1", connection_types=["MQTT"])

    responder = CalloutResponder(None, nkey_jwt.account_keypair(b"s"), directory.get, on_miss=refresh)
    user, _ = await responder.decide({"user": "dev_new", "pass": "pw-new-1"}, {"type": "mqtt", "mqtt_id": "dev_new"})
    assert user is not None and refreshes == [1]
    for _ in range(5):
        user, why = await responder.decide({"user": "nobody", "pass": "x"}, {"type": "nats"})
        assert user is None and why == "unknown user or wrong password"
    assert refreshes == [1]  # within a second of the last refresh: not again
    user, why = await responder.decide({"user": "dev_new", "pass": "pw-new-1"}, {"type": "nats"})
    assert user is None and "may not connect as STANDARD" in why  # MQTT-only credential over plain NATS
