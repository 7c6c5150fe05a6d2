"""AI developer pages: models and their versions, upload, deploy with replicas, endpoints, try a prediction."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile

from aiot.web.apiclient import ApiError
from aiot.web.forms import FormErrors, form_errors, one_error
from aiot.web.render import fragment, redirect, render
from aiot.web.routing import WebRoute
from aiot.web.session import AI_DEV, WebUser, read_form

router = APIRouter(route_class=WebRoute, include_in_schema=False, prefix="/models")


async def stream_upload(upload: UploadFile) -> AsyncIterator[bytes]:
    """Pass a browser upload on to the API in chunks (the API streams it to disk with its size cap)."""
    while chunk := await upload.read(1024 * 1024):
        yield chunk


async def upload_package(web: WebUser, collection: str, form: Any) -> tuple[dict[str, Any] | None, FormErrors]:
    """POST the form's `file` to /api/v1/<collection>; the package's problems come back by file and field."""
    upload = form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        return None, one_error("file", "choose a .zip package to upload")
    try:
        row = await web.api.post(
            f"/{collection}",
            content=stream_upload(upload),
            headers={"content-type": "application/zip", "x-filename": upload.filename},
        )
    except ApiError as exc:
        return None, form_errors(exc, {"file": "file", "body": "file"}, files=True)
    return row, FormErrors()


def _group(models: list[dict[str, Any]], deployments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Versions grouped by model name, newest first, each with its deployment if any."""
    by_model = {d["model_id"]: d for d in deployments}
    groups: dict[str, dict[str, Any]] = {}
    for m in models:
        m["deployment"] = by_model.get(m["id"])
        groups.setdefault(m["name"], {"name": m["name"], "versions": []})["versions"].append(m)
    for g in groups.values():
        g["versions"].reverse()
        g["description"] = g["versions"][0]["manifest"].get("description", "")
    return sorted(groups.values(), key=lambda g: g["name"])


async def _list_page(request: Request, web: WebUser, **extra: Any) -> Response:
    models = await web.api.get("/models", include_deprecated=True)
    deployments = await web.api.get_or([], "/deployments")
    return render(request, "models/list.html", web, title="Models", groups=_group(models, deployments), **extra)


@router.get("")
async def models(request: Request, web: WebUser = Depends(AI_DEV)) -> Response:
    return await _list_page(request, web)


@router.post("")
async def upload(request: Request, web: WebUser = Depends(AI_DEV)) -> Response:
    form = await read_form(request)
    row, errors = await upload_package(web, "models", form)
    if row is None:
        return await _list_page(request, web, errors=errors)
    return redirect(f"/models/{row['id']}", flash=f"Model {row['name']} {row['version']} uploaded.")


def image_inputs(manifest: dict[str, Any]) -> list[str]:
    return [name for name, spec in (manifest.get("inputs") or {}).items() if spec.get("type") == "image"]


def _example_json(manifest: dict[str, Any]) -> str:
    example = {k: v for k, v in (manifest.get("example") or {}).items() if k not in image_inputs(manifest)}
    return json.dumps(example, indent=2)


async def _model_page(request: Request, web: WebUser, ref: str, **extra: Any) -> Response:
    model = await web.api.get(f"/models/{ref}")
    deployment = await web.api.get_or(None, f"/deployments/{model['id']}")
    versions = await web.api.get("/models", name=model["name"], include_deprecated=True)
    mine = web.is_admin or model["owner_id"] == web.user.id
    extra.setdefault(
        "values",
        {
            "inputs": _example_json(model["manifest"]),
            "replicas": str(
                deployment["replicas"] if deployment else (model["manifest"].get("resources") or {}).get("replicas", 1)
            ),
        },
    )
    return render(
        request,
        "models/detail.html",
        web,
        title=f"{model['name']} {model['version']}",
        model=model,
        deployment=deployment,
        versions=versions,
        mine=mine,
        images=image_inputs(model["manifest"]),
        **extra,
    )


@router.get("/{ref}")
async def model(request: Request, ref: str, web: WebUser = Depends(AI_DEV)) -> Response:
    return await _model_page(request, web, ref)


@router.get("/{ref}/deployment")
async def deployment_live(request: Request, ref: str, web: WebUser = Depends(AI_DEV)) -> Response:
    """The live part of the model page: replicas, their nodes, states and endpoints."""
    model = await web.api.get(f"/models/{ref}")
    deployment = await web.api.get_or(None, f"/deployments/{model['id']}")
    return fragment(request, "models/_deployment.html", model=model, deployment=deployment)


@router.post("/{ref}/deploy")
async def deploy(request: Request, ref: str, web: WebUser = Depends(AI_DEV)) -> Response:
    form = await read_form(request)
    raw = str(form.get("replicas", "1")).strip()
    try:
        replicas = int(raw)
    except ValueError:
        return await _model_page(
            request, web, ref, errors=one_error("replicas", f"{raw!r} is not a whole number"), values={"replicas": raw}
        )
    try:
        out = await web.api.post(f"/models/{ref}/deploy", {"replicas": replicas})
    except ApiError as exc:
        return await _model_page(request, web, ref, errors=form_errors(exc, ["replicas"]), values={"replicas": raw})
    return redirect(f"/models/{ref}", flash=f"{out['model']} deployed with {out['replicas']} replica(s).")


@router.post("/{ref}/undeploy")
async def undeploy(request: Request, ref: str, web: WebUser = Depends(AI_DEV)) -> Response:
    await read_form(request)
    await web.api.delete(f"/deployments/{ref}")
    return redirect(f"/models/{ref}", flash="Deployment removed: its replicas stop.")


@router.post("/{ref}/deprecate")
async def deprecate(request: Request, ref: str, web: WebUser = Depends(AI_DEV)) -> Response:
    await read_form(request)
    row = await web.api.post(f"/models/{ref}/deprecate")
    return redirect(f"/models/{ref}", flash=f"{row['name']} {row['version']} is deprecated.")


@router.post("/{ref}/predict")
async def predict(request: Request, ref: str, web: WebUser = Depends(AI_DEV)) -> Response:
    """Call one of the model's running replicas through the API (which adds the model's token), with the form's
    JSON inputs and image files; answers the prediction panel (htmx)."""
    form = await read_form(request)
    model = await web.api.get(f"/models/{ref}")
    text = str(form.get("inputs", "")).strip() or "{}"
    images = image_inputs(model["manifest"])

    def panel(**extra: Any) -> Response:
        return fragment(request, "models/_predict.html", model=model, images=images, values={"inputs": text}, **extra)

    try:
        inputs = json.loads(text)
        if not isinstance(inputs, dict):
            raise ValueError('inputs must be a JSON object such as {"temperature": 21.5}')
    except ValueError as exc:
        return panel(errors=one_error("inputs", f"not valid JSON: {exc}"))
    files = {}
    for name in images:
        upload = form.get(f"image_{name}")
        if isinstance(upload, UploadFile) and upload.filename:
            files[name] = (upload.filename, await upload.read(), upload.content_type or "application/octet-stream")
    response = await _call_model(web, model["id"], inputs, files)
    try:
        body = response.json()
    except ValueError:
        body = {"error": response.text[:500]}
    if response.status_code >= 400:
        if isinstance(body, dict) and isinstance(body.get("error"), dict):  # the platform's own error
            return panel(errors=one_error(None, str(body["error"].get("message"))))
        field = body.get("field") if isinstance(body, dict) else None
        message = str(body.get("error") if isinstance(body, dict) else body)
        target = f"image_{field}" if field in files or field in images else "inputs"
        return panel(errors=one_error(target, f"{field}: {message}" if field else message))
    return panel(result=body, endpoint=response.headers.get("x-aiot-replica", ""))


async def _call_model(web: WebUser, model_id: str, inputs: dict[str, Any], files: dict[str, Any]) -> httpx.Response:
    """Through the API's `POST /models/{id}/predict` (it adds the model's token; replicas refuse anyone else)."""
    if files:
        request = httpx.Request("POST", "http://x", data={"inputs": json.dumps(inputs)}, files=files)
    else:
        request = httpx.Request("POST", "http://x", json={"inputs": inputs})
    return await web.api.send(
        "POST",
        f"/models/{model_id}/predict",
        content=request.read(),
        headers={"content-type": request.headers["content-type"]},
    )
