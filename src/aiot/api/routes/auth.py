"""Login (token or browser session), logout, own password and own tokens."""

from __future__ import annotations

import secrets
from datetime import timedelta

from fastapi import APIRouter, Depends, Request, Response, status
from sqlalchemy import select

from aiot.accounts import service as accounts
from aiot.api.schemas import LoginRequest, PasswordChange, TokenInfo, TokenOut, UserOut
from aiot.api.security import CSRF_COOKIE, SESSION_COOKIE, AnyUser, Principal, Public
from aiot.errors import NotFound
from aiot.store.models import ApiToken, TokenKind

router = APIRouter(prefix="/auth", tags=["auth"])


def _ttl(request: Request) -> timedelta:
    return timedelta(hours=request.app.state.ctx.settings.token_ttl_hours)


def _login(request: Request, body: LoginRequest, kind: TokenKind) -> TokenOut:
    with request.app.state.ctx.db.session() as session:
        user = accounts.authenticate(session, body.username, body.password)
        issued = accounts.issue_token(session, user, ttl=_ttl(request), kind=kind, name=body.token_name)
        return TokenOut(token=issued.token, token_id=issued.record.id, expires_at=issued.record.expires_at,
                        user=UserOut.model_validate(user))


@router.post("/login", response_model=TokenOut, dependencies=[Depends(Public)])
def login(request: Request, body: LoginRequest) -> TokenOut:
    """Exchange username and password for a bearer token (API, CLI)."""
    return _login(request, body, TokenKind.api)


@router.post("/session", response_model=UserOut, dependencies=[Depends(Public)])
def open_session(request: Request, body: LoginRequest, response: Response) -> UserOut:
    """Log a browser in: sets an HttpOnly session cookie and a CSRF cookie the page echoes in a header."""
    out = _login(request, body, TokenKind.session)
    settings = request.app.state.ctx.settings
    max_age = int(_ttl(request).total_seconds())
    response.set_cookie(SESSION_COOKIE, out.token, max_age=max_age, httponly=True, samesite="lax",
                        secure=settings.cookie_secure, path="/")
    response.set_cookie(CSRF_COOKIE, secrets.token_urlsafe(24), max_age=max_age, httponly=False, samesite="lax",
                        secure=settings.cookie_secure, path="/")
    return out.user


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
def logout(request: Request, response: Response, principal: Principal = Depends(AnyUser)) -> Response:
    """Revoke the token (or session) this request was made with."""
    with request.app.state.ctx.db.session() as session:
        record = session.get(ApiToken, principal.token.id)
        if record is not None:
            accounts.revoke_token(session, record)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    return response


@router.get("/me", response_model=UserOut)
def me(principal: Principal = Depends(AnyUser)) -> UserOut:
    return UserOut.model_validate(principal.user)


@router.post("/password", status_code=status.HTTP_204_NO_CONTENT)
def change_password(request: Request, body: PasswordChange, principal: Principal = Depends(AnyUser)) -> Response:
    """Change your own password; every token of yours is revoked (log in again)."""
    with request.app.state.ctx.db.session() as session:
        user = accounts.get_user(session, principal.user.id)
        accounts.change_password(session, user, body.current_password, body.new_password)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/tokens", response_model=list[TokenInfo])
def list_tokens(request: Request, principal: Principal = Depends(AnyUser)) -> list[TokenInfo]:
    with request.app.state.ctx.db.session() as session:
        rows = session.scalars(
            select(ApiToken).where(ApiToken.user_id == principal.user.id).order_by(ApiToken.created_at)
        )
        return [TokenInfo.model_validate(r) for r in rows]


@router.delete("/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_token(request: Request, token_id: str, principal: Principal = Depends(AnyUser)) -> Response:
    """Revoke one of your own tokens (another user's token is reported as not found)."""
    with request.app.state.ctx.db.session() as session:
        record = session.get(ApiToken, token_id)
        if record is None or record.user_id != principal.user.id:
            raise NotFound(f"no token {token_id!r} of yours", field="token_id")
        accounts.revoke_token(session, record)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
