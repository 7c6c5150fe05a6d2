"""Fixtures for the artifacts tests: a catalog of what the sample packages need, and a live platform for the
upload and ownership tests that go through the API."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aiot.artifacts import StaticCatalog
from tests.support.live import LivePlatform, live_platform

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def examples_catalog() -> StaticCatalog:
    """The catalog a platform holding every sample model and device type would have."""
    models: dict[str, list[str]] = {}
    for manifest in sorted((EXAMPLES / "models").glob("*/model.json")):
        data = json.loads(manifest.read_text())
        models.setdefault(data["name"], []).append(data["version"])
    types = {}
    for path in sorted((EXAMPLES / "device-types").glob("*.json")):
        data = json.loads(path.read_text())
        types[data["name"]] = data["kind"]
    return StaticCatalog(models=models, device_types=types)


@pytest.fixture
def catalog() -> StaticCatalog:
    return examples_catalog()


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[LivePlatform]:
    async with live_platform(tmp_path) as platform:
        yield platform
