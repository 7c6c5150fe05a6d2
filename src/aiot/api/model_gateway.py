"""The model gateway: every deployed model at a stable control-plane address, in our format and the OIP.

Replica addresses (`http://<node>:<port>`) change on every restart, so callers outside the SDK had to look them
up. Here a model has fixed URLs on the control plane:

    POST /models/<owner>/<name>/v1/predict        {"inputs": ...} -> the replica's answer, unchanged
    POST /models/<owner>/<name>/v1/predict/batch  {"instances": [...]}
    GET  /v2/health/live, /v2/health/ready        Open Inference Protocol (KServe v2 REST)
    GET  /v2/models/<name>[/versions/<v>]         metadata from the manifest
    GET  /v2/models/<name>[/versions/<v>]/ready   200, or 503 + Retry-After
    POST /v2/models/<name>[/versions/<v>]/infer   tensors in, tensors out (`oip.py`)

Without a version, a name means its highest version that has a running replica (else its highest deployed
version, which then answers 503 + Retry-After until a replica is ready); `?version=` pins one.

Who may call: the name's owner, whoever deployed the version, admins (their API token or session), and
workloads holding the model's token (apps bound to the model). Names have one owner, so `<owner>` in the
first form is a check: a name that is not that user's is unknown (404). The lookup of a name's replicas is
cached for one second per process; the balancing and retries live in `replica_pool.py`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from packaging.version import Version
from sqlalchemy import select

from aiot.api import oip
from aiot.api.legacy_predict import running_endpoints
from aiot.api.replica_http import ReplicaTimeout
from aiot.api.replica_pool import NoReplicaAnswered, ReplicaPool
from aiot.api.security import authenticate_request
from aiot.api.signing import tokens_match
from aiot.api.state import service_context
from aiot.artifacts import names
from aiot.deployer.endpoint_tokens import MODEL_TOKEN_HEADER, model_token
from aiot.errors import Forbidden, NotFound, ServiceUnavailable, UpstreamTimeout, ValidationFailed
from aiot.secrets_store import platform_secret
from aiot.store.catalog import ModelPackage, PackageKind
from aiot.store.models import Role
from aiot.store.runtime import ModelDeployment

router = APIRouter(tags=["model gateway"])
RESOLVE_TTL = 1.0
RETRY_AFTER_SECONDS = 2
PRINCIPAL_TTL = 2.0
_pool = ReplicaPool()


@dataclass(frozen=True)
class Target:
    """One deployed model version and what is needed to call and authorise it."""

    model_id: str
    name: str
    version: str
    manifest: dict[str, Any]
    owner_ids: frozenset[str]  # the name's owner and the deployment's owner
    endpoints: tuple[str, ...]
    versions: tuple[str, ...]  # every deployed version of the name, for metadata
    token: str  # the model's token: what its replicas require, and what bound apps hold


_cache: dict[tuple[str | None, str, str | None], tuple[float, Target]] = {}


def resolve(request: Request, owner: str | None, name: str, version: str | None) -> Target:
    key = (owner, name, version)
    hit = _cache.get(key)
    now = time.monotonic()
    if hit is not None and hit[0] > now:
        return hit[1]
    ctx = service_context(request)
    with ctx.db.session() as session:
        row = names.name_row(session, PackageKind.model, name)
        if row is None or (owner is not None and names.owner_username(session, row) != owner):
            whose = f" owned by {owner!r}" if owner else ""
            raise NotFound(f"no model {name!r}{whose}", field="model")
        deployed = list(
            session.execute(
                select(ModelPackage, ModelDeployment)
                .join(ModelDeployment, ModelDeployment.model_id == ModelPackage.id)
                .where(ModelPackage.name == name)
            )
        )
        if version is not None:
            deployed = [(m, d) for m, d in deployed if m.version == version]
        if not deployed:
            which = f"version {version} of model {name}" if version else f"model {name}"
            raise NotFound(
                f"{which} is not deployed (aiot model deploy {name}{':' + version if version else ''})", field="model"
            )
        live = [(m, d, running_endpoints(session, m)) for m, d in deployed]
        live.sort(key=lambda item: (bool(item[2]), Version(item[0].version)), reverse=True)
        model, deployment, endpoints = live[0]
        target = Target(
            model_id=model.id,
            name=model.name,
            version=model.version,
            manifest=dict(model.manifest),
            owner_ids=frozenset(i for i in (row.owner_id, deployment.owner_id) if i),
            endpoints=tuple(endpoints),
            versions=tuple(sorted((m.version for m, _ in deployed), key=Version)),
            token=model_token(platform_secret(ctx.settings), model.id),
        )
    _cache[key] = (now + RESOLVE_TTL, target)
    return target


_callers: dict[str, tuple[float, str, Role]] = {}


def _caller(request: Request, bearer: str) -> tuple[str, Role]:
    """(user id, role) of the request's user: an API token's answer is kept PRINCIPAL_TTL seconds (the token check
    reads the database twice, more than the rest of the gateway), so a revoked token stops working here within
    that time; a cookie session is checked every time (CSRF rules apply to it)."""
    key = hashlib.sha256(bearer.encode()).hexdigest() if bearer else ""
    now = time.monotonic()
    hit = _callers.get(key) if key else None
    if hit is not None and hit[0] > now:
        return hit[1], hit[2]
    principal = authenticate_request(request)
    if key and not principal.via_cookie:
        if len(_callers) > 10_000:
            _callers.clear()
        _callers[key] = (now + PRINCIPAL_TTL, principal.user.id, principal.role)
    return principal.user.id, principal.role


def _authorise(request: Request, target: Target) -> None:
    """The model's own token (bound workloads), or a user who owns or deployed it, or an admin."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    bearer = value.strip() if scheme.lower() == "bearer" else ""
    if bearer and tokens_match(bearer, target.token):
        return
    user_id, role = _caller(request, bearer)
    if role != Role.admin and user_id not in target.owner_ids:
        raise Forbidden(
            f"model {target.name} belongs to another user; call it with its owner's token or as a bound app",
            field="model",
        )


def _unavailable(target: Target, why: str) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"model {target.name} {target.version}: {why}", field="model", details={"retry_after": RETRY_AFTER_SECONDS}
    )


async def forward(
    request: Request,
    target: Target,
    path: str,
    content: bytes,
    content_type: str,
    relookup: Callable[[], Target] | None = None,
) -> Response:
    """Send the body to a replica of `target` with the model's token; its answer comes back unchanged.

    When none of the (cached) replicas took it, the replica set changed under the cache: a rollout retired
    them, or they moved. With `relookup`, the name is then resolved afresh and, if that finds other replicas,
    sent once more there, so a caller never sees the second in which the cache was behind."""
    try:
        return await _send(target, path, content, content_type)
    except NoReplicaAnswered as exc:
        _cache.clear()
        fresh = relookup() if relookup is not None else None
        if fresh is None or not fresh.endpoints or set(fresh.endpoints) == set(target.endpoints):
            raise _unavailable(target, f"no replica answered ({exc})") from None
        _authorise(request, fresh)
        try:
            return await _send(fresh, path, content, content_type)
        except NoReplicaAnswered as again:
            _cache.clear()
            raise _unavailable(fresh, f"no replica answered ({again})") from None


async def _send(target: Target, path: str, content: bytes, content_type: str) -> Response:
    if not target.endpoints:
        raise _unavailable(target, "no replica is ready yet")
    headers = {"content-type": content_type, MODEL_TOKEN_HEADER: f"Bearer {target.token}"}
    try:
        answer = await _pool.send(list(target.endpoints), path, content, headers)
    except ReplicaTimeout:
        raise UpstreamTimeout(
            f"model {target.name} {target.version}: no answer within {_pool.timeout:g}s", field="model"
        ) from None
    return Response(
        answer.content,
        status_code=answer.status,
        media_type=answer.content_type,
        headers={"x-aiot-model-version": target.version, "x-aiot-replica": answer.replica},
    )


async def _predict(request: Request, owner: str, name: str, path: str) -> Response:
    version = request.query_params.get("version")
    target = resolve(request, owner, name, version)
    _authorise(request, target)
    return await forward(
        request,
        target,
        path,
        await request.body(),
        request.headers.get("content-type", "application/json"),
        relookup=lambda: resolve(request, owner, name, version),
    )


@router.post("/models/{owner}/{name}/v1/predict", response_model=oip.PredictOut)
async def predict(request: Request, owner: str, name: str) -> Response:
    """Our predict format at a stable address: `{"inputs": {...}}` (or multipart with image files)."""
    return await _predict(request, owner, name, "/v1/predict")


@router.post("/models/{owner}/{name}/v1/predict/batch", response_model=oip.PredictOut)
async def predict_batch(request: Request, owner: str, name: str) -> Response:
    """Several predictions in one request: `{"instances": [{...}, ...]}`."""
    return await _predict(request, owner, name, "/v1/predict/batch")


@router.get("/v2/health/live", response_model=oip.ServerLiveOut)
async def oip_live() -> dict[str, bool]:
    """OIP server liveness: this process answers."""
    return {"live": True}


@router.get("/v2/health/ready", response_model=oip.ServerReadyOut)
async def oip_ready() -> dict[str, bool]:
    """OIP server readiness: the gateway takes requests (each model says its own readiness)."""
    return {"ready": True}


def _oip_target(request: Request, name: str, version: str | None) -> Target:
    target = resolve(request, None, name, version)
    _authorise(request, target)
    return target


@router.get("/v2/models/{name}", response_model=oip.ModelMetadataOut)
async def oip_metadata(request: Request, name: str) -> dict[str, Any]:
    """OIP model metadata: inputs and outputs with their datatypes, from the manifest."""
    target = _oip_target(request, name, None)
    return oip.model_metadata(target.manifest, list(target.versions))


@router.get("/v2/models/{name}/versions/{version}", response_model=oip.ModelMetadataOut)
async def oip_version_metadata(request: Request, name: str, version: str) -> dict[str, Any]:
    """OIP model metadata of one version."""
    target = _oip_target(request, name, version)
    return oip.model_metadata(target.manifest, list(target.versions))


@router.get("/v2/models/{name}/ready", response_model=oip.ModelReadyOut)
async def oip_model_ready(request: Request, name: str) -> dict[str, Any]:
    """200 when a replica is ready; 503 with Retry-After while none is."""
    return await _ready(request, name, None)


@router.get("/v2/models/{name}/versions/{version}/ready", response_model=oip.ModelReadyOut)
async def oip_version_ready(request: Request, name: str, version: str) -> dict[str, Any]:
    """200 when a replica of this version is ready; 503 with Retry-After while none is."""
    return await _ready(request, name, version)


async def _ready(request: Request, name: str, version: str | None) -> dict[str, Any]:
    target = _oip_target(request, name, version)
    if not target.endpoints:
        raise _unavailable(target, "no replica is ready yet")
    return {"name": target.name, "version": target.version, "ready": True}


@router.post("/v2/models/{name}/infer", response_model=oip.InferResponseOut)
async def oip_infer(request: Request, name: str) -> Response:
    """OIP inference: tensors are mapped to the model's named inputs and its outputs back to tensors."""
    return await _infer(request, name, None)


@router.post("/v2/models/{name}/versions/{version}/infer", response_model=oip.InferResponseOut)
async def oip_version_infer(request: Request, name: str, version: str) -> Response:
    """OIP inference on one version."""
    return await _infer(request, name, version)


async def _infer(request: Request, name: str, version: str | None) -> Response:
    target = _oip_target(request, name, version)
    try:
        doc = json.loads(await request.body() or b"null")
    except ValueError as exc:
        raise ValidationFailed(f"the body must be a JSON inference request: {exc}", field="body") from None
    inputs = oip.request_to_inputs(doc)
    answer = await forward(
        request,
        target,
        "/v1/predict",
        json.dumps({"inputs": inputs}).encode(),
        "application/json",
        relookup=lambda: resolve(request, None, name, version),
    )
    answered_version = answer.headers.get("x-aiot-model-version", target.version)
    try:
        body = json.loads(answer.body)
    except ValueError:
        body = {}
    if answer.status_code != 200 or not isinstance(body, dict):
        message = body.get("error") if isinstance(body, dict) else None
        return JSONResponse({"error": message or "the model failed"}, status_code=answer.status_code)
    outputs = body.get("outputs") if isinstance(body.get("outputs"), dict) else {}
    request_id = doc.get("id") if isinstance(doc.get("id"), str) else None
    return JSONResponse(
        oip.outputs_to_response(outputs, target.name, answered_version, request_id),
        headers={"x-aiot-model-version": answered_version},
    )
