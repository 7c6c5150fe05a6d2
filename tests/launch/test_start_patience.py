"""A service whose start fails only because NATS did not answer in time (a JetStream cluster still electing its
leaders) is started again instead of taking its process down; any other start error still fails at once.

Before, the multi-host test saw an `ingest` replica exit with `nats: timeout` while its cluster's servers came up.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from nats.errors import TimeoutError as NatsTimeout

from aiot.launch import control_plane
from aiot.services.contract import HealthState, PlatformService, ServiceContext, ServiceHealth
from aiot.settings import Settings
from aiot.store.engine import Database


class Flaky(PlatformService):
    name = "flaky"

    def __init__(self, failures: list[BaseException]) -> None:
        self.failures = failures
        self.starts = self.stops = 0

    async def start(self, ctx: ServiceContext) -> None:
        self.starts += 1
        if self.failures:
            raise self.failures.pop(0)

    async def stop(self) -> None:
        self.stops += 1

    def health(self) -> ServiceHealth:
        return ServiceHealth(HealthState.ok)


@pytest.fixture
def ctx(tmp_path: Path) -> ServiceContext:
    return ServiceContext(settings=Settings(data_dir=tmp_path), db=Database(f"sqlite:///{tmp_path / 'a.db'}"))


async def test_a_start_timed_out_on_nats_is_tried_again(ctx: ServiceContext, monkeypatch: pytest.MonkeyPatch) -> None:
    service = Flaky([NatsTimeout(), NatsTimeout()])
    await control_plane._start_riding_out_the_bus(service, ctx)
    assert service.starts == 3 and service.stops == 2  # what a failed start began is stopped before trying again


async def test_any_other_start_error_fails_at_once(ctx: ServiceContext) -> None:
    service = Flaky([ValueError("a bad setting")])
    with pytest.raises(ValueError, match="a bad setting"):
        await control_plane._start_riding_out_the_bus(service, ctx)
    assert service.starts == 1


async def test_patience_has_an_end(ctx: ServiceContext, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(control_plane, "START_PATIENCE_S", 1.0)
    service = Flaky([NatsTimeout() for _ in range(100)])
    with pytest.raises(NatsTimeout):
        await control_plane._start_riding_out_the_bus(service, ctx)
    assert 1 < service.starts < 5
