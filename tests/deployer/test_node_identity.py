"""Node identity: join tokens are single-use (or N-use) and short-lived, a name is never taken over, an admin can
revoke a node (its token and NATS user stop working, it is assigned nothing), and no join token is ever on a
command line. Each test is an attack that worked on the earlier design (7-day reusable tokens, takeover of a name
silent for 5 s, no revocation, `--token VALUE`)."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from pathlib import Path

import pytest
import typer
from sqlalchemy import update

from aiot.bus.client import Bus, BusUnavailable
from aiot.deployer import nodes as node_rules
from aiot.store.models import Role
from aiot.store.runtime import Node
from aiot.timeutil import utcnow
from tests.deployer.helpers import deploy_comfort
from tests.support.live import LivePlatform, live_platform

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CAPACITY = {"cpu": 4, "memory_mb": 8192}


async def _token(live: LivePlatform, **body: object) -> str:
    response = await live.client.post("/api/v1/nodes/join-tokens", json=body or None, headers=live.headers(Role.admin))
    assert response.status_code == 201, response.text
    return response.json()["token"]


async def _register(live: LivePlatform, token: str, name: str, key: str | None = None):  # type: ignore[no-untyped-def]
    body = {"name": name, "capacity": CAPACITY, **({"registration_key": key} if key else {})}
    return await live.client.post("/api/v1/agent/register", headers={"Authorization": f"Bearer {token}"}, json=body)


async def test_a_used_join_token_is_refused(tmp_path: Path) -> None:
    async with live_platform(tmp_path) as live:
        token = await _token(live)
        assert (await _register(live, token, "n1")).status_code == 200
        again = await _register(live, token, "rogue")
        assert again.status_code == 401, again.text
        assert "already used" in again.text
        # `--uses N` allows N registrations, not N + 1.
        shared = await _token(live, uses=2)
        assert [(await _register(live, shared, f"m{i}")).status_code for i in range(3)] == [200, 200, 401]
        # A used token with the name of the node it made, but without that registration's key: still refused.
        assert (await _register(live, token, "n1")).status_code == 401


async def test_a_registration_retried_after_a_lost_answer_gets_its_node_back(tmp_path: Path) -> None:
    """The agent timed out while the control plane registered it (a single-use token now used up): its retry,
    with the same registration key, gets the same node and a fresh token; the lost answer's token is dead.
    Before, the retry got "join token already used" and the agent gave up (seen on a loaded CI machine)."""
    async with live_platform(tmp_path) as live:
        token, key = await _token(live), "k" * 20 + "0123456789abcdef"
        first = await _register(live, token, "slow-node", key)
        assert first.status_code == 200, first.text
        retry = await _register(live, token, "slow-node", key)
        assert retry.status_code == 200, retry.text
        assert retry.json()["node_id"] == first.json()["node_id"]
        assert retry.json()["node_token"] != first.json()["node_token"]
        assert retry.json()["nats"] == first.json()["nats"]
        assert await _node_answer(live, first.json()["node_token"]) == 401
        assert await _node_answer(live, retry.json()["node_token"]) == 200
        nodes = (await live.client.get("/api/v1/nodes", headers=live.headers(Role.admin))).json()
        assert [n["name"] for n in nodes].count("slow-node") == 1
        # Another key (another agent holding the used token), or the right key for another name: refused.
        assert (await _register(live, token, "slow-node", "x" * 36)).status_code == 401
        assert (await _register(live, token, "other-node", key)).status_code == 401
        # Once the node is revoked, its registration cannot be resumed.
        node_id = first.json()["node_id"]
        revoked = await live.client.post(f"/api/v1/nodes/{node_id}/revoke", headers=live.headers(Role.admin))
        assert revoked.status_code == 200, revoked.text
        assert (await _register(live, token, "slow-node", key)).status_code == 401


async def _node_answer(live: LivePlatform, node_token: str) -> int:
    response = await live.client.get("/api/v1/agent/assignments", headers={"Authorization": f"Bearer {node_token}"})
    return response.status_code


async def test_a_join_token_expires_after_an_hour_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with live_platform(tmp_path) as live:
        token = await _token(live)
        later = utcnow() + timedelta(minutes=61)
        monkeypatch.setattr(node_rules, "utcnow", lambda: later)
        late = await _register(live, token, "late")
        assert late.status_code == 401, late.text
        assert "expired" in late.text
        bad = await live.client.post("/api/v1/nodes/join-tokens", json={"uses": 0}, headers=live.headers(Role.admin))
        assert bad.status_code == 422 and "uses" in bad.text


async def test_a_second_registration_under_a_name_gets_409_however_long_the_node_was_silent(tmp_path: Path) -> None:
    async with live_platform(tmp_path) as live:
        first = (await _register(live, await _token(live), "n1")).json()
        with live.ctx.db.session() as session:  # silent for an hour, and marked lost
            session.execute(
                update(Node)
                .where(Node.id == first["node_id"])
                .values(last_report_at=utcnow() - timedelta(hours=1), status="lost")
            )
        takeover = await _register(live, await _token(live), "n1")
        assert takeover.status_code == 409, takeover.text
        assert "never taken over" in takeover.text
        # The real node keeps its identity; the refused attempt did not use up the token it presented.
        still = await live.client.get(
            "/api/v1/agent/assignments", headers={"Authorization": f"Bearer {first['node_token']}"}
        )
        assert still.status_code == 200 and still.json()["node_id"] == first["node_id"]


async def test_a_revoked_node_is_refused_assigned_nothing_and_loses_its_nats_user(tmp_path: Path) -> None:
    async with live_platform(tmp_path, services=("nats-auth", "deployer")) as live:
        join = await _token(live, uses=2)
        node = (await _register(live, join, "n1")).json()
        headers = {"Authorization": f"Bearer {node['node_token']}"}
        nats = node["nats"]
        await live.ctx.services["nats-auth"].sync()  # (it also runs every 15 s and after each placement)
        held = await Bus.connect(nats["servers"], user=nats["user"], password=nats["password"], name="n1", attempts=20)
        assert (await live.client.post("/api/v1/agent/report", headers=headers, json={})).status_code == 200
        await deploy_comfort(live, tmp_path, 1)
        for _ in range(100):  # reporting meanwhile: a slow machine must not make n1 "lost"
            assert (await live.client.post("/api/v1/agent/report", headers=headers, json={})).status_code == 200
            assigned = (await live.client.get("/api/v1/agent/assignments", headers=headers)).json()["assignments"]
            if assigned:
                break
            await asyncio.sleep(0.2)
        assert assigned, "the replica was never placed on n1"

        people = await live.client.post("/api/v1/nodes/n1/revoke", headers=live.headers(Role.ai_developer))
        assert people.status_code == 403
        revoked = await live.client.post("/api/v1/nodes/n1/revoke", headers=live.headers(Role.admin))
        assert revoked.status_code == 200, revoked.text
        # The node's open NATS connection is closed within 5 s (and cannot come back: its user is gone).
        for _ in range(50):
            if not held.nc.is_connected:
                break
            await asyncio.sleep(0.1)
        connected_after_revoke = held.nc.is_connected
        await held.close()
        assert not connected_after_revoke, "the revoked node's NATS connection was still open 5 s later"
        assert revoked.json()["moved_workloads"] == [assigned[0]["workload_id"]]

        for call in (
            live.client.get("/api/v1/agent/assignments", headers=headers),
            live.client.post("/api/v1/agent/report", headers=headers, json={}),
        ):
            refused = await call
            assert refused.status_code == 401, refused.text
            assert "revoked" in refused.text
        # Its unused second registration died with it: it cannot come back under its name or any other.
        assert (await _register(live, join, "n1")).status_code == 401
        assert (await _register(live, join, "n1-again")).status_code == 401
        # The workload waits for another node, with new credentials (n1 knew the old ones).
        await asyncio.sleep(1.0)
        shown = (
            await live.client.get(f"/api/v1/workloads/{assigned[0]['workload_id']}", headers=live.headers(Role.admin))
        ).json()
        assert shown["node_id"] is None and shown["generation"] == assigned[0]["generation"] + 1
        listed = (await live.client.get("/api/v1/nodes", headers=live.headers(Role.admin))).json()
        assert [n["name"] for n in listed] == []
        # Its NATS user is gone (the auth service resynced): the node's NATS password no longer connects.
        with pytest.raises(BusUnavailable):
            for _ in range(30):
                probe = await Bus.connect(
                    nats["servers"],
                    user=nats["user"],
                    password=nats["password"],
                    name="n1",
                    attempts=1,
                    connect_timeout=2,
                )
                await probe.close()
                await asyncio.sleep(0.2)
        # An admin may give the name to a new machine with a fresh token: a new node (new id, NATS user and
        # password), so nothing the revoked machine knew works for it.
        fresh = await _register(live, await _token(live), "n1")
        assert fresh.status_code == 200, fresh.text
        assert fresh.json()["node_id"] != node["node_id"]
        assert fresh.json()["nats"]["password"] != nats["password"]
        assert (await live.client.get("/api/v1/agent/assignments", headers=headers)).status_code == 401


def test_a_join_token_is_never_taken_from_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aiot.cli.node import read_join_token

    with pytest.raises(typer.BadParameter, match="token-file"):
        read_join_token("aiotjoin.x.y", None)
    token_file = tmp_path / "join-token"
    token_file.write_text("aiotjoin.a.b\n")
    token_file.chmod(0o644)
    with pytest.raises(typer.BadParameter, match="chmod 600"):
        read_join_token(None, token_file)
    token_file.chmod(0o600)
    assert read_join_token(None, token_file) == "aiotjoin.a.b"
    monkeypatch.setenv("AIOT_JOIN_TOKEN", "aiotjoin.c.d")
    assert read_join_token(None, None) == "aiotjoin.c.d"
    assert "AIOT_JOIN_TOKEN" not in os.environ  # nothing the agent starts inherits it


def test_aiot_node_join_refuses_a_token_on_its_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from aiot.cli.main import app

    monkeypatch.setenv("AIOT_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["node", "join", "--server", "http://127.0.0.1:9", "--token", "aiotjoin.a.b"])
    assert result.exit_code == 2
    assert "--token-file" in result.output and "AIOT_JOIN_TOKEN" in result.output
