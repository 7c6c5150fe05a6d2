"""`POST /predict/<model>`: the original platform's model endpoint shape, for its external callers.

The original platform served each model at `POST /predict/<model id>`: a JSON body of the input params (or a
multipart `image` field for an image model) and the answer `{"output": ...}`. This route keeps that shape in
front of our replicas: it resolves the model (its id `mdl_...`, `name` or `name:version`), forwards
`{"inputs": <body>}` to one running replica's `/v1/predict` and answers `{"output": <its output>}` (a model
not converted from the original platform answers its whole outputs object as `output`).

Unlike the original, the caller must be logged in (`Authorization: Bearer <token>`) as the owner of the model's
name or an admin (403 otherwise, as for `POST /api/v1/models/{ref}/predict`): the control plane never serves a
model to anonymous callers or to other users. It calls the replica with the model's token (replicas refuse
anyone else). Input errors keep the replica's 422 and message.
"""

from __future__ import annotations

import base64
import json
import random
from typing import Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import select
from starlette.datastructures import UploadFile

from aiot.api.deps import Ctx
from aiot.api.security import authenticate_request
from aiot.artifacts import names
from aiot.artifacts.repository import ArtifactRepository
from aiot.deployer.endpoint_tokens import model_auth_header
from aiot.errors import ServiceUnavailable, ValidationFailed
from aiot.secrets_store import platform_secret
from aiot.store.catalog import ModelPackage
from aiot.store.runtime import DesiredState, ModelDeployment, Workload, WorkloadStatus

router = APIRouter(include_in_schema=False)
_client: httpx.AsyncClient | None = None


def _http() -> httpx.AsyncClient:
    global _client
    if _client is None:
        _client = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0))
    return _client


def running_endpoints(session: Any, model: ModelPackage) -> list[str]:
    """Endpoints of the model's replicas that run the current generation."""
    deployment = session.scalar(select(ModelDeployment).where(ModelDeployment.model_id == model.id))
    if deployment is None:
        return []
    out = []
    for workload in session.scalars(
        select(Workload).where(Workload.group_id == deployment.id, Workload.desired == DesiredState.running)
    ):
        observed = session.get(WorkloadStatus, workload.id)
        if (
            observed
            and observed.endpoint
            and observed.state == "running"
            and observed.generation == workload.generation
        ):
            out.append(observed.endpoint)
    return out


async def _inputs(request: Request) -> dict[str, Any]:
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=20)
        upload = form.get("image")
        if not isinstance(upload, UploadFile):
            raise ValidationFailed("an image model takes the image as the multipart field 'image'", field="image")
        return {"image": {"b64": base64.b64encode(await upload.read()).decode("ascii")}}
    try:
        doc = json.loads(await request.body() or b"{}")
    except ValueError as exc:
        raise ValidationFailed(f"the body must be a JSON object of the model's inputs: {exc}", field="body") from None
    if not isinstance(doc, dict):
        raise ValidationFailed("the body must be a JSON object of the model's inputs", field="body")
    return doc


class LegacyPredictOut(BaseModel):
    """The original platform's answer: the model's `output` (or all its outputs)."""

    output: Any


@router.post("/predict/{ref}", response_model=LegacyPredictOut)
async def predict(request: Request, ctx: Ctx, ref: str) -> JSONResponse:
    principal = authenticate_request(request)
    with ctx.db.session() as session:
        model = ArtifactRepository.resolve(session, ModelPackage, ref)
        names.check_may_change(session, names.kind_of(ModelPackage), model.name, principal.user, "call it here")
        label, model_id = f"{model.name} {model.version}", model.id
        endpoints = running_endpoints(session, model)
    if not endpoints:
        raise ServiceUnavailable(f"model {label} has no running replica (deploy it: aiot model deploy)", field="model")
    inputs = await _inputs(request)
    endpoint = random.choice(endpoints)  # noqa: S311 - load spreading, not security
    try:
        upstream = await _http().post(
            f"{endpoint.rstrip('/')}/v1/predict",
            json={"inputs": inputs},
            headers=model_auth_header(platform_secret(ctx.settings), model_id),
        )
    except httpx.HTTPError as exc:
        raise ServiceUnavailable(f"model {label} did not answer ({type(exc).__name__})", field="model") from exc
    try:
        doc = upstream.json()
    except ValueError:
        doc = {}
    if upstream.status_code != 200:
        status = upstream.status_code if upstream.status_code in (400, 413, 422) else 502
        message = doc.get("error") if isinstance(doc, dict) and isinstance(doc.get("error"), str) else None
        details = {"field": doc.get("field")} if isinstance(doc, dict) and doc.get("field") else {}
        return JSONResponse(
            {"error": {"code": "model_error", "message": message or upstream.text[:500], "details": details}},
            status_code=status,
        )
    outputs = doc.get("outputs") or {}
    return JSONResponse({"output": outputs.get("output", outputs)})
