"""Who may connect to NATS, as the components see it: they register functions that list NATS users from the
database (`register_user_source`) and announce a credential change (`announce_auth_change`). Kept apart from the
service so a component that registers users does not import the service that applies them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from sqlalchemy.orm import Session

from aiot.bus.auth import NatsUser
from aiot.services.contract import ServiceContext

AUTH_CHANGED_SUBJECT = "aiot.internal.auth.changed"

UserSource = Callable[[Session], list[NatsUser]]
USER_SOURCES: list[UserSource] = []


def register_user_source(source: UserSource) -> UserSource:
    """Add a function that lists NATS users from the database (decorator-friendly)."""
    if source not in USER_SOURCES:
        USER_SOURCES.append(source)
    return source


async def announce_auth_change(ctx: ServiceContext) -> None:
    """Tell the auth service to resync now (call after committing a credential change)."""
    if ctx.bus is not None:
        await ctx.bus.publish(AUTH_CHANGED_SUBJECT, b"")
        with contextlib.suppress(Exception):
            await ctx.bus.flush(timeout=2)
