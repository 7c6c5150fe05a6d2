"""The import page: a package of the original platform, converted and stored as the logged-in developer or admin.

The page only passes the browser's upload to `POST /api/v1/import` (conversion, rights and storage are the
API's) and shows what was converted, every choice made, and, for device instance zips, the credentials (once).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile

from aiot.web.apiclient import ApiError
from aiot.web.forms import FormErrors, form_errors, one_error
from aiot.web.pages.models import stream_upload
from aiot.web.render import render
from aiot.web.routing import WebRoute
from aiot.web.session import DEVELOPERS, WebUser, read_form

router = APIRouter(route_class=WebRoute, include_in_schema=False)


def _page(request: Request, web: WebUser, **extra: Any) -> Response:
    return render(request, "legacy/import.html", web, title="Import from the original platform", **extra)


@router.get("/import")
async def import_page(request: Request, web: WebUser = Depends(DEVELOPERS)) -> Response:
    return _page(request, web)


@router.post("/import")
async def import_upload(request: Request, web: WebUser = Depends(DEVELOPERS)) -> Response:
    form = await read_form(request)
    values = {k: str(form.get(k) or "").strip() for k in ("model", "names", "location", "version")}
    upload = form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        return _page(
            request, web, errors=one_error("file", "choose the original package (.zip) to import"), values=values
        )
    params: dict[str, Any] = {
        "names": values["names"],
        "location": values["location"],
        "version": values["version"] or "1.0.0",
        "model": [p.strip() for p in values["model"].split(",") if p.strip()],
    }
    try:
        result = await web.api.post(
            "/import",
            content=stream_upload(upload),
            params=params,
            headers={"content-type": "application/zip", "x-filename": upload.filename},
        )
    except ApiError as exc:
        return _page(
            request,
            web,
            errors=form_errors(exc, {"file": "file", "body": "file", "model": "model", "names": "names"}, files=True),
            values=values,
        )
    return _page(request, web, result=result, values={}, errors=FormErrors())
