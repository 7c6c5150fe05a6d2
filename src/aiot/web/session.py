"""Who is looking at a page: the browser's session cookie, the CSRF check of forms, and page-level role checks.

Pages use the same session cookie and CSRF token as the API (`aiot.api.security`): the token is derived from the
session (no cookie holds it); a form carries it in a hidden field `csrf_token`, htmx requests send it in the
`X-CSRF-Token` header (set once on <body>).
A page that needs a login raises `LoginRequired`; `WebRoute` turns that into a redirect to /login (or an
`HX-Redirect` for htmx), and a wrong role into a friendly 403 page, never a JSON body.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request
from starlette.datastructures import FormData

from aiot.accounts.users import resolve_token, touch_token
from aiot.api.security import CSRF_HEADER, SAFE_METHODS, SESSION_COOKIE, csrf_token
from aiot.api.signing import tokens_match
from aiot.api.state import service_context
from aiot.errors import Forbidden, PlatformError
from aiot.store.models import Role, User
from aiot.web.apiclient import Api

CSRF_FIELD = "csrf_token"


class LoginRequired(Exception):
    """Raised by a page whose visitor has no valid session."""


@dataclass
class WebUser:
    """The logged-in visitor of one page request, with an API client acting as them."""

    user: User
    token: str
    csrf: str
    api: Api

    @property
    def role(self) -> Role:
        return self.user.role

    @property
    def is_admin(self) -> bool:
        return self.user.role == Role.admin


def session_user(request: Request) -> WebUser | None:
    """The visitor, or None when the cookie is missing, expired, revoked or the account disabled."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    ctx = service_context(request)
    try:
        with ctx.db.session() as session:
            user, record = resolve_token(session, token)
            session.expunge_all()
    except PlatformError:
        return None
    touch_token(ctx.db, record)
    return WebUser(user=user, token=token, csrf=csrf_token(request, token), api=Api(request.app, token))


def check_csrf(request: Request, form: FormData | None) -> None:
    """Unsafe requests must send the session's CSRF token (form field or header): only a platform page has it."""
    if request.method in SAFE_METHODS:
        return
    session = request.cookies.get(SESSION_COOKIE, "")
    expected = csrf_token(request, session) if session else ""
    sent = request.headers.get(CSRF_HEADER) or (str(form.get(CSRF_FIELD, "")) if form is not None else "")
    if not tokens_match(sent, expected):
        raise Forbidden(
            "the form's security token is missing or stale; reload the page and try again", field=CSRF_FIELD
        )


class Page:
    """Dependency: a logged-in visitor with one of `roles` (any role when none are given)."""

    def __init__(self, *roles: Role) -> None:
        self.roles = frozenset(roles) or frozenset(Role)

    async def __call__(self, request: Request) -> WebUser:
        web = session_user(request)
        if web is None:
            raise LoginRequired()
        request.state.web_user = web  # also for the error page below: it shows the visitor's own navigation
        if web.role not in self.roles:
            allowed = ", ".join(sorted(r.value.replace("_", " ") for r in self.roles))
            raise Forbidden(f"this page is for: {allowed}; you are logged in as {web.role.value.replace('_', ' ')}")
        return web


async def read_form(request: Request) -> FormData:
    """The submitted form, CSRF-checked."""
    form = await request.form()
    check_csrf(request, form)
    return form


def form_dict(form: FormData) -> dict[str, Any]:
    return {k: v for k, v in form.items() if k != CSRF_FIELD}


ADMIN = Page(Role.admin)
AI_DEV = Page(Role.ai_developer, Role.admin)
APP_DEV = Page(Role.app_developer, Role.admin)
END_USER = Page(Role.end_user, Role.admin)
DEVELOPERS = Page(Role.admin, Role.ai_developer, Role.app_developer)
ANY = Page()
