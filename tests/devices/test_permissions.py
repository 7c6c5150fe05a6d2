"""`device_permissions` enforced by a real nats-server: a device can use only its own subjects, over NATS and
over MQTT (nats-server applies user permissions to the subjects MQTT topics map to)."""

from __future__ import annotations

import asyncio
import threading

import nats
import paho.mqtt.client as mqtt
import pytest

from aiot.devices import subjects
from aiot.devices.subjects import DevicePermissions, device_permissions

from .conftest import CONTROLLER_ID, OTHER_ID, SENSOR_ID
from .helpers import wait_until


def test_permission_lists():
    sensor = device_permissions(SENSOR_ID, "sensor", "nats")
    assert sensor == DevicePermissions(
        publish=[f"aiot.dev.{SENSOR_ID}.data", f"aiot.dev.{SENSOR_ID}.presence"], subscribe=[]
    )
    ctrl = device_permissions(CONTROLLER_ID, "controller", "nats")
    assert ctrl.publish == [f"aiot.dev.{CONTROLLER_ID}.state", f"aiot.dev.{CONTROLLER_ID}.presence"]
    assert ctrl.subscribe == [f"aiot.dev.{CONTROLLER_ID}.cmd"]
    assert "$MQTT.sub.>" in device_permissions(CONTROLLER_ID, "controller", "mqtt").subscribe
    assert sensor.as_nats_permissions()["subscribe"] == {"deny": [">"]}
    with pytest.raises(ValueError, match="no dots"):
        device_permissions("dev_a.b", "sensor")
    with pytest.raises(ValueError, match="kind"):
        device_permissions(SENSOR_ID, "actuator")  # type: ignore[arg-type]


async def _collect(nc, subject: str) -> list[str]:
    got: list[str] = []

    async def cb(msg):
        got.append(msg.subject)

    await nc.subscribe(subject, cb=cb)
    await nc.flush()
    return got


async def test_nats_device_limited_to_its_own_subjects(secured_server, platform_nc):
    got = await _collect(platform_nc, "aiot.dev.>")
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    sensor = await nats.connect(
        secured_server.url, user=SENSOR_ID, password="sensor-pw", error_cb=on_error, allow_reconnect=False
    )
    ctrl = await nats.connect(
        secured_server.url, user=CONTROLLER_ID, password="ctrl-pw", error_cb=on_error, allow_reconnect=False
    )
    try:
        await sensor.publish(subjects.data_subject(OTHER_ID), b"{}")  # someone else's data: refused
        await sensor.publish(subjects.state_subject(SENSOR_ID), b"{}")  # a sensor has no state: refused
        await sensor.publish(subjects.data_subject(SENSOR_ID), b"{}")  # its own: delivered
        await sensor.flush()
        await wait_until(lambda: subjects.data_subject(SENSOR_ID) in got)
        await wait_until(lambda: len(errors) >= 2)
        assert all("permissions violation" in str(e).lower() for e in errors)

        cmds: list[bytes] = []

        async def on_cmd(msg):
            cmds.append(msg.data)

        await ctrl.subscribe(subjects.cmd_subject(CONTROLLER_ID), cb=on_cmd)  # own commands: allowed
        await ctrl.subscribe(subjects.cmd_subject(OTHER_ID), cb=on_cmd)  # another controller's: refused
        await ctrl.publish(subjects.data_subject(CONTROLLER_ID), b"{}")  # a controller has no data: refused
        await ctrl.flush()
        await wait_until(lambda: len(errors) >= 4)
        await platform_nc.publish(subjects.cmd_subject(OTHER_ID), b"other")
        await platform_nc.publish(subjects.cmd_subject(CONTROLLER_ID), b"mine")
        await wait_until(lambda: b"mine" in cmds)
        await asyncio.sleep(0.1)
        assert cmds == [b"mine"]
        assert subjects.data_subject(OTHER_ID) not in got
        assert subjects.state_subject(SENSOR_ID) not in got
        assert subjects.data_subject(CONTROLLER_ID) not in got
    finally:
        await sensor.close()
        await ctrl.close()


def _mqtt_client(server, user: str, password: str) -> tuple[mqtt.Client, dict]:
    info: dict = {"connected": threading.Event(), "rc": None, "subacks": [], "messages": []}

    def on_connect(c, u, flags, reason, props=None):
        info["rc"] = reason
        info["connected"].set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{user}-test")
    client.username_pw_set(user, password)
    client.on_connect = on_connect
    client.on_subscribe = lambda c, u, mid, rcs, props=None: info["subacks"].append(rcs)
    client.on_message = lambda c, u, msg: info["messages"].append((msg.topic, msg.payload))
    client.connect("127.0.0.1", server.mqtt_port)
    client.loop_start()
    assert info["connected"].wait(10)
    return client, info


async def test_mqtt_device_limited_to_its_own_topics(secured_server, platform_nc):
    got = await _collect(platform_nc, "aiot.dev.>")
    sensor, s_info = _mqtt_client(secured_server, SENSOR_ID, "sensor-pw")
    ctrl, c_info = _mqtt_client(secured_server, CONTROLLER_ID, "ctrl-pw")
    try:
        assert s_info["rc"] == 0 and c_info["rc"] == 0
        sensor.publish(subjects.mqtt_topic(OTHER_ID, "data"), b"{}", qos=1)
        sensor.publish(subjects.mqtt_topic(CONTROLLER_ID, "state"), b"{}", qos=1)
        sensor.publish(subjects.mqtt_topic(SENSOR_ID, "data"), b"{}", qos=1).wait_for_publish(5)
        await wait_until(lambda: subjects.data_subject(SENSOR_ID) in got)

        ctrl.subscribe(subjects.mqtt_topic(CONTROLLER_ID, "cmd"), qos=1)
        ctrl.subscribe(subjects.mqtt_topic(OTHER_ID, "cmd"), qos=1)
        await wait_until(lambda: len(c_info["subacks"]) == 2)
        assert not c_info["subacks"][0][0].is_failure
        assert c_info["subacks"][1][0].is_failure  # SUBACK 0x80: refused by the server
        ctrl.publish(subjects.mqtt_topic(OTHER_ID, "state"), b"{}", qos=1)
        ctrl.publish(subjects.mqtt_topic(CONTROLLER_ID, "state"), b"{}", qos=1).wait_for_publish(5)
        await wait_until(lambda: subjects.state_subject(CONTROLLER_ID) in got)
        await platform_nc.publish(subjects.cmd_subject(OTHER_ID), b"other")
        await platform_nc.publish(subjects.cmd_subject(CONTROLLER_ID), b"mine")
        await wait_until(lambda: any(p == b"mine" for _, p in c_info["messages"]))
        await asyncio.sleep(0.1)
        assert [p for _, p in c_info["messages"]] == [b"mine"]
        assert subjects.data_subject(OTHER_ID) not in got
        assert subjects.state_subject(OTHER_ID) not in got
        assert got.count(subjects.state_subject(CONTROLLER_ID)) == 1
    finally:
        for client in (sensor, ctrl):
            client.disconnect()
            client.loop_stop()


async def test_mqtt_wrong_password_refused(secured_server):
    client, info = _mqtt_client(secured_server, SENSOR_ID, "wrong")
    try:
        assert info["rc"].is_failure
    finally:
        client.loop_stop()


@pytest.mark.parametrize(
    "secured_server",
    [
        [
            (SENSOR_ID, "sensor", "nats", "sensor-pw"),
            (CONTROLLER_ID, "controller", "nats", "ctrl-pw"),
            (OTHER_ID, "controller", "nats", "other-pw"),
        ]
    ],
    indirect=True,
)
async def test_mqtt_works_without_explicit_mqtt_permissions(secured_server, platform_nc):
    """nats-server >= 2.12 grants `$MQTT.` internals implicitly (nats-io/nats-server#7637): with the plain NATS
    lists an MQTT controller still gets QoS 1 commands and a sensor's retained Last Will still fires."""
    got = await _collect(platform_nc, "aiot.dev.>")
    ctrl, c_info = _mqtt_client(secured_server, CONTROLLER_ID, "ctrl-pw")
    try:
        ctrl.subscribe(subjects.mqtt_topic(CONTROLLER_ID, "cmd"), qos=1)
        await wait_until(lambda: len(c_info["subacks"]) == 1)
        assert not c_info["subacks"][0][0].is_failure
        await platform_nc.publish(subjects.cmd_subject(CONTROLLER_ID), b"mine")
        await wait_until(lambda: c_info["messages"] == [(subjects.mqtt_topic(CONTROLLER_ID, "cmd"), b"mine")])
    finally:
        ctrl.disconnect()
        ctrl.loop_stop()
    sensor = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="lwt-test")
    sensor.username_pw_set(SENSOR_ID, "sensor-pw")
    sensor.will_set(subjects.mqtt_topic(SENSOR_ID, "presence"), b"offline", qos=1, retain=True)
    sensor.connect("127.0.0.1", secured_server.mqtt_port)
    sensor.loop_start()
    await asyncio.sleep(0.3)
    sensor.loop_stop()
    sensor.socket().close()  # die without DISCONNECT: the server publishes the Last Will
    await wait_until(lambda: subjects.presence_subject(SENSOR_ID) in got, within=10)
