"""App developer pages: the catalogue (models and device types with their schemas), app uploads, and the
instances of their apps."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import select

from aiot.api.state import service_context
from aiot.store.apps import AppInstance, InstanceState
from aiot.store.devices import Location
from aiot.store.runtime import WorkloadStatus
from aiot.web.pages.models import upload_package
from aiot.web.render import redirect, render
from aiot.web.routing import WebRoute
from aiot.web.session import ANY, APP_DEV, WebUser, read_form

router = APIRouter(route_class=WebRoute, include_in_schema=False)


@router.get("/catalog")
async def catalog(request: Request, web: WebUser = Depends(ANY)) -> Response:
    models, types = await asyncio.gather(web.api.get("/models"), web.api.get("/device-types"))
    return render(
        request,
        "dev/catalog.html",
        web,
        title="Catalog",
        models=models,
        sensors=[t for t in types if t["kind"] == "sensor"],
        controllers=[t for t in types if t["kind"] == "controller"],
    )


async def _apps_page(request: Request, web: WebUser, **extra: Any) -> Response:
    apps = await web.api.get("/apps", include_deprecated=True)
    mine = [a for a in apps if web.is_admin or a["owner_id"] == web.user.id]
    return render(request, "dev/apps.html", web, title="My apps", apps=mine, **extra)


@router.get("/dev/apps")
async def apps(request: Request, web: WebUser = Depends(APP_DEV)) -> Response:
    return await _apps_page(request, web)


@router.post("/dev/apps")
async def upload_app(request: Request, web: WebUser = Depends(APP_DEV)) -> Response:
    form = await read_form(request)
    row, errors = await upload_package(web, "apps", form)
    if row is None:
        return await _apps_page(request, web, errors=errors)
    return redirect(f"/dev/apps/{row['id']}", flash=f"App {row['name']} {row['version']} uploaded.")


def _instances_of(request: Request, app_id: str) -> list[dict[str, Any]]:
    """Instances of one app, read from the database: the instances API is for their end users, while the app's
    developer may see that (and where) the app runs, not change it."""
    with service_context(request).db.session() as session:
        rows = session.scalars(
            select(AppInstance)
            .where(AppInstance.app_id == app_id, AppInstance.state != InstanceState.retired)
            .order_by(AppInstance.created_at)
        )
        out = []
        for row in rows:
            location = session.get(Location, row.location_id)
            observed = session.get(WorkloadStatus, row.workload_id) if row.workload_id else None
            out.append(
                {
                    "id": row.id,
                    "name": row.name,
                    "state": row.state.value,
                    "location": location.name if location else row.location_id,
                    "workload_state": observed.state if observed and row.state == InstanceState.running else None,
                    "restarts": observed.restarts if observed else 0,
                    "created_at": row.created_at.isoformat(),
                }
            )
        return out


@router.get("/dev/apps/{ref}")
async def app_detail(request: Request, ref: str, web: WebUser = Depends(APP_DEV)) -> Response:
    app = await web.api.get(f"/apps/{ref}")
    mine = web.is_admin or app["owner_id"] == web.user.id
    instances = _instances_of(request, app["id"]) if mine else []
    locations = await web.api.get_or([], f"/apps/{app['id']}/locations")
    return render(
        request,
        "dev/app.html",
        web,
        title=f"{app['name']} {app['version']}",
        app=app,
        mine=mine,
        instances=instances,
        locations=locations,
    )
