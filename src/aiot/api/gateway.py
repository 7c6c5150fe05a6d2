"""The platform's door to web apps: `/apps/<instance>/...` on the platform's origin.

An app's pages are never served here: they are code from an app developer, and on this origin their script
would run with the platform's cookies and pages within reach. This route only checks who is asking (session
cookie or bearer token; the instance's owner and admins) and sends the browser to the apps origin
(`aiot.api.appsorigin`, its own listener on another host) with a short-lived, single-use ticket for this one
instance. That address is the one the platform mails and shows, so it always works, whatever port or host the
apps origin has. A backend app (no HTTP server of its own) gets a small status page here instead.
"""

from __future__ import annotations

import html
import secrets
from dataclasses import dataclass
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from aiot.api.deps import Ctx
from aiot.api.security import authenticate_request
from aiot.api.signing import app_secret, sign
from aiot.api.state import service_context
from aiot.apps.instances import get_instance
from aiot.errors import NotFound, ServiceUnavailable, Unauthorized
from aiot.store.catalog import AppPackage
from aiot.store.models import Role, User
from aiot.store.runtime import Workload, WorkloadStatus

router = APIRouter(include_in_schema=False)
TICKET_PURPOSE = "app-ticket"
TICKET_TTL_S = 60.0
ENTER_PATH = "/_aiot/enter"


@dataclass(frozen=True)
class AppView:
    """What a viewer may know about one instance: its app, kind, state and (when running) its endpoint."""

    instance_id: str
    name: str
    kind: str
    state: str
    endpoint: str | None


def app_view(session: Session, instance_id: str, user: User) -> AppView:
    """The instance as `user` may see it: its owner and admins; anyone else gets 404 (no hint it exists)."""
    instance = get_instance(session, instance_id)
    if user.role != Role.admin and instance.owner_id != user.id:
        raise NotFound(f"no app instance {instance_id!r}", field="instance")
    app = session.get(AppPackage, instance.app_id)
    workload = session.get(Workload, instance.workload_id) if instance.workload_id else None
    observed = session.get(WorkloadStatus, workload.id) if workload else None
    running = (
        observed is not None
        and workload is not None
        and observed.generation == workload.generation
        and observed.state == "running"
    )
    return AppView(
        instance_id=instance_id,
        name=app.name if app else "?",
        kind=app.kind if app else "?",
        state=observed.state if observed else "not running",
        endpoint=observed.endpoint if running and observed else None,
    )


def status_page(view: AppView) -> HTMLResponse:
    """What a backend app's address shows: it has no pages, so say what it is doing."""
    name = html.escape(view.name)
    return HTMLResponse(
        f"<!doctype html><title>{name}</title><h1>{name}</h1>"
        f"<p>Instance {html.escape(view.instance_id)}: <b>{html.escape(view.state)}</b>.</p>"
        "<p>This is a backend app: it has no pages of its own. Its logs are in the platform's "
        "log view.</p>"
    )


INSTANCE_PLACEHOLDER = "{instance}"


def instance_host(instance_id: str) -> str:
    """The host label of an instance when each has a host of its own (host names ignore case)."""
    return instance_id.lower().replace("_", "-")


def apps_base(request: Request, instance_id: str) -> str:
    """The apps origin's URL for this instance: as started beside this API (`app.state.apps_url`), else as
    configured; a `{instance}` in it (e.g. `https://{instance}.apps.example.com`) gives each instance its own
    host, so apps are kept apart from each other too, not only from the platform."""
    url = getattr(request.app.state, "apps_url", "") or service_context(request).settings.apps_url
    if not url:
        raise ServiceUnavailable(
            "web apps are not served by this control plane process (no apps origin started; set AIOT_APPS_URL)",
            field="instance",
        )
    return str(url).replace(INSTANCE_PLACEHOLDER, instance_host(instance_id)).rstrip("/")


@router.get("/apps/{instance_id}")
def add_slash(instance_id: str) -> RedirectResponse:
    return RedirectResponse(f"/apps/{quote(instance_id)}/", status_code=307)


@router.api_route("/apps/{instance_id}/{path:path}", methods=["GET", "HEAD"])
def open_app(request: Request, ctx: Ctx, instance_id: str, path: str) -> Response:
    """Check the viewer, then send them to the app on the apps origin with a ticket for this instance."""
    try:
        principal = authenticate_request(request)
    except Unauthorized:
        if request.headers.get("authorization"):
            raise
        target = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
        return RedirectResponse(f"/login?next={target}", status_code=303)  # a browser: log in, then come back
    with ctx.db.session() as session:
        view = app_view(session, instance_id, principal.user)
    if view.kind != "web":
        return status_page(view)
    target = f"/{quote(instance_id)}/{quote(path)}" + (f"?{request.url.query}" if request.url.query else "")
    ticket = sign(
        app_secret(request.app),
        TICKET_PURPOSE,
        {"i": instance_id, "t": principal.token.id, "n": secrets.token_urlsafe(12), "p": target},
        TICKET_TTL_S,
    )
    return RedirectResponse(
        f"{apps_base(request, instance_id)}{ENTER_PATH}?ticket={ticket}",
        status_code=303,
        headers={"cache-control": "no-store"},
    )
