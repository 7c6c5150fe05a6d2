"""The admins' outbox page: every e-mail the platform queued (address mails, rollback notices, password
resets), its status, attempts and last error, the message itself, and "send again" for a failed one.

The health page says mails wait in the outbox when no SMTP server is set; this is where an admin sees them.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from aiot.web.apiclient import ApiError
from aiot.web.render import redirect, render
from aiot.web.routing import WebRoute
from aiot.web.session import ADMIN, WebUser

router = APIRouter(route_class=WebRoute, include_in_schema=False, prefix="/admin/outbox")
STATUSES = ("pending", "sending", "sent", "failed")


@router.get("")
async def outbox(request: Request, status: str = "", web: WebUser = Depends(ADMIN)) -> Response:
    params = {"limit": 200, **({"status": status} if status in STATUSES else {})}
    mails = await web.api.get("/outbox", **params)
    return render(
        request,
        "admin/outbox.html",
        web,
        title="Outbox",
        mails=mails,
        shown=status if status in STATUSES else "",
        statuses=STATUSES,
    )


@router.get("/{email_id}")
async def email(request: Request, email_id: str, web: WebUser = Depends(ADMIN)) -> Response:
    mail = await web.api.get(f"/outbox/{email_id}")
    return render(request, "admin/email.html", web, title=mail["subject"], mail=mail)


@router.post("/{email_id}/retry")
async def retry(request: Request, email_id: str, web: WebUser = Depends(ADMIN)) -> Response:
    try:
        mail = await web.api.post(f"/outbox/{email_id}/retry")
    except ApiError as exc:
        return redirect(f"/admin/outbox/{email_id}", flash=f"Not sent again: {exc.message}")
    return redirect(f"/admin/outbox/{email_id}", flash=f"Queued again for {mail['to']}; it goes out at once.")
