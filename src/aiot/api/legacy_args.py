"""The import options shared by `POST /api/v1/import` and `aiot import`: the model-id mapping and value names.

Kept apart from the route module so the CLI can parse them without importing FastAPI and the API (the CLI
starts for every command, and importing the API doubled its start-up time).
"""

from __future__ import annotations

import json

from aiot.errors import ValidationFailed


def parse_model_map(pairs: list[str]) -> dict[str, str]:
    """`["<old id>=<model name>", ...]` -> dict; 422 naming the bad pair."""
    out: dict[str, str] = {}
    for pair in pairs:
        old, sep, new = pair.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise ValidationFailed(f"model mapping {pair!r} must be OLD_ID=MODEL_NAME", field="model")
        out[old.strip()] = new.strip()
    return out


def parse_names(raw: str | None) -> dict[str, list[str]] | None:
    """`{"TEMP": ["temperature"]}` (JSON) or `TEMP=temperature;DHT=t,h` -> value names per original type."""
    if not raw:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = {k.strip(): v.split(",") for k, _, v in (p.partition("=") for p in raw.split(";") if p.strip())}
    if not isinstance(doc, dict) or not all(
        isinstance(v, list) and all(isinstance(x, str) and x.strip() for x in v) for v in doc.values()
    ):
        raise ValidationFailed(
            "names must map each original type to a list of value names, e.g. "
            "TEMP=temperature;DHT=temperature,humidity",
            field="names",
        )
    return {k: [x.strip() for x in v] for k, v in doc.items()}
