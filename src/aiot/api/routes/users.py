"""User administration (admins only): create, list, change role, disable, reset password."""

from __future__ import annotations

from fastapi import APIRouter, Depends, status

from aiot.accounts import users as accounts
from aiot.api.deps import Ctx
from aiot.api.schemas import UserCreate, UserOut, UserUpdate
from aiot.api.security import AdminOnly, Principal
from aiot.errors import Conflict
from aiot.store.models import Role

router = APIRouter(prefix="/users", tags=["users"])


@router.get("", response_model=list[UserOut])
def list_users(ctx: Ctx, role: Role | None = None, _: Principal = Depends(AdminOnly)) -> list[UserOut]:
    with ctx.db.session() as session:
        return [UserOut.model_validate(u) for u in accounts.list_users(session, role)]


@router.post("", response_model=UserOut, status_code=status.HTTP_201_CREATED)
def create_user(ctx: Ctx, body: UserCreate, _: Principal = Depends(AdminOnly)) -> UserOut:
    with ctx.db.session() as session:
        user = accounts.create_user(
            session, username=body.username, password=body.password, role=body.role, email=body.email
        )
        return UserOut.model_validate(user)


@router.get("/{user}", response_model=UserOut)
def show_user(ctx: Ctx, user: str, _: Principal = Depends(AdminOnly)) -> UserOut:
    """`user` is an id (`usr_…`) or a username."""
    with ctx.db.session() as session:
        return UserOut.model_validate(accounts.get_user(session, user))


@router.patch("/{user}", response_model=UserOut)
def update_user(ctx: Ctx, user: str, body: UserUpdate, principal: Principal = Depends(AdminOnly)) -> UserOut:
    """Change role, e-mail, disable/enable, or reset the password; disabling revokes every token."""
    with ctx.db.session() as session:
        target = accounts.get_user(session, user)
        if target.id == principal.user.id and (body.disabled or (body.role and body.role != Role.admin)):
            raise Conflict("you cannot disable yourself or drop your own admin role", field="user")
        if body.role is not None:
            target.role = body.role
        if body.email is not None:
            target.email = body.email
        if body.disabled is not None:
            target.disabled = body.disabled
            if body.disabled:
                accounts.revoke_all_tokens(session, target)
        if body.password is not None:
            accounts.set_password(session, target, body.password)
        session.flush()
        return UserOut.model_validate(target)
