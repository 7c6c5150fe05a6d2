"""The e-mail outbox: everyone sees the mails addressed to them, admins see all and may retry a failed one."""

from __future__ import annotations

import contextlib
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import Field

from aiot.api.deps import Ctx, CurrentUser
from aiot.api.schemas import OutModel, Timestamp
from aiot.api.security import AdminOnly, AnyUser, Principal
from aiot.errors import ValidationFailed
from aiot.notify import outbox
from aiot.notify.service import KICK_SUBJECT
from aiot.store.models import Role
from aiot.store.notify import OutboxEmail, OutboxStatus

router = APIRouter(tags=["outbox"])


class EmailOut(OutModel):
    id: str
    to: str
    user_id: str | None
    subject: str
    body: str
    html: str | None
    kind: str
    status: str = Field(description="pending, sent or failed")
    dedupe_key: str | None
    created_at: Timestamp | None
    sent_at: Timestamp | None
    attempts: int
    last_error: str | None
    next_attempt_at: Timestamp | None


def email_out(row: OutboxEmail) -> dict[str, Any]:
    def iso(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "id": row.id,
        "to": row.to_address,
        "user_id": row.user_id,
        "subject": row.subject,
        "body": row.body,
        "html": row.html,
        "kind": row.kind,
        "status": row.status.value,
        "dedupe_key": row.dedupe_key,
        "created_at": iso(row.created_at),
        "sent_at": iso(row.sent_at),
        "attempts": row.attempts,
        "last_error": row.last_error,
        "next_attempt_at": iso(row.next_attempt_at),
    }


def _visible(session: Any, principal: Principal, email_id: str) -> OutboxEmail:
    return outbox.visible_email(session, email_id, principal.caller)


@router.get("/outbox", response_model=list[EmailOut])
def list_outbox(
    ctx: Ctx,
    status: OutboxStatus | None = None,
    kind: str | None = None,
    limit: int = 100,
    principal: Principal = Depends(AnyUser),
) -> list[dict]:
    """Newest first. Admins see every mail; others the mails sent to them."""
    if not 1 <= limit <= 1000:
        raise ValidationFailed("limit must be between 1 and 1000", field="limit")
    mine = None if principal.role == Role.admin else principal.user.id
    with ctx.db.session() as session:
        return [email_out(row) for row in outbox.list_emails(session, mine, status, kind, limit)]


@router.get("/outbox/{email_id}", response_model=EmailOut)
def show_email(ctx: Ctx, email_id: str, principal: CurrentUser) -> dict:
    with ctx.db.session() as session:
        return email_out(_visible(session, principal, email_id))


@router.post("/outbox/{email_id}/retry", response_model=EmailOut)
async def retry_email(ctx: Ctx, email_id: str, principal: Principal = Depends(AdminOnly)) -> dict:
    """Send a failed (or waiting) mail again now, with a fresh attempt budget; a sent mail is a 409."""
    with ctx.db.session() as session:
        row = outbox.retry(session, _visible(session, principal, email_id))
        out = email_out(row)
    service = ctx.services.get("notify")
    if service is not None and hasattr(service, "kick"):
        service.kick()
    elif ctx.bus is not None:
        with contextlib.suppress(Exception):  # only makes it faster; the next poll sends it anyway
            await ctx.bus.publish(KICK_SUBJECT, b"")
    return out
