"""JSON Schemas of the package formats, generated from the Pydantic models in `manifests.py`.

The published files in `docs/packages/` and the API's `/api/v1/schemas/{kind}` both come from here, so they
cannot drift from what validation enforces (a test regenerates them and compares).
After changing a manifest model, regenerate them:
`python -c 'from pathlib import Path; from aiot.artifacts import export_schemas as e; e(Path("docs/packages"))'`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from aiot.artifacts.manifests import AppManifest, DeviceTypeDefinition, ModelManifest

SCHEMA_BASE_URL = "https://aiot.invalid/schemas/"
"""Base of the schemas' `$id`s: identifiers only, nothing is fetched from there."""

SCHEMAS: dict[str, tuple[str, type[BaseModel]]] = {
    "model": ("model.schema.json", ModelManifest),
    "app": ("app.schema.json", AppManifest),
    "device-type": ("device-type.schema.json", DeviceTypeDefinition),
}
"""Kind -> (file name, model)."""


def schema_for(kind: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one format: 'model', 'app' or 'device-type'."""
    try:
        filename, model = SCHEMAS[kind]
    except KeyError:
        raise ValueError(f"unknown schema kind {kind!r}; expected one of {', '.join(SCHEMAS)}") from None
    schema = model.model_json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_BASE_URL + filename, **schema}


def render_schema(kind: str) -> str:
    """The schema as the exact text written to disk (stable, so the files diff cleanly)."""
    return json.dumps(schema_for(kind), indent=2, ensure_ascii=False) + "\n"


def export_schemas(dest: Path) -> list[Path]:
    """Write `model.schema.json`, `app.schema.json` and `device-type.schema.json` into `dest`."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for kind, (filename, _) in SCHEMAS.items():
        path = dest / filename
        path.write_text(render_schema(kind), encoding="utf-8")
        written.append(path)
    return written
