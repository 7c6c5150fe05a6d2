"""`POST /import`: a package in the original platform's format, converted and stored as the caller.

The converters (`aiot.artifacts.legacy`) are pure; this route only decides who may import what and hands the
result to the ordinary paths: `packages.store_package` for models and apps (same validation, same ownership as
`POST /models` / `POST /apps`), `ArtifactRepository.put_device_type` and `inventory.create_*` for device types,
locations and devices (admins only, like their own routes). Device registration is all-or-nothing: one
transaction, and the credentials of every new device are in the answer (shown once).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.responses import JSONResponse
from pydantic import ConfigDict, Field

from aiot.api.legacy_args import parse_model_map, parse_names
from aiot.api.routes.devices import _connect_info, device_out, location_out
from aiot.api.routes.packages import device_type_out, store_package
from aiot.api.schemas import OutModel
from aiot.api.security import Allow, Principal
from aiot.api.state import service_context
from aiot.api.uploads import received_upload
from aiot.artifacts.legacy import Converted, LegacyFormatError, convert, read_zip
from aiot.artifacts.packing import zip_folder
from aiot.artifacts.repository import ArtifactRepository
from aiot.devices import inventory
from aiot.errors import Forbidden, NotFound, ValidationFailed
from aiot.natsauth.sources import announce_auth_change
from aiot.store.catalog import AppPackage, ModelPackage
from aiot.store.models import Role

router = APIRouter(tags=["import"])
IMPORTERS = Allow(Role.ai_developer, Role.app_developer, Role.admin)

WRITERS: dict[str, tuple[Role, ...]] = {
    "model": (Role.ai_developer, Role.admin),
    "app": (Role.app_developer, Role.admin),
    "device-types": (Role.admin,),
    "devices": (Role.admin,),
}


def legacy_error(exc: LegacyFormatError) -> ValidationFailed:
    return ValidationFailed(str(exc), field=exc.key, details={"problems": [exc.to_dict()]})


async def _store(request: Request, principal: Principal, converted: Converted) -> Any:
    if converted.kind in ("model", "app"):
        with tempfile.TemporaryDirectory(prefix="aiot-import-") as tmp:
            folder = Path(tmp) / "pkg"
            for name, data in converted.files.items():
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                (folder / name).write_bytes(data)
            archive = zip_folder(folder, Path(tmp) / f"{converted.name}.zip")
            table = ModelPackage if converted.kind == "model" else AppPackage
            response = await store_package(request, principal, table, archive)
        return json.loads(response.body)
    ctx = service_context(request)
    if converted.kind == "device-types":
        with ctx.db.session() as session:
            return [
                device_type_out(ArtifactRepository.put_device_type(session, raw, name, principal.user.id).row)
                for name, raw in sorted(converted.files.items())
            ]
    out: dict[str, Any] = {"locations": [], "devices": []}
    issued_all = []
    with ctx.db.session() as session:
        for loc in converted.locations:
            try:
                row = inventory.get_location(session, loc["name"])
            except NotFound:
                row = inventory.create_location(session, name=loc["name"], kind=loc["kind"], address=loc["address"])
            out["locations"].append(location_out(row))
        for plan in converted.devices:
            device, issued = inventory.create_device(
                session, name=plan["name"], device_type=plan["device_type"], location=plan["location"]
            )
            out["devices"].append(device_out(device, "active"))
            issued_all.append(issued)
    await announce_auth_change(ctx)
    for row, issued in zip(out["devices"], issued_all, strict=True):
        row["connect"] = _connect_info(ctx, issued.username, issued.password)
    return out


class ConvertedOut(OutModel):
    """What was converted (no file contents); kind-specific keys ride along."""

    model_config = ConfigDict(extra="allow")

    kind: str = Field(description="model, app, device-types or devices")
    name: str
    source: str
    notes: list[str] = Field(description="every choice the conversion made")


class ImportOut(OutModel):
    converted: ConvertedOut
    stored: dict[str, Any] | list[dict[str, Any]] = Field(
        description="the stored package, the device types, or the locations and devices with their credentials"
    )


@router.post("/import", status_code=status.HTTP_201_CREATED, response_model=ImportOut)
async def import_legacy(
    request: Request,
    version: str = Query("1.0.0", description="version given to a converted model or app"),
    model: list[str] = Query(default_factory=list, description="OLD_MODEL_ID=MODEL_NAME, for an app's models"),
    names: str | None = Query(None, description="value names per original device type: TEMP=temperature;..."),
    location: str | None = Query(None, description="register every device of an instance zip here"),
    principal: Principal = Depends(IMPORTERS),
) -> JSONResponse:
    """Convert a model, app, device type or device instance zip of the original platform and store it as the
    caller. The answer says what was converted (`converted.notes`: every choice made) and what was stored."""
    options = {"version": version, "models": parse_model_map(model), "names": parse_names(names), "location": location}
    async with received_upload(request) as (path, filename):
        try:
            converted = convert(read_zip(path), filename, **options)
        except LegacyFormatError as exc:
            raise legacy_error(exc) from None
    allowed = WRITERS[converted.kind]
    if principal.role not in allowed:
        raise Forbidden(f"importing {converted.kind} needs the role {' or '.join(r.value for r in allowed)}")
    stored = await _store(request, principal, converted)
    return JSONResponse({"converted": converted.summary(), "stored": stored}, status_code=status.HTTP_201_CREATED)
