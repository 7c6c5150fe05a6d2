"""Fixtures for the artifacts tests: a catalog of what the sample packages need."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aiot.artifacts import StaticCatalog

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
