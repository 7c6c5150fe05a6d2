"""Who is calling, and may they: bearer tokens (API/CLI) or the web session cookie, checked per route.

Every route under /api/v1 declares its audience with exactly one dependency: `Allow(roles...)`, `AnyUser` or
`Public`. A test walks all routes and fails when one declares none, so no endpoint is open by accident.
Cookie sessions must also send the CSRF header on unsafe methods, because a browser attaches cookies to
cross-site requests on its own; bearer tokens need no such check. The CSRF token is a synchronizer token derived
from the session token with the platform secret (`csrf_token`): the page embeds it, and no script-readable cookie
carries it, so a web app's script (served from the apps origin, see `appsorigin`) has nothing to read.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from aiot.accounts.caller import Caller
from aiot.accounts.users import resolve_token, touch_token
from aiot.api.signing import app_secret, derived_token, tokens_match
from aiot.api.state import service_context
from aiot.errors import Forbidden, Unauthorized
from aiot.store.models import ApiToken, Role, User

SESSION_COOKIE = "aiot_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def csrf_token(request: Request, session_token: str) -> str:
    """The CSRF token of one browser session: only the platform (holding the secret) can compute it."""
    return derived_token(app_secret(request.app), "csrf", session_token)


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of one request."""

    user: User
    token: ApiToken
    via_cookie: bool

    @property
    def role(self) -> Role:
        return self.user.role

    @property
    def caller(self) -> Caller:
        """What the component rules need to know of the caller."""
        return Caller(user_id=self.user.id, is_admin=self.user.role == Role.admin)


def _presented_token(request: Request) -> tuple[str | None, bool]:
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("Authorization header must be 'Bearer <token>'")
        return value.strip(), False
    cookie = request.cookies.get(SESSION_COOKIE)
    return (cookie, True) if cookie else (None, False)


def authenticate_request(request: Request) -> Principal:
    token, via_cookie = _presented_token(request)
    if token is None:
        raise Unauthorized("authentication required: send 'Authorization: Bearer <token>' (see aiot login)")
    ctx = service_context(request)
    with ctx.db.session() as session:
        user, record = resolve_token(session, token)
        session.expunge_all()
    touch_token(ctx.db, record)
    if (
        via_cookie
        and request.method not in SAFE_METHODS
        and not tokens_match(request.headers.get(CSRF_HEADER, ""), csrf_token(request, token))
    ):
        raise Forbidden("missing or wrong CSRF token header for a cookie session", field=CSRF_HEADER)
    principal = Principal(user=user, token=record, via_cookie=via_cookie)
    request.state.principal = principal
    return principal


class Allow:
    """Dependency: the caller must be logged in with one of `roles` (403 otherwise, 401 when anonymous)."""

    def __init__(self, *roles: Role) -> None:
        self.roles = frozenset(roles)

    def __call__(self, request: Request) -> Principal:
        principal = authenticate_request(request)
        if principal.role not in self.roles:
            allowed = ", ".join(sorted(r.value for r in self.roles))
            raise Forbidden(f"this needs one of the roles: {allowed}; you are {principal.role.value}")
        return principal

    def __repr__(self) -> str:
        return f"Allow({', '.join(sorted(r.value for r in self.roles))})"


class _AnyUser(Allow):
    def __init__(self) -> None:
        super().__init__(*Role)

    def __repr__(self) -> str:
        return "AnyUser"


class _Public:
    """Dependency marking a route open to anonymous callers (login, health)."""

    roles: frozenset[Role] | None = None

    def __call__(self) -> None:
        return None

    def __repr__(self) -> str:
        return "Public"


def _presented_node_token(request: Request) -> str:
    """The node token the caller presents: none is 401, a person's valid token 403 (a bad one 401)."""
    from aiot.deployer.nodes import is_node_token

    token, _ = _presented_token(request)
    if token is None:
        raise Unauthorized("a node token is required (aiot node join)")
    if not is_node_token(token):
        authenticate_request(request)  # a valid person's token: 403 below; a bad one: 401 from here
        raise Forbidden("this endpoint is for node agents; people cannot call it")
    return token


class NodeOnly(Allow):
    """Dependency for the agent API: the caller must present a node token (`aiotnode.<id>.<secret>`).
    A person's token gets 403 (it is valid, just not for this), no token 401."""

    def __init__(self) -> None:
        super().__init__()

    def __call__(self, request: Request):  # type: ignore[override]
        from aiot.deployer.nodes import authenticate_node

        token = _presented_node_token(request)
        with service_context(request).db.session() as session:
            node = authenticate_node(session, token)
            session.expunge(node)
        return node

    def __repr__(self) -> str:
        return "NodeOnly"


class NodeTokenPresented(Allow):
    """Dependency for the agent's report: a node token must be presented (a person's token gets 403, none 401),
    but it is checked where the report is written (`aiot.deployer.reports`: in the batch's transaction, which
    reads the node's row anyway), not in a database session of its own per report."""

    def __init__(self) -> None:
        super().__init__()

    def __call__(self, request: Request) -> str:  # type: ignore[override]
        return _presented_node_token(request)

    def __repr__(self) -> str:
        return "NodeTokenPresented"


class JoinTokenOnly(Allow):
    """Dependency for node registration: the caller presents a join token (`aiotjoin.<id>.<secret>`)."""

    def __init__(self) -> None:
        super().__init__()

    def __call__(self, request: Request):  # type: ignore[override]
        from aiot.deployer.nodes import JOIN_PREFIX, check_join_token

        token, _ = _presented_token(request)
        if token is None:
            raise Unauthorized("a join token is required (an admin creates one: aiot node token)")
        if not token.startswith(JOIN_PREFIX + "."):
            authenticate_request(request)
            raise Forbidden("registering a node needs a join token, not a person's token")
        with service_context(request).db.session() as session:  # uses are counted (or resumed) on registration
            return check_join_token(session, token, used_up_ok=True).id

    def __repr__(self) -> str:
        return "JoinTokenOnly"


AnyUser = _AnyUser()
NodeAuth = NodeOnly()
NodeReportAuth = NodeTokenPresented()
JoinAuth = JoinTokenOnly()
Public = _Public()
AdminOnly = Allow(Role.admin)
