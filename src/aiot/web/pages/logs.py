"""Log search and live tail over the platform's central log stream (GET /api/v1/logs, /logs/stream)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from aiot.web.apiclient import ApiError
from aiot.web.forms import form_errors
from aiot.web.render import fragment, render
from aiot.web.routing import WebRoute
from aiot.web.session import ANY, WebUser

router = APIRouter(route_class=WebRoute, include_in_schema=False)
FILTERS = ["service", "workload_id", "app_instance_id", "level", "since", "until", "q", "limit"]
LEVELS = [("", "any level"), ("DEBUG", "debug+"), ("INFO", "info+"), ("WARNING", "warning+"), ("ERROR", "error+")]


def _query(request: Request) -> dict[str, str]:
    values = {k: request.query_params.get(k, "").strip() for k in FILTERS}
    values["limit"] = values["limit"] or "200"
    return values


async def _search(web: WebUser, values: dict[str, str]) -> dict[str, Any]:
    params = {k: v for k, v in values.items() if v}
    query = {("text" if k == "q" else k): v for k, v in params.items()}  # the page's `q` is the API's `text`
    try:
        out = await web.api.get("/logs", **query)
    except ApiError as exc:
        if exc.missing_route:
            return {"available": False, "records": []}
        return {"available": True, "records": [], "errors": form_errors(exc, FILTERS)}
    records = out if isinstance(out, list) else (out or {}).get("records", [])
    truncated = isinstance(out, dict) and bool(out.get("truncated"))
    stream = {k: v for k, v in params.items() if k not in ("since", "until", "limit", "q")}
    if "q" in params:  # the search's free text is the tail's `text` filter
        stream["text"] = params["q"]
    return {
        "available": True,
        "records": records,
        "truncated": truncated,
        "stream_url": "/api/v1/logs/stream" + (f"?{urlencode(stream)}" if stream else ""),
    }


@router.get("/logs")
async def logs(request: Request, web: WebUser = Depends(ANY)) -> Response:
    values = _query(request)
    result = await _search(web, values)
    return render(request, "logs.html", web, title="Logs", values=values, levels=LEVELS, **result)


@router.get("/logs/results")
async def results(request: Request, web: WebUser = Depends(ANY)) -> Response:
    values = _query(request)
    result = await _search(web, values)
    return fragment(request, "_logs_results.html", values=values, **result)
