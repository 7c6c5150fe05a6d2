"""Model packages, app packages, device types and their published JSON Schemas.

Who may do what: AI developers upload models, app developers upload apps, admins register device types and may
act on anything; everyone logged in may browse the catalogue (end users choose apps from it). A package name
belongs to its first uploader (aiot.artifacts.names): adding versions, deprecating, deleting or downloading is
for the name's owner and admins only (403 naming the owner otherwise). App developers list the instances of
their own apps (state only, never the end user's settings or bindings) to debug them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.responses import FileResponse, JSONResponse
from pydantic import Field
from starlette.background import BackgroundTask

from aiot.api.deps import Ctx
from aiot.api.schemas import ZIP_ANSWER, OutModel, Timestamp
from aiot.api.security import Allow, AnyUser, Principal, Public
from aiot.api.state import service_context
from aiot.api.uploads import received_upload
from aiot.apps.instances import instances_of_app
from aiot.artifacts import names
from aiot.artifacts.repository import ArtifactRepository, PackageRow
from aiot.artifacts.schemas import schema_for
from aiot.blobs.base import ARTIFACTS
from aiot.blobs.factory import open_blob_store
from aiot.devices import inventory
from aiot.errors import NotFound, ValidationFailed
from aiot.services.contract import ServiceContext
from aiot.store.apps import AppInstance, InstanceState
from aiot.store.catalog import AppPackage, DeviceType, ModelPackage, PackageStatus
from aiot.store.models import Role
from aiot.store.runtime import Workload, WorkloadStatus

router = APIRouter(tags=["packages"])

MODEL_WRITERS = Allow(Role.ai_developer, Role.admin)
APP_WRITERS = Allow(Role.app_developer, Role.admin)
ADMIN = Allow(Role.admin)
SCHEMA_KINDS = ("model", "app", "device-type")


def _repo(ctx: ServiceContext) -> ArtifactRepository:
    return ArtifactRepository(ctx.db, open_blob_store(ctx.settings, ctx.bus, ARTIFACTS))


class PackageOut(OutModel):
    id: str
    name: str
    version: str
    sha256: str
    size: int
    status: str = Field(description="active or deprecated")
    owner_id: str
    owner: str | None = Field(description="the username owning the name (what owner/name references use)")
    created_at: Timestamp
    manifest: dict[str, Any] = Field(description="model.json or app.json as validated")
    kind: str | None = Field(None, description="apps only: web, background, ...")


class DeviceTypeOut(OutModel):
    id: str
    name: str
    kind: str = Field(description="sensor or controller")
    definition: dict[str, Any]
    created_at: Timestamp


class AppInstanceStateOut(OutModel):
    """What an app's developer may see of an end user's instance."""

    id: str
    app_id: str
    app: str | None
    models: dict[str, str]
    state: str
    workload_id: str | None
    workload_state: str | None
    node_id: str | None
    created_at: Timestamp


def package_out(session: Any, row: PackageRow) -> dict[str, Any]:
    """`owner` is the username owning the name (what `owner/name` references use)."""
    owner = names.owner_username(session, names.name_row(session, names.kind_of(type(row)), row.name))
    out = {
        "id": row.id,
        "name": row.name,
        "version": row.version,
        "sha256": row.sha256,
        "size": row.size,
        "status": row.status.value,
        "owner_id": row.owner_id,
        "owner": owner,
        "created_at": row.created_at.isoformat(),
        "manifest": row.manifest,
    }
    if isinstance(row, AppPackage):
        out["kind"] = row.kind
    return out


def device_type_out(row: DeviceType) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "kind": row.kind.value,
        "definition": row.definition,
        "created_at": row.created_at.isoformat(),
    }


def _check_owner(session: Any, principal: Principal, row: PackageRow, action: str) -> None:
    names.check_may_change(session, names.kind_of(type(row)), row.name, principal.user, action)


async def _upload(request: Request, principal: Principal, table: type[PackageRow]) -> JSONResponse:
    async with received_upload(request) as (path, _filename):
        return await store_package(request, principal, table, path)


async def store_package(request: Request, principal: Principal, table: type[PackageRow], path: Path) -> JSONResponse:
    """Validate and store the package zip at `path` as `principal`: the one path every upload takes (the
    legacy import calls it with the converted zip, so a converted package meets exactly the same rules)."""
    ctx = service_context(request)
    repo = _repo(ctx)
    put = repo.put_model if table is ModelPackage else repo.put_app
    stored = await put(path, principal.user.id, principal.role)
    code = status.HTTP_201_CREATED if stored.created else status.HTTP_200_OK
    with ctx.db.session() as session:  # through the model, so the answer has the fields GET /models/{ref} has
        out = PackageOut.model_validate(package_out(session, stored.row)).model_dump(mode="json")
    return JSONResponse(out, status_code=code)


def _list(ctx: ServiceContext, table: type[PackageRow], name: str | None, include_deprecated: bool) -> list[dict]:
    with ctx.db.session() as session:
        rows = ArtifactRepository.list_packages(session, table, name, include_deprecated)
        return [package_out(session, r) for r in rows]


async def _download(request: Request, principal: Principal, table: type[PackageRow], ref: str) -> FileResponse:
    ctx = service_context(request)
    # Who may comes before whether the store is reachable: a non-owner gets 403, never a 503 to retry.
    with ctx.db.session() as session:
        row = ArtifactRepository.resolve(session, table, ref)
        _check_owner(session, principal, row, "download it")
        filename, sha = f"{row.name}-{row.version}.zip", row.sha256
    path = await _repo(ctx).download(sha)
    return FileResponse(
        path, media_type="application/zip", filename=filename, background=BackgroundTask(path.unlink, missing_ok=True)
    )


def _set_status(
    ctx: ServiceContext, principal: Principal, table: type[PackageRow], ref: str, new: PackageStatus
) -> dict:
    with ctx.db.session() as session:
        row = ArtifactRepository.resolve(session, table, ref)
        _check_owner(session, principal, row, "deprecate it")
        row.status = new
        session.flush()
        return package_out(session, row)


async def _delete(request: Request, principal: Principal, table: type[PackageRow], ref: str) -> Response:
    ctx = service_context(request)
    with ctx.db.session() as session:
        row = ArtifactRepository.resolve(session, table, ref)
        _check_owner(session, principal, row, "delete it")  # before the store: 403, not 503, for a non-owner
        await _repo(ctx).delete_package(session, row)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# ---------------------------------------------------------------------- models

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "description": "The package, a zip archive, as the body (a browser "
        "form may send it as the multipart field `file` instead).",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}
"""Declared by hand: the routes stream the body themselves (no size limit in memory), so FastAPI cannot see it, and
without it a client generated from /openapi.json could not upload a package."""

DEVICE_TYPE_BODY = {
    "requestBody": {
        "required": True,
        "description": "The device type definition, JSON (read as bytes so its file name can be reported in errors).",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}


@router.post("/models", status_code=status.HTTP_201_CREATED, openapi_extra=UPLOAD_BODY, response_model=PackageOut)
async def upload_model(request: Request, principal: Principal = Depends(MODEL_WRITERS)) -> JSONResponse:
    """Upload a model package (zip as the body, or multipart field `file`). 201 new, 200 identical re-upload."""
    return await _upload(request, principal, ModelPackage)


@router.get("/models", response_model=list[PackageOut])
def list_models(
    ctx: Ctx, name: str | None = None, include_deprecated: bool = False, _: Principal = Depends(AnyUser)
) -> list[dict]:
    return _list(ctx, ModelPackage, name, include_deprecated)


@router.get("/models/{ref}", response_model=PackageOut)
def show_model(ctx: Ctx, ref: str, _: Principal = Depends(AnyUser)) -> dict:
    """`ref`: an id (`mdl_…`), `name:version`, or a name (its newest active version)."""
    with ctx.db.session() as session:
        return package_out(session, ArtifactRepository.resolve(session, ModelPackage, ref))


@router.get("/models/{ref}/download", response_class=FileResponse, responses=ZIP_ANSWER)
async def download_model(request: Request, ref: str, principal: Principal = Depends(MODEL_WRITERS)) -> FileResponse:
    return await _download(request, principal, ModelPackage, ref)


@router.post("/models/{ref}/deprecate", response_model=PackageOut)
def deprecate_model(ctx: Ctx, ref: str, principal: Principal = Depends(MODEL_WRITERS)) -> dict:
    return _set_status(ctx, principal, ModelPackage, ref, PackageStatus.deprecated)


@router.delete("/models/{ref}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_model(request: Request, ref: str, principal: Principal = Depends(MODEL_WRITERS)) -> Response:
    """Delete one version; refused (409) while an app package refers to it."""
    return await _delete(request, principal, ModelPackage, ref)


# ---------------------------------------------------------------------- apps


@router.post("/apps", status_code=status.HTTP_201_CREATED, openapi_extra=UPLOAD_BODY, response_model=PackageOut)
async def upload_app(request: Request, principal: Principal = Depends(APP_WRITERS)) -> JSONResponse:
    """Upload an app package; every model and device type it names must already exist."""
    return await _upload(request, principal, AppPackage)


@router.get("/apps", response_model=list[PackageOut])
def list_apps(
    ctx: Ctx, name: str | None = None, include_deprecated: bool = False, _: Principal = Depends(AnyUser)
) -> list[dict]:
    return _list(ctx, AppPackage, name, include_deprecated)


@router.get("/apps/{ref}", response_model=PackageOut)
def show_app(ctx: Ctx, ref: str, _: Principal = Depends(AnyUser)) -> dict:
    with ctx.db.session() as session:
        return package_out(session, ArtifactRepository.resolve(session, AppPackage, ref))


def app_instance_state(session: Any, instance: AppInstance) -> dict[str, Any]:
    """What an app's developer may see of an end user's instance: enough to debug (which version, whether and
    where it runs, its workload for logs), never its settings, bindings, location or owner."""
    app = session.get(AppPackage, instance.app_id)
    running = instance.state == InstanceState.running
    workload = session.get(Workload, instance.workload_id) if instance.workload_id else None
    observed = session.get(WorkloadStatus, workload.id) if workload is not None else None
    return {
        "id": instance.id,
        "app_id": instance.app_id,
        "app": f"{app.name}:{app.version}" if app else None,
        "models": dict(instance.models or {}),
        "state": instance.state.value,
        "workload_id": instance.workload_id,
        "workload_state": observed.state if observed is not None and running else None,
        "node_id": workload.node_id if workload is not None and running else None,
        "created_at": instance.created_at.isoformat(),
    }


@router.get("/apps/{ref}/instances", response_model=list[AppInstanceStateOut])
def list_app_instances(ctx: Ctx, ref: str, principal: Principal = Depends(APP_WRITERS)) -> list[dict]:
    """Every live instance of every version of the app named by `ref` (its owner and admins): the states and
    workload ids to read their logs by (`/logs?app_instance_id=`)."""
    with ctx.db.session() as session:
        app = ArtifactRepository.resolve(session, AppPackage, ref)
        _check_owner(session, principal, app, "see its instances")
        return [app_instance_state(session, i) for i in instances_of_app(session, app.name)]


@router.get("/apps/{ref}/download", response_class=FileResponse, responses=ZIP_ANSWER)
async def download_app(request: Request, ref: str, principal: Principal = Depends(APP_WRITERS)) -> FileResponse:
    return await _download(request, principal, AppPackage, ref)


@router.post("/apps/{ref}/deprecate", response_model=PackageOut)
def deprecate_app(ctx: Ctx, ref: str, principal: Principal = Depends(APP_WRITERS)) -> dict:
    return _set_status(ctx, principal, AppPackage, ref, PackageStatus.deprecated)


@router.delete("/apps/{ref}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_app(request: Request, ref: str, principal: Principal = Depends(APP_WRITERS)) -> Response:
    return await _delete(request, principal, AppPackage, ref)


# ---------------------------------------------------------------------- device types


@router.post(
    "/device-types", status_code=status.HTTP_201_CREATED, openapi_extra=DEVICE_TYPE_BODY, response_model=DeviceTypeOut
)
async def add_device_type(request: Request, ctx: Ctx, principal: Principal = Depends(ADMIN)) -> JSONResponse:
    """Register a device type from its JSON definition (the request body). 200 when identical, 409 when not."""
    body = await request.body()
    if len(body) > 1024 * 1024:
        raise ValidationFailed("a device type definition must be under 1 MiB", field="body")
    filename = request.headers.get("x-filename", "device-type.json")
    with ctx.db.session() as session:
        stored = ArtifactRepository.put_device_type(session, body, filename, principal.user.id)
        out = DeviceTypeOut.model_validate(device_type_out(stored.row)).model_dump(mode="json")
    return JSONResponse(out, status_code=status.HTTP_201_CREATED if stored.created else status.HTTP_200_OK)


@router.get("/device-types", response_model=list[DeviceTypeOut])
def list_device_types(ctx: Ctx, kind: str | None = None, _: Principal = Depends(AnyUser)) -> list[dict]:
    with ctx.db.session() as session:
        return [device_type_out(r) for r in inventory.list_device_types(session, kind)]


@router.get("/device-types/{ref}", response_model=DeviceTypeOut)
def show_device_type(ctx: Ctx, ref: str, _: Principal = Depends(AnyUser)) -> dict:
    with ctx.db.session() as session:
        return device_type_out(inventory.get_device_type(session, ref))


@router.delete("/device-types/{ref}", status_code=status.HTTP_204_NO_CONTENT)
def delete_device_type(ctx: Ctx, ref: str, _: Principal = Depends(ADMIN)) -> Response:
    with ctx.db.session() as session:
        ArtifactRepository.delete_device_type(session, inventory.get_device_type(session, ref))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# ---------------------------------------------------------------------- schemas


@router.get("/schemas/{kind}", dependencies=[Depends(Public)], response_model=dict[str, Any])
def package_schema(kind: str) -> JSONResponse:
    """The published JSON Schema of `model` (model.json), `app` (app.json) or `device-type` files."""
    if kind not in SCHEMA_KINDS:
        raise NotFound(f"no schema {kind!r}; known: {', '.join(SCHEMA_KINDS)}", field="kind")
    return JSONResponse(json.loads(json.dumps(schema_for(kind))))
