"""The web-app gateway: `/apps/<instance>/...` streams to the instance's workload on its node.

Only the instance's owner and admins get through (session cookie or bearer token). The path prefix is stripped
and sent as `X-Forwarded-Prefix`, so an app serving relative links works behind the gateway. Every forwarded
request carries the instance's gateway token (`X-AIOT-Gateway-Token`): the app's port admits nothing else.
A backend app (no HTTP server of its own) gets a small status page here instead, so the address mailed to its
user is useful.
"""

from __future__ import annotations

import html

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, StreamingResponse
from starlette.background import BackgroundTask

from aiot.api.security import authenticate_request
from aiot.apps.instances import get_instance
from aiot.deployer.endpoint_tokens import gateway_headers
from aiot.errors import NotFound, ServiceUnavailable
from aiot.secrets_store import platform_secret
from aiot.store.catalog import AppPackage
from aiot.store.models import Role
from aiot.store.runtime import Workload, WorkloadStatus

router = APIRouter(include_in_schema=False)
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "host", "content-length"}
_client: httpx.AsyncClient | None = None


def _http() -> httpx.AsyncClient:
    global _client
    if _client is None:
        _client = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0), follow_redirects=False)
    return _client


@router.get("/apps/{instance_id}")
def add_slash(instance_id: str) -> RedirectResponse:
    return RedirectResponse(f"/apps/{instance_id}/", status_code=307)


@router.api_route("/apps/{instance_id}/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"])
async def proxy(request: Request, instance_id: str, path: str):  # type: ignore[no-untyped-def]
    principal = authenticate_request(request)
    with request.app.state.ctx.db.session() as session:
        instance = get_instance(session, instance_id)
        if principal.role != Role.admin and instance.owner_id != principal.user.id:
            raise NotFound(f"no app instance {instance_id!r}", field="instance")
        app = session.get(AppPackage, instance.app_id)
        workload = session.get(Workload, instance.workload_id) if instance.workload_id else None
        observed = session.get(WorkloadStatus, workload.id) if workload else None
        endpoint = observed.endpoint if observed and workload and observed.generation == workload.generation \
            and observed.state == "running" else None
        state = observed.state if observed else "not running"
        name, kind = (app.name, app.kind) if app else ("?", "?")
    if kind != "web":
        body = (f"<!doctype html><title>{html.escape(name)}</title><h1>{html.escape(name)}</h1>"
                f"<p>Instance {html.escape(instance_id)}: <b>{html.escape(state)}</b>.</p>"
                "<p>This is a backend app: it has no pages of its own. Its logs are in the platform's log view.</p>")
        return HTMLResponse(body)
    if endpoint is None:
        raise ServiceUnavailable(f"app instance {instance_id} is not running right now ({state})",
                                 field="instance")
    url = f"{endpoint.rstrip('/')}/{path}"
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP and k.lower() not in
               ("authorization", "cookie")}
    headers["x-forwarded-prefix"] = f"/apps/{instance_id}"
    headers["x-forwarded-host"] = request.headers.get("host", "")
    headers.update(gateway_headers(platform_secret(request.app.state.ctx.settings), instance_id))
    body = request.stream() if request.method in ("POST", "PUT", "PATCH", "DELETE") else None
    upstream_request = _http().build_request(request.method, url, params=request.query_params, headers=headers,
                                             content=body)
    try:
        upstream = await _http().send(upstream_request, stream=True)
    except httpx.HTTPError as exc:
        raise ServiceUnavailable(f"app instance {instance_id} did not answer ({type(exc).__name__})",
                                 field="instance") from exc
    response_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
    return StreamingResponse(upstream.aiter_raw(), status_code=upstream.status_code, headers=response_headers,
                             background=BackgroundTask(upstream.aclose))
