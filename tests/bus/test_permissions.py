"""Users and subject permissions of the embedded server, enforced by nats-server for NATS and MQTT clients."""

from __future__ import annotations

import asyncio

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from aiot.bus import Bus, EmbeddedNats, NatsUser

from .conftest import MqttProbe, wait_for

DEVICE = NatsUser(
    username="dev_cam1",
    password="cam1-secret",
    publish=["sensors.cam1.>"],
    subscribe=["commands.cam1.>"],
    connection_types=["MQTT"],
)
APP = NatsUser(
    username="app_alert",
    password="app-secret",
    publish=["alerts.>", "svc.>"],
    subscribe=["sensors.>", "_INBOX.>"],
    connection_types=["STANDARD"],
)


class Recorder:
    """Collects what the platform sees on `>` (everything in the account) and a client's async errors."""

    def __init__(self) -> None:
        self.msgs: list[tuple[str, bytes]] = []
        self.errors: list[Exception] = []

    async def on_msg(self, msg: Msg) -> None:
        self.msgs.append((msg.subject, msg.data))

    async def on_error(self, exc: Exception) -> None:
        self.errors.append(exc)

    def subjects(self) -> list[str]:
        return [s for s, _ in self.msgs if not s.startswith("$")]


async def _user_client(server: EmbeddedNats, user: NatsUser, rec: Recorder) -> NatsClient:
    return await nats.connect(
        server.url,
        user=user.username,
        password=user.password,
        error_cb=rec.on_error,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        name=user.username,
    )


async def _watch_everything(bus: Bus) -> Recorder:
    rec = Recorder()
    await bus.subscribe(">", rec.on_msg)
    await bus.flush()
    return rec


async def test_nats_client_publishes_only_its_subjects(embedded: EmbeddedNats, platform_bus: Bus) -> None:
    await embedded.set_users([APP])
    seen = await _watch_everything(platform_bus)
    rec = Recorder()
    app = await _user_client(embedded, APP, rec)
    try:
        await app.publish("alerts.intruder", b"yes")
        await app.publish("commands.cam1.alarm", b"forbidden")  # not in its publish list
        await app.flush()
        await wait_for(lambda: "alerts.intruder" in seen.subjects(), what="allowed publish")
        await wait_for(lambda: rec.errors, what="permission error from the server")
        await platform_bus.flush()
        assert "commands.cam1.alarm" not in seen.subjects()
        assert 'permissions violation for publish to "commands.cam1.alarm"' in str(rec.errors[0])
        # Subscribing outside the allow list is refused too.
        await app.subscribe("commands.>")
        await wait_for(lambda: len(rec.errors) >= 2, what="subscription refusal")
        assert "permissions violation for subscription" in str(rec.errors[1])
    finally:
        await app.close()


async def test_request_reply_needs_inbox_subscribe(embedded: EmbeddedNats, platform_bus: Bus) -> None:
    no_inbox = APP.model_copy(update={"username": "app_noinbox", "subscribe": ["sensors.>"]})
    await embedded.set_users([APP, no_inbox])

    async def echo(msg: Msg) -> None:
        await msg.respond(b"pong")

    await platform_bus.subscribe("svc.ping", echo)
    await platform_bus.flush()
    ok_rec, bad_rec = Recorder(), Recorder()
    ok = await _user_client(embedded, APP, ok_rec)
    bad = await _user_client(embedded, no_inbox, bad_rec)
    try:
        assert (await ok.request("svc.ping", b"", timeout=2)).data == b"pong"
        with pytest.raises(Exception):  # noqa: B017 - nats-py raises a timeout or the permission error
            await bad.request("svc.ping", b"", timeout=1)
        await wait_for(lambda: bad_rec.errors, what="inbox subscription refusal")
        assert "_inbox" in str(bad_rec.errors[0]).lower()
    finally:
        await ok.close()
        await bad.close()


async def test_mqtt_client_publishes_and_subscribes_only_its_topics(
    embedded: EmbeddedNats, platform_bus: Bus, mqtt_probes: list[MqttProbe]
) -> None:
    await embedded.set_users([DEVICE])
    seen = await _watch_everything(platform_bus)
    probe = MqttProbe.start(embedded.mqtt_port, DEVICE.username, DEVICE.password, DEVICE.username)
    mqtt_probes.append(probe)
    await wait_for(probe.connected.is_set, 20.0, what="MQTT CONNACK")  # a bound: loaded CI machines took > 5 s

    # Subscriptions: its own command topics with QoS 1 (JetStream-backed, needs $MQTT.sub.>) and QoS 0; and
    # `#`, which also covers the parent topic itself; another device's commands are refused in the SUBACK.
    (rc,) = await probe.subscribe("commands/cam1/#", qos=1)
    assert not rc.is_failure and rc.value == 1
    (rc,) = await probe.subscribe("commands/cam1/+", qos=0)
    assert not rc.is_failure
    (rc,) = await probe.subscribe("commands/cam2/#", qos=1)
    assert rc.is_failure

    for qos in (0, 1):
        await probe.publish(f"sensors/cam1/frame{qos}", b"jpeg", qos=qos)
        await probe.publish(f"alerts/fake{qos}", b"spoof", qos=qos)  # not in its publish list
    await wait_for(
        lambda: {"sensors.cam1.frame0", "sensors.cam1.frame1"} <= set(seen.subjects()), what="allowed MQTT publishes"
    )
    await asyncio.sleep(0.3)
    await platform_bus.flush()
    assert not [s for s in seen.subjects() if s.startswith("alerts")], "server let a forbidden publish through"

    await platform_bus.publish("commands.cam1.alarm", b"ring")
    await platform_bus.publish("commands.cam2.alarm", b"not yours")
    await wait_for(lambda: ("commands/cam1/alarm", b"ring") in probe.messages, what="command delivery")
    await asyncio.sleep(0.3)
    assert all(topic.startswith("commands/cam1/") for topic, _ in probe.messages)
    assert "Publish Violation" in embedded.log_tail(200)


async def test_mqtt_qos1_for_mixed_user_without_granting_mqtt_subjects_to_nats(
    embedded: EmbeddedNats, platform_bus: Bus, mqtt_probes: list[MqttProbe]
) -> None:
    """A user allowed both NATS and MQTT gets no `$MQTT.sub.>` grant (it could snoop QoS 1 deliveries over
    NATS); nats-server 2.15.1 allows MQTT connections their internal `$MQTT.` subjects implicitly."""
    mixed = NatsUser(username="mixed", password="pw", publish=["x.>"], subscribe=["cmd.>", "_INBOX.>"])
    await embedded.set_users([mixed])
    assert "$MQTT" not in embedded.auth_path.read_text()
    probe = MqttProbe.start(embedded.mqtt_port, "mixed", "pw", "mixed")
    mqtt_probes.append(probe)
    await wait_for(probe.connected.is_set, 20.0, what="MQTT CONNACK")  # a bound: loaded CI machines took > 5 s
    (rc,) = await probe.subscribe("cmd/#", qos=1)
    assert not rc.is_failure and rc.value == 1
    await platform_bus.publish("cmd.go", b"1")
    await wait_for(lambda: ("cmd/go", b"1") in probe.messages, what="QoS 1 delivery")

    rec = Recorder()
    snoop = await _user_client(embedded, mixed, rec)
    try:
        await snoop.subscribe("$MQTT.sub.>")
        await wait_for(lambda: rec.errors, what="refusal of $MQTT.sub.> to a NATS client")
        assert "permissions violation for subscription" in str(rec.errors[0])
    finally:
        await snoop.close()


def test_permission_rules_for_mqtt_only_and_mute_users() -> None:
    from aiot.bus.auth import MQTT_DELIVERY_SUBJECT, permissions_for

    device = permissions_for(DEVICE)
    assert MQTT_DELIVERY_SUBJECT in device["subscribe"]["allow"]  # type: ignore[index]
    assert "commands.cam1" in device["subscribe"]["allow"]  # type: ignore[index]  # MQTT `a/#` matches `a` too
    nothing = permissions_for(NatsUser(username="mute", password="x"))
    assert nothing == {"publish": {"deny": [">"]}, "subscribe": {"deny": [">"]}}


async def test_connection_types_are_enforced(embedded: EmbeddedNats, mqtt_probes: list[MqttProbe]) -> None:
    await embedded.set_users([DEVICE, APP])
    with pytest.raises(Exception, match="(?i)authorization"):  # MQTT-only user over plain NATS
        await nats.connect(
            embedded.url, user=DEVICE.username, password=DEVICE.password, allow_reconnect=False, connect_timeout=2
        )
    probe = MqttProbe.start(embedded.mqtt_port, APP.username, APP.password, APP.username)
    mqtt_probes.append(probe)
    await wait_for(lambda: probe.connack, 20.0, what="CONNACK")
    assert probe.connack[0].is_failure


async def test_removed_user_is_cut_off_live_others_stay(
    embedded: EmbeddedNats, platform_bus: Bus, mqtt_probes: list[MqttProbe]
) -> None:
    await embedded.set_users([DEVICE, APP])
    app_rec = Recorder()
    app = await _user_client(embedded, APP, app_rec)
    dropped: list[bool] = []

    async def on_drop() -> None:
        dropped.append(True)

    keeper = await nats.connect(
        embedded.url, user=embedded.platform_user, password=embedded.platform_password, disconnected_cb=on_drop
    )
    probe = MqttProbe.start(embedded.mqtt_port, DEVICE.username, DEVICE.password, DEVICE.username)
    mqtt_probes.append(probe)
    await wait_for(probe.connected.is_set, 20.0, what="MQTT CONNACK")  # a bound: loaded CI machines took > 5 s
    try:
        await embedded.set_users([])  # both removed; the server reloads live
        await wait_for(lambda: not app.is_connected, 5, "NATS client of a removed user to be cut off")
        await wait_for(lambda: probe.disconnects, 5, "MQTT client of a removed user to be cut off")
        await wait_for(lambda: any("Authorization" in str(e) for e in app_rec.errors), 5, "its reconnect to be refused")
        assert not app.is_connected
        assert keeper.is_connected and platform_bus.is_connected and not dropped
        # Re-adding the user lets it back in (the reconnecting nats-py client gets through).
        await embedded.set_users([APP])
        await wait_for(lambda: app.is_connected, 5, "re-added user to reconnect")
    finally:
        await app.close()
        await keeper.close()


async def test_changed_permissions_apply_to_a_connected_client(embedded: EmbeddedNats, platform_bus: Bus) -> None:
    await embedded.set_users([APP])
    seen = await _watch_everything(platform_bus)
    rec = Recorder()
    app = await _user_client(embedded, APP, rec)
    try:
        reconnects = app.stats["reconnects"]
        await embedded.set_users([APP.model_copy(update={"publish": ["svc.>"]})])  # alerts.> withdrawn
        # The changed user's connection is closed and comes back (nats-py reconnects) with the new permissions;
        # what a client sends while its connection is being closed may be lost, as on any core NATS reconnect.
        await wait_for(lambda: app.stats["reconnects"] > reconnects and app.is_connected, 5, "the reconnect")
        await app.publish("alerts.after", b"x")
        await app.publish("svc.after", b"y")
        await app.flush()
        await wait_for(lambda: "svc.after" in seen.subjects(), what="still-allowed publish")
        await wait_for(lambda: rec.errors, what="refusal of the withdrawn subject")
        assert "alerts.after" not in seen.subjects() and app.is_connected
    finally:
        await app.close()


def test_user_validation_messages() -> None:
    with pytest.raises(ValueError, match="reserved"):
        NatsUser(username="aiot-platform", password="x")
    with pytest.raises(ValueError, match="'>' may only be the last token"):
        NatsUser(username="u", password="x", publish=["a.>.b"])
    with pytest.raises(ValueError, match="empty token"):
        NatsUser(username="u", password="x", subscribe=["a..b"])


async def test_duplicate_usernames_rejected(embedded: EmbeddedNats) -> None:
    with pytest.raises(ValueError, match="duplicate usernames"):
        await embedded.set_users([APP, APP])


async def test_an_older_server_on_path_is_refused_with_the_version_needed(tmp_path) -> None:  # noqa: ANN001
    """Auth callout (how every client but the platform is let in) needs nats-server 2.10; Debian's 2.9 on PATH
    must be refused at start with what to install, not start with nobody able to connect."""
    import shutil
    from pathlib import Path

    from aiot.bus.binary import nats_server_version
    from aiot.bus.embedded import EmbeddedNatsError

    found = shutil.which("nats-server")
    if not found or nats_server_version(Path(found)) >= (2, 10, 0):
        pytest.skip("no pre-2.10 nats-server on PATH")
    server = EmbeddedNats(tmp_path, binary=Path(found))
    with pytest.raises(EmbeddedNatsError, match=r"2\.10 or newer"):
        await server.start()
    assert not server.running
