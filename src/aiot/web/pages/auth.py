"""Login, logout and the role's home page."""

from __future__ import annotations

import contextlib
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response

from aiot.api.security import CSRF_COOKIE, SESSION_COOKIE
from aiot.store.models import Role
from aiot.web.apiclient import Api, ApiError
from aiot.web.forms import FormErrors, form_errors
from aiot.web.render import home_of, redirect, render
from aiot.web.routing import WebRoute
from aiot.web.session import check_csrf, session_user

router = APIRouter(route_class=WebRoute, include_in_schema=False)


def _safe_next(target: str | None) -> str | None:
    """Only local paths: a login link must not bounce the visitor to another site."""
    if target and target.startswith("/") and not target.startswith("//") and not target.startswith("/login"):
        return target
    return None


@router.get("/")
async def home(request: Request) -> Response:
    web = session_user(request)
    return redirect(home_of(web.role) if web else "/login")


@router.get("/favicon.ico")
async def favicon() -> Response:
    """Browsers ask for /favicon.ico on every page without an icon link (the app gateway's pages, /docs)."""
    return FileResponse(Path(__file__).parents[1] / "static" / "favicon.svg", media_type="image/svg+xml",
                        headers={"cache-control": "max-age=86400"})


@router.get("/login")
async def login_form(request: Request, next: str = "") -> Response:  # noqa: A002 - the query name users see
    web = session_user(request)
    if web is not None:
        return redirect(_safe_next(next) or home_of(web.role))
    return render(request, "login.html", next=next)


@router.post("/login")
async def login(request: Request) -> Response:
    """Same logic as POST /api/v1/auth/session (called in process): its cookies are passed to the browser."""
    form = await request.form()
    username, password = str(form.get("username", "")).strip(), str(form.get("password", ""))
    target = str(form.get("next", ""))
    errors = FormErrors()
    if not username:
        errors.add("username", "enter your username")
    if not password:
        errors.add("password", "enter your password")
    if not errors:
        try:
            response = await Api(request.app, None).request(
                "POST", "/auth/session", json={"username": username, "password": password, "token_name": "web"})
        except ApiError as exc:
            errors = form_errors(exc, ["username", "password"])
            if exc.status == 401:
                errors = FormErrors()
                errors.add("password", exc.message)
        else:
            role = response.json()["role"]
            out = redirect(_safe_next(target) or home_of(Role(role)))
            for header in response.headers.get_list("set-cookie"):
                out.headers.append("set-cookie", header)
            return out
    return render(request, "login.html", status=200, errors=errors, values={"username": username}, next=target)


async def _logout(request: Request) -> Response:
    web = session_user(request)
    if web is not None:
        with contextlib.suppress(ApiError):  # already revoked or expired: the cookies are cleared either way
            await web.api.request("POST", "/auth/logout")
    out = redirect("/login", flash="You are logged out.")
    out.delete_cookie(SESSION_COOKIE, path="/")
    out.delete_cookie(CSRF_COOKIE, path="/")
    return out


@router.post("/logout")
async def logout(request: Request) -> Response:
    check_csrf(request, await request.form())
    return await _logout(request)


@router.get("/logout")
async def logout_link(request: Request) -> Response:
    """A plain link works too: logging someone out is harmless, and bookmarks of /logout should work."""
    return await _logout(request)
