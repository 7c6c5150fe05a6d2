"""Typed dependencies for routes: the service context and the caller, as `Annotated` aliases.

Routes name what they need in their signature (`ctx: Ctx`, `principal: CurrentUser`) instead of reaching into
`request.app.state`, so a route's inputs are visible in one place and a test can override one dependency. The
database session is not a dependency on purpose: routes open it with `ctx.db.session()` where the transaction
must end (several commit, then tell NATS or the deployer), which a yield-dependency would run after the answer.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from aiot.api.security import AnyUser, Principal
from aiot.api.state import service_context
from aiot.services.contract import ServiceContext

Ctx = Annotated[ServiceContext, Depends(service_context)]
CurrentUser = Annotated[Principal, Depends(AnyUser)]
