"""The admin's health page: every platform service, node and workload at a glance, refreshed live."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from markupsafe import Markup

from aiot.api.state import service_context
from aiot.web.charts import series_chart
from aiot.web.render import fragment, render
from aiot.web.routing import WebRoute
from aiot.web.session import ADMIN, WebUser

router = APIRouter(route_class=WebRoute, include_in_schema=False)


async def _health(request: Request, web: WebUser) -> dict[str, Any]:
    status, nodes, workloads = await asyncio.gather(
        web.api.get("/status"), web.api.get_or([], "/nodes"), web.api.get_or([], "/workloads")
    )
    # Services of this process come from its context too: `aiot service run` processes elsewhere report
    # through /status of their own API; here we show what this control plane runs.
    services = dict(status.get("services") or {})
    for name, service in service_context(request).services.items():
        services.setdefault(name, service.health().to_dict())
    node_names = {n["id"]: n["name"] for n in nodes}
    for w in workloads:
        w["node"] = node_names.get(w.get("node_id") or "", w.get("node_id") or "—")
    return {"platform": status, "services": services, "nodes": nodes, "workloads": workloads}


@router.get("/admin")
async def health(request: Request, web: WebUser = Depends(ADMIN)) -> Response:
    return render(request, "admin/health.html", web, title="Platform health", **await _health(request, web))


@router.get("/admin/health/live")
async def health_live(request: Request, web: WebUser = Depends(ADMIN)) -> Response:
    return fragment(request, "admin/_health.html", **await _health(request, web))


@router.get("/admin/workloads/{workload_id}")
async def workload(request: Request, workload_id: str, web: WebUser = Depends(ADMIN)) -> Response:
    row, history = await asyncio.gather(
        web.api.get(f"/workloads/{workload_id}"), web.api.get_or({"samples": []}, f"/workloads/{workload_id}/load")
    )
    return render(
        request, "admin/workload.html", web, title=f"Workload {workload_id}", w=row, load=_load_charts(history)
    )


def _load_charts(history: dict[str, Any]) -> list[Markup]:
    """CPU and resident memory of the workload's processes over its recent reports, against their times."""
    samples = [(datetime.fromisoformat(s["at"]), s) for s in history.get("samples", [])]
    if not samples:
        return []
    start, end = samples[0][0], samples[-1][0]
    return [
        series_chart([(at, s["cpu"]) for at, s in samples], start=start, end=end, title="CPU (%)", unit="%"),
        series_chart(
            [(at, s.get("memory_mb") or 0.0) for at, s in samples],
            start=start,
            end=end,
            title="Memory (MiB)",
            unit="MiB",
        ),
    ]
