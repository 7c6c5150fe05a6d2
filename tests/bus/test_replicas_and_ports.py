"""Settings for real deployments: fixed ports for the embedded server, and JetStream replicas on a cluster.

Before: the embedded server's client and MQTT ports were random on first start (a real device needs 1883 or
another known port), and every stream, KV bucket and object store had one replica, to be raised by hand.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from pydantic import ValidationError

from aiot.bus import Bus, EmbeddedNats, embedded
from aiot.bus.embedded import EmbeddedNatsError
from aiot.devices.ingest import LATEST_BUCKET, PRESENCE_BUCKET, READINGS_STREAM, Ingest, IngestConfig
from aiot.settings import Settings
from tests.bus.conftest import free_port
from tests.support.nats_cluster import nats_cluster


async def test_embedded_server_uses_the_ports_it_is_given_or_says_which_is_taken(tmp_path: Path) -> None:
    client_port, mqtt_port = free_port(), free_port()
    server = EmbeddedNats(tmp_path / "data", client_port=client_port, mqtt_port=mqtt_port)
    await server.start()
    try:
        assert server.url == f"nats://127.0.0.1:{client_port}" and server.mqtt_port == mqtt_port
        with socket.create_connection(("127.0.0.1", mqtt_port), timeout=2):
            pass  # the MQTT listener is where devices were told it is
    finally:
        await server.stop()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        clash = EmbeddedNats(tmp_path / "other", mqtt_port=taken)
        with pytest.raises(EmbeddedNatsError, match=f"AIOT_MQTT_PORT={taken}: port {taken} .* in use"):
            await clash.start()


async def test_a_chosen_port_taken_before_the_server_binds_it_means_choosing_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A free port is only a snapshot: on a busy machine another program bound the client port the platform had
    chosen before nats-server did ('bind: address already in use', seen in CI), and start-up failed. The
    embedded server now chooses again (ports of its own choosing only; a fixed port in use is the error above)."""
    real_pick = embedded._pick_free_port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        picks: list[int] = []

        def racing_pick(host: str, avoid: set[int]) -> int:
            port = taken if not picks else real_pick(host, avoid)  # the first pick is the one lost to the race
            picks.append(port)
            return port

        monkeypatch.setattr(embedded, "_pick_free_port", racing_pick)
        server = EmbeddedNats(tmp_path / "data")
        await server.start()
        try:
            assert picks[0] == taken and server.client_port != taken
            assert "address already in use" in server.log_path.read_text()
            bus = await Bus.connect(
                server.url, user=server.platform_user, password=server.platform_password, name="port-race"
            )
            await bus.close()
        finally:
            await server.stop()


def test_settings_refuse_layouts_that_cannot_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="needs a NATS cluster"):
        Settings(data_dir=tmp_path, jetstream_replicas=3)
    with pytest.raises(ValidationError, match="jetstream_replicas"):
        Settings(data_dir=tmp_path, nats_url="nats://x:4222", jetstream_replicas=2)
    with pytest.raises(ValidationError, match="different ports"):
        Settings(data_dir=tmp_path, nats_port=4222, mqtt_port=4222)
    assert Settings(data_dir=tmp_path, nats_url="nats://x:4222", jetstream_replicas=3).jetstream_replicas == 3
    # As documented (docs/scale-out.md), from the environment: the text "3" (the multi-host test found it refused).
    monkeypatch.setenv("AIOT_NATS_URL", "nats://x:4222")
    monkeypatch.setenv("AIOT_JETSTREAM_REPLICAS", "3")
    assert Settings(data_dir=tmp_path).jetstream_replicas == 3
    monkeypatch.setenv("AIOT_JETSTREAM_REPLICAS", "2")
    with pytest.raises(ValidationError, match="jetstream_replicas"):
        Settings(data_dir=tmp_path)


class _NoDevices:
    async def lookup(self, device_id: str) -> None:
        return None


@pytest.mark.timeout(90)
async def test_every_stream_bucket_and_store_gets_the_configured_replicas(tmp_path: Path) -> None:
    async with nats_cluster(tmp_path) as cluster:
        single = await Bus.connect(cluster.urls, name="r1", attempts=3)  # what an earlier R1 set-up made
        try:
            await single.kv("endpoints")
            await single.object_store("artifacts")
        finally:
            await single.close()
        bus = await Bus.connect(cluster.urls, name="r3", attempts=3, replicas=3)
        try:
            await bus.ensure_stream("LOGS", ["logs.>"])
            await bus.kv("endpoints")  # existing R1 bucket: raised
            await bus.kv("fresh")
            await bus.object_store("artifacts")  # existing R1 store: raised
            ingest = Ingest(bus.nc, _NoDevices(), IngestConfig(replicas=3, history_max_bytes=64 * 1024**2))
            await ingest._ensure_storage()
            replicas = {
                name: (await bus.js.stream_info(name)).config.num_replicas
                for name in (
                    "LOGS",
                    "KV_endpoints",
                    "KV_fresh",
                    "OBJ_artifacts",
                    READINGS_STREAM,
                    f"KV_{LATEST_BUCKET}",
                    f"KV_{PRESENCE_BUCKET}",
                )
            }
            assert set(replicas.values()) == {3}, replicas
        finally:
            await bus.close()
