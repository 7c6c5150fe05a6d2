"""Login, logout and the role's home page.

The login form has its own CSRF token (login CSRF: another site must not log the visitor into the attacker's
account): GET /login sets a random HttpOnly `aiot_login` cookie and embeds a token derived from it with the
platform secret; POST /login needs both to match.
"""

from __future__ import annotations

import contextlib
import secrets
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response

from aiot.api.routes.auth import LEGACY_CSRF_COOKIE
from aiot.api.security import SESSION_COOKIE
from aiot.api.signing import app_secret, derived_token, tokens_match
from aiot.api.state import service_context
from aiot.store.models import Role
from aiot.web.apiclient import Api, ApiError
from aiot.web.forms import FormErrors, form_errors
from aiot.web.render import home_of, redirect, render
from aiot.web.routing import WebRoute
from aiot.web.session import CSRF_FIELD, check_csrf, session_user

LOGIN_COOKIE = "aiot_login"

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
    return FileResponse(
        Path(__file__).parents[1] / "static" / "favicon.svg",
        media_type="image/svg+xml",
        headers={"cache-control": "max-age=86400"},
    )


def _login_page(request: Request, status: int = 200, **context: object) -> Response:
    """The form with the browser's pre-session token (and its cookie; kept if it has one, so that two open login
    tabs both work)."""
    current = request.cookies.get(LOGIN_COOKIE, "")
    nonce = current if 20 <= len(current) <= 64 else secrets.token_urlsafe(24)
    out = render(
        request, "login.html", status=status, csrf=derived_token(app_secret(request.app), "login", nonce), **context
    )
    out.set_cookie(
        LOGIN_COOKIE,
        nonce,
        max_age=3600,
        httponly=True,
        samesite="lax",
        secure=service_context(request).settings.secure_cookies,
        path="/login",
    )
    return out


@router.get("/login")
async def login_form(request: Request, next: str = "") -> Response:  # noqa: A002 - the query name users see
    web = session_user(request)
    if web is not None:
        return redirect(_safe_next(next) or home_of(web.role))
    return _login_page(request, next=next)


@router.post("/login")
async def login(request: Request) -> Response:
    """Same logic as POST /api/v1/auth/session (called in process as the visitor's address, so the login
    throttle counts the right client): its cookies are passed to the browser."""
    form = await request.form()
    username, password = str(form.get("username", "")).strip(), str(form.get("password", ""))
    target = str(form.get("next", ""))
    errors = FormErrors()
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    expected = derived_token(app_secret(request.app), "login", nonce) if nonce else ""
    if not tokens_match(str(form.get(CSRF_FIELD, "")), expected):
        errors.add(None, "the login form's security token is missing or stale; please try again")
        return _login_page(request, status=403, errors=errors, values={"username": username}, next=target)
    if not username:
        errors.add("username", "enter your username")
    if not password:
        errors.add("password", "enter your password")
    status, headers = 200, {}
    if not errors:
        try:
            response = await Api(request.app, None, client=request.client).request(
                "POST", "/auth/session", json={"username": username, "password": password, "token_name": "web"}
            )
        except ApiError as exc:
            errors = form_errors(exc, ["username", "password"])
            if exc.status in (401, 429):
                errors = FormErrors()
                errors.add("password", exc.message)
            if exc.status == 429:
                status, headers = 429, {"Retry-After": str(exc.details.get("retry_after", 1))}
        else:
            role = response.json()["role"]
            out = redirect(_safe_next(target) or home_of(Role(role)))
            for header in response.headers.get_list("set-cookie"):
                out.headers.append("set-cookie", header)
            out.delete_cookie(LOGIN_COOKIE, path="/login")
            return out
    out = _login_page(request, status=status, errors=errors, values={"username": username}, next=target)
    out.headers.update(headers)
    return out


async def _logout(request: Request) -> Response:
    web = session_user(request)
    if web is not None:
        with contextlib.suppress(ApiError):  # already revoked or expired: the cookies are cleared either way
            await web.api.request("POST", "/auth/logout")
    out = redirect("/login", flash="You are logged out.")
    out.delete_cookie(SESSION_COOKIE, path="/")
    out.delete_cookie(LEGACY_CSRF_COOKIE, path="/")
    return out


@router.post("/logout")
async def logout(request: Request) -> Response:
    check_csrf(request, await request.form())
    return await _logout(request)


@router.get("/logout")
async def logout_link(request: Request) -> Response:
    """A plain link works too: logging someone out is harmless, and bookmarks of /logout should work."""
    return await _logout(request)
