"""Device type definitions of the simulated devices: what each simulator sends and which commands it obeys.

`device_types/*.json` are copies of the sample types in `examples/device-types/` (the files an admin
registers); they ship inside the package so the simulators work from an installed wheel, and a test checks
the copies still equal the examples. `SIM_TYPES[name]` is the validated `DeviceTypeDefinition`.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from aiot.artifacts.manifests import DeviceTypeDefinition

SIM_TYPE_NAMES = ("camera", "light", "temperature", "fan", "display", "ac", "lamp", "alarm")


def _load(name: str) -> DeviceTypeDefinition:
    text = resources.files(__package__).joinpath("device_types", f"{name}.json").read_text(encoding="utf-8")
    return DeviceTypeDefinition.model_validate(json.loads(text))


SIM_TYPES: dict[str, DeviceTypeDefinition] = {name: _load(name) for name in SIM_TYPE_NAMES}


def sim_type_json(name: str) -> dict[str, Any]:
    """The JSON an admin registers for simulator `name`."""
    return SIM_TYPES[name].model_dump(mode="json", exclude_none=True)
