"""Simulators: curves follow local time, overrides work, controllers obey and acknowledge, and a fleet runs
through real NATS into ingest with nothing rejected or lost."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry

from aiot.bus import codec
from aiot.devices import subjects
from aiot.devices.ingest import Ingest
from aiot.devices.simulators import (
    SIM_TYPES,
    CameraSim,
    Connection,
    FanSim,
    LightSim,
    SimDevice,
    SimulatorRunner,
    TemperatureSim,
)

from .conftest import DictDirectory
from .helpers import wait_until

NOON_UTC = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def test_light_follows_local_time():
    kolkata = LightSim("dev_light00001", tz="Asia/Kolkata", seed=1)  # 17:30 local: dusk
    lima = LightSim("dev_light00002", tz="America/Lima", seed=1)  # 07:00 local: morning
    london = LightSim("dev_light00003", tz="Europe/London", seed=1)  # 13:00 local: bright
    midnight = LightSim("dev_light00004", tz="Pacific/Auckland", seed=1)  # 00:00 local
    values = {s.device_id: s.value(NOON_UTC) for s in (kolkata, lima, london, midnight)}
    assert values["dev_light00003"] > values["dev_light00001"] > values["dev_light00004"]
    assert values["dev_light00003"] > values["dev_light00002"] > values["dev_light00004"]
    assert values["dev_light00004"] < 5
    reading = codec.decode_reading(london.payload(NOON_UTC), SIM_TYPES["light"])
    assert reading.ts == NOON_UTC and reading.values["illuminance"] > 500


def test_temperature_curve_noise_drift_and_heat_up():
    sim = TemperatureSim("dev_temp000001", tz="UTC", seed=3)
    afternoon = sim.value(datetime(2024, 6, 1, 15, 0, tzinfo=UTC))
    early = sim.value(datetime(2024, 6, 1, 3, 0, tzinfo=UTC))
    assert afternoon - early > 5
    sim.heat_up(10)
    hot = sim.value(datetime(2024, 6, 1, 3, 0, tzinfo=UTC))
    assert hot - early > 8
    sim.heat_up(0)
    readings = [sim.value(NOON_UTC) for _ in range(50)]
    assert len(set(readings)) > 10  # noise
    assert abs(sim.drift) <= sim.drift_limit
    codec.decode_reading(sim.payload(), SIM_TYPES["temperature"])  # valid against its type


def test_camera_scenes_use_packaged_images():
    cam = CameraSim("dev_cam0000001", scene="face", seed=1)
    face = codec.decode_reading(cam.payload(), SIM_TYPES["camera"])
    cam.scene = "empty"
    empty = codec.decode_reading(cam.payload(), SIM_TYPES["camera"])
    assert face.data != empty.data and face.width == 640
    assert face.image().shape == (640, 640, 3)  # astronaut is square
    with pytest.raises(ValueError):
        CameraSim("dev_cam0000002", rate=0)


def test_controllers_obey_and_ack_with_cmd_id():
    fan = FanSim("dev_fan0000001")
    reply = codec.decode_state(fan.handle(codec.encode_command("c1", "set_speed", {"speed": 2})), SIM_TYPES["fan"])
    assert reply.cmd_id == "c1" and reply.state == {"power": True, "speed": 2} and reply.error is None
    reply = codec.decode_state(fan.handle(codec.encode_command("c2", "off")))
    assert reply.state == {"power": False, "speed": 0}
    reply = codec.decode_state(fan.handle(codec.encode_command("c2b", "on")))
    assert reply.state == {"power": True, "speed": 2}  # back at the last speed
    fan.handle(codec.encode_command("c2c", "off"))
    refused = codec.decode_state(fan.handle(b'{"cmd_id": "c3", "command": "set_speed", "args": {"speed": 9}}'))
    assert refused.cmd_id == "c3" and "out_of_range" in refused.error and refused.state["speed"] == 0
    assert fan.handle(b"garbage") is None


COMMANDS = {
    "fan": ("set_speed", {"speed": 3}, {"power": True, "speed": 3}),
    "display": ("show", {"text": "hello", "level": "alert"}, {"text": "hello", "level": "alert"}),
    "ac": ("set_target", {"celsius": 19.5}, {"power": False, "target": 19.5}),
    "lamp": ("on", {}, {"power": True}),
    "alarm": ("on", {"reason": "intruder"}, {"power": True, "reason": "intruder"}),
}


async def test_fleet_runs_through_nats_into_ingest(nats_server, nc):
    sensors = [SimDevice(f"dev_temp{i:06d}", "temperature", options={"rate": 20}) for i in range(5)]
    sensors += [
        SimDevice("dev_light00001", "light", options={"rate": 20}),
        SimDevice("dev_cam0000001", "camera", options={"rate": 10, "scene": "mixed"}),
    ]
    controllers = [SimDevice(f"dev_{name}ctl001", name) for name in COMMANDS]
    directory = DictDirectory({d.device_id: SIM_TYPES[d.model] for d in sensors + controllers})
    ingest = Ingest(nc, directory, registry=CollectorRegistry())
    await ingest.start()
    states: list[dict] = []

    async def on_state(msg):
        states.append(json.loads(msg.data))

    await nc.subscribe(subjects.ALL_STATE, cb=on_state)
    runner = SimulatorRunner(sensors + controllers, Connection(nats_url=nats_server.url), tz="Asia/Kolkata")
    await runner.start()
    try:
        assert len(runner._links) == 1  # one shared connection for all devices with the same credentials
        await wait_until(lambda: len(states) == len(controllers))  # each reports its initial state
        cmd_ids = {}
        for dev in controllers:
            command, args, _ = COMMANDS[dev.model]
            cmd_ids[dev.device_id] = "c_" + uuid.uuid4().hex[:8]
            await nc.publish(
                subjects.cmd_subject(dev.device_id), codec.encode_command(cmd_ids[dev.device_id], command, args)
            )
        await wait_until(lambda: {s["cmd_id"] for s in states} >= set(cmd_ids.values()))
        for dev in controllers:
            ack = next(s for s in states if s["cmd_id"] == cmd_ids[dev.device_id])
            assert ack["state"] == COMMANDS[dev.model][2] and ack["error"] is None
        await wait_until(lambda: all(runner.sent[d.device_id] >= 3 for d in sensors))
    finally:
        await runner.stop()
    await nc.flush()
    await wait_until(lambda: ingest.accepted >= sum(runner.sent.values()))
    await ingest.wait_stored()
    assert ingest.rejected == {}
    assert ingest.accepted == sum(runner.sent.values())
    for dev in sensors:  # nothing lost between simulator and history
        assert len(await ingest.history(dev.device_id, limit=10_000)) == runner.sent[dev.device_id]
        assert (await ingest.presence(dev.device_id))["status"] == "offline"  # clean stop says goodbye
    await ingest.stop()


async def test_mqtt_simulator_link(nats_server, nc):
    got: list[str] = []

    async def cb(msg):
        got.append(msg.subject)

    await nc.subscribe("aiot.dev.>", cb=cb)
    conn = Connection(mqtt_host="127.0.0.1", mqtt_port=nats_server.mqtt_port)
    runner = SimulatorRunner(
        [SimDevice("dev_mqtttemp01", "temperature", options={"rate": 20}), SimDevice("dev_mqttlamp01", "lamp")], conn
    )
    await runner.start()
    try:
        await wait_until(lambda: subjects.data_subject("dev_mqtttemp01") in got)
        await wait_until(lambda: subjects.state_subject("dev_mqttlamp01") in got)
        await nc.publish(subjects.cmd_subject("dev_mqttlamp01"), codec.encode_command("c9", "on"))
        await wait_until(lambda: got.count(subjects.state_subject("dev_mqttlamp01")) >= 2)
        assert runner.sims["dev_mqttlamp01"].state["power"] is True
    finally:
        await runner.stop()


def test_sim_types_equal_the_sample_device_types():
    from pathlib import Path

    examples = Path(__file__).resolve().parents[2] / "examples" / "device-types"
    for name, type_def in SIM_TYPES.items():
        sample = json.loads((examples / f"{name}.json").read_text(encoding="utf-8"))
        assert type_def == SIM_TYPES[name].model_validate(sample), name
