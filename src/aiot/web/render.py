"""Rendering pages: the Jinja2 environment, navigation by role, flash messages, and the error pages.

Every page extends `base.html`, which gets the visitor, the CSRF token and the navigation from `render()`, so
no page can forget them. Flash messages survive one redirect in a short-lived cookie (post/redirect/get).
"""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from aiot import __version__
from aiot.store.models import Role
from aiot.web.session import CSRF_FIELD, WebUser

TEMPLATES_DIR = Path(__file__).parent / "templates"
FLASH_COOKIE = "aiot_flash"

templates = Jinja2Templates(directory=str(TEMPLATES_DIR))

# (label, href) per role; the first entry is the role's home page.
NAV: dict[Role, list[tuple[str, str]]] = {
    Role.admin: [
        ("Health", "/admin"),
        ("Users", "/admin/users"),
        ("Device types", "/admin/device-types"),
        ("Locations", "/admin/locations"),
        ("Nodes", "/admin/nodes"),
        ("Models", "/models"),
        ("Catalog", "/catalog"),
        ("Deployments", "/deployments"),
        ("Logs", "/logs"),
        ("Outbox", "/admin/outbox"),
    ],
    Role.ai_developer: [("Models", "/models"), ("Catalog", "/catalog"), ("Logs", "/logs")],
    Role.app_developer: [("My apps", "/dev/apps"), ("Catalog", "/catalog"), ("Logs", "/logs")],
    Role.end_user: [("App store", "/store"), ("My deployments", "/deployments")],
}


def home_of(role: Role) -> str:
    return NAV[role][0][1]


def _age(value: Any) -> str:
    """'3 s ago' style age of an ISO time or datetime (empty for none)."""
    if not value:
        return "never"
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = (datetime.now(UTC) - when).total_seconds()
    if seconds < 0:
        return "in " + _span(-seconds)
    return _span(seconds) + " ago"


def _span(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} d"


def _when(value: Any) -> str:
    """A readable UTC time: '2026-04-01 14:03:07 UTC'."""
    if not value:
        return ""
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _local(value: Any) -> str:
    """A run time in its own zone, as people read it: 'Wed 25 Nov 2026, 14:30' (the zone is said once below)."""
    if not value:
        return ""
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    return when.strftime("%a %d %b %Y, %H:%M")


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=False, ensure_ascii=False)


def _compact(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_compact(v)}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


templates.env.filters.update(age=_age, when=_when, local=_local, pretty=_pretty, compact=_compact, urlquote=quote)
templates.env.globals.update(version=__version__, CSRF_FIELD=CSRF_FIELD)


def render(request: Request, name: str, web: WebUser | None = None, status: int = 200, **context: Any) -> Response:
    web = web or getattr(request.state, "web_user", None)
    raw_flash = request.cookies.get(FLASH_COOKIE)
    flash = unquote(raw_flash) if raw_flash else None
    nav = NAV[web.role] if web else []
    path = request.url.path
    active = max(
        (href for _, href in nav if path == href or path.startswith(href.rstrip("/") + "/")), key=len, default=""
    )
    response = templates.TemplateResponse(
        request,
        name,
        {
            "web": web,
            "user": web.user if web else None,
            "csrf": web.csrf if web else "",
            "nav": nav,
            "active": active,
            "flash": flash,
            "errors": None,
            "values": {},
            **context,
        },
        status_code=status,
    )
    if flash:
        response.delete_cookie(FLASH_COOKIE, path="/")
    return response


def fragment(request: Request, name: str, status: int = 200, **context: Any) -> Response:
    """A partial for htmx swaps (no layout)."""
    web = getattr(request.state, "web_user", None)
    return templates.TemplateResponse(
        request,
        name,
        {"web": web, "csrf": web.csrf if web else "", "errors": None, "values": {}, **context},
        status_code=status,
    )


def redirect(url: str, flash: str | None = None) -> Response:
    response = RedirectResponse(url, status_code=303)
    if flash:
        response.set_cookie(FLASH_COOKIE, quote(flash), max_age=60, httponly=True, samesite="lax", path="/")
    return response


def error_page(request: Request, status: int, title: str, message: str) -> Response:
    if request.headers.get("hx-request"):
        return HTMLResponse(f'<div class="alert error" role="alert">{_escape(message)}</div>', status_code=status)
    return render(request, "error.html", status=status, title=title, message=message)


def _escape(text: str) -> str:
    return html.escape(text)
