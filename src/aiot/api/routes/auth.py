"""Login (token or browser session), logout, own password and own tokens."""

from __future__ import annotations

import contextlib
import math
from datetime import timedelta

from fastapi import APIRouter, Depends, Request, Response, status

from aiot.accounts import users as accounts
from aiot.accounts.throttle import LoginThrottle, ThrottlePolicy
from aiot.api.deps import Ctx, CurrentUser
from aiot.api.schemas import LoginRequest, PasswordChange, SessionOut, TokenInfo, TokenOut, UserOut
from aiot.api.security import SESSION_COOKIE, Public, csrf_token
from aiot.api.state import service_context
from aiot.errors import NotFound, TooManyRequests, Unauthorized
from aiot.services.contract import ServiceContext
from aiot.store.models import TokenKind

router = APIRouter(prefix="/auth", tags=["auth"])


LEGACY_CSRF_COOKIE = "aiot_csrf"  # the old script-readable CSRF cookie: cleared wherever a browser still has it


def _ttl(ctx: ServiceContext, kind: TokenKind) -> timedelta:
    settings = ctx.settings
    return timedelta(hours=settings.session_ttl_hours if kind == TokenKind.session else settings.token_ttl_hours)


def login_throttle(request: Request) -> LoginThrottle:
    """The process's login throttle (see `aiot.accounts.throttle` for the policy and why it is in memory)."""
    throttle = getattr(request.app.state, "login_throttle", None)
    if throttle is None:
        throttle = LoginThrottle(ThrottlePolicy.from_settings(service_context(request).settings))
        request.app.state.login_throttle = throttle
    return throttle


def _login(request: Request, body: LoginRequest, kind: TokenKind) -> TokenOut:
    ctx = service_context(request)
    throttle = login_throttle(request)
    address = request.client.host if request.client else "unknown"
    wait = throttle.retry_after(body.username, address)
    if wait > 0:
        throttle.refused(body.username, address, wait)
        seconds = math.ceil(wait)
        raise TooManyRequests(
            f"too many failed logins; try again in {seconds} s", retry_after=seconds, field="password"
        )
    with ctx.db.session() as session:
        try:
            user = accounts.authenticate(session, body.username, body.password)
        except Unauthorized:
            throttle.failed(body.username, address)
            raise
        issued = accounts.issue_token(session, user, ttl=_ttl(ctx, kind), kind=kind, name=body.token_name)
        out = TokenOut(
            token=issued.token,
            token_id=issued.record.id,
            expires_at=issued.record.expires_at,
            user=UserOut.model_validate(user),
        )
    throttle.succeeded(body.username, address)
    return out


@router.post("/login", response_model=TokenOut, dependencies=[Depends(Public)])
def login(request: Request, body: LoginRequest) -> TokenOut:
    """Exchange username and password for a bearer token (API, CLI). Throttled: 429 with Retry-After."""
    return _login(request, body, TokenKind.api)


@router.post("/session", response_model=SessionOut, dependencies=[Depends(Public)])
def open_session(request: Request, ctx: Ctx, body: LoginRequest, response: Response) -> SessionOut:
    """Log a browser in: sets an HttpOnly SameSite=Lax session cookie; the answer carries the session's CSRF
    token (send it as X-CSRF-Token on unsafe requests; no cookie holds it). Throttled like /auth/login."""
    out = _login(request, body, TokenKind.session)
    settings = ctx.settings
    response.set_cookie(
        SESSION_COOKIE,
        out.token,
        max_age=int(_ttl(ctx, TokenKind.session).total_seconds()),
        httponly=True,
        samesite="lax",
        secure=settings.secure_cookies,
        path="/",
    )
    response.delete_cookie(LEGACY_CSRF_COOKIE, path="/")
    return SessionOut(**out.user.model_dump(), csrf_token=csrf_token(request, out.token))


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
def logout(request: Request, ctx: Ctx, response: Response, principal: CurrentUser) -> Response:
    """Revoke the token (or session) this request was made with."""
    with ctx.db.session() as session, contextlib.suppress(NotFound):  # gone meanwhile: logged out all the same
        accounts.revoke_token(session, accounts.own_token(session, principal.user.id, principal.token.id))
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(LEGACY_CSRF_COOKIE, path="/")
    return response


@router.get("/me", response_model=UserOut)
def me(principal: CurrentUser) -> UserOut:
    return UserOut.model_validate(principal.user)


@router.post("/password", status_code=status.HTTP_204_NO_CONTENT)
def change_password(ctx: Ctx, body: PasswordChange, principal: CurrentUser) -> Response:
    """Change your own password; every token of yours is revoked (log in again)."""
    with ctx.db.session() as session:
        user = accounts.get_user(session, principal.user.id)
        accounts.change_password(session, user, body.current_password, body.new_password)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/tokens", response_model=list[TokenInfo])
def list_tokens(ctx: Ctx, principal: CurrentUser) -> list[TokenInfo]:
    with ctx.db.session() as session:
        return [TokenInfo.model_validate(r) for r in accounts.list_tokens(session, principal.user.id)]


@router.delete("/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_token(ctx: Ctx, token_id: str, principal: CurrentUser) -> Response:
    """Revoke one of your own tokens (another user's token is reported as not found)."""
    with ctx.db.session() as session:
        accounts.revoke_token(session, accounts.own_token(session, principal.user.id, token_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
