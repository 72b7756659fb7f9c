"""Who is calling and what they may do: bearer JWTs and API keys become a Principal;
an organization or workspace path becomes an Access with the caller's effective role,
the facade's permission check, and the Kubernetes identity to impersonate."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

import jwt
from fastapi import Depends, Request
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool

from kaizen_api.server import policies
from kaizen_api.server.audit import member_of
from kaizen_api.server.db import aware, session
from kaizen_api.server.kube import Caller
from kaizen_api.server.models import (
    ApiKey,
    Membership,
    Organization,
    Team,
    TeamMember,
    User,
    Workspace,
    WorkspaceMember,
)
from kaizen_api.server.permissions import (
    ORG_ROLES,
    ORG_WIDE,
    WORKSPACE_ROLES,
    grants,
    strongest,
)
from kaizen_api.server.problems import Problem
from kaizen_api.server.security import InvalidToken, api_key_matches, split_api_key
from kaizen_api.server.state import AppState, app_state
from kaizen_api.server.tenancy import org_group, team_group, user_name
from kaizen_api.server.throttle import client_address


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a user, possibly through one of their API keys."""

    user: User
    key: ApiKey | None = None
    valid_until: datetime | None = None  # the token's or key's expiry


class Unauthorized(Problem):
    """401 for bearer credentials. ``guess``: the credential was not genuine (an unknown
    API key, a forged or malformed token), which the brute-force throttle counts; a
    genuine but stale one (expired, revoked, its user disabled) proves possession and
    is not counted, so clients refreshing expired tokens do not lock out their address."""

    def __init__(self, detail: str, *, guess: bool) -> None:
        super().__init__(
            401,
            "unauthorized",
            "Authentication required",
            detail,
            headers={"www-authenticate": 'Bearer realm="kaizen-api"'},
        )
        self.guess = guess


def _unauthorized(detail: str, *, guess: bool = False) -> Unauthorized:
    return Unauthorized(detail, guess=guess)


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("send Authorization: Bearer <access token or API key>")
    return token


def authenticate(token: str, state: AppState) -> Principal:
    """Who a bearer access token or API key belongs to, or 401 (reads the database)."""
    now = datetime.now(UTC)
    parts = split_api_key(token)
    with session(state.engine) as db:
        if parts is not None:
            key = db.exec(select(ApiKey).where(ApiKey.prefix == parts[0])).first()
            if key is None or not api_key_matches(parts[1], key.secret_hash):
                raise _unauthorized("unknown API key", guess=True)
            if key.revoked_at is not None:
                raise _unauthorized("this API key was revoked")
            if key.expires_at is not None and aware(key.expires_at) <= now:
                raise _unauthorized("this API key expired")
            key.last_used_at = now
            db.add(key)
            user = db.get(User, key.user_id)
            valid_until = aware(key.expires_at) if key.expires_at else None
        else:
            try:
                claims = state.keys.verify(
                    token,
                    audience=state.settings.audience,
                    issuer=state.settings.issuer,
                    kind="access",
                )
            except InvalidToken as exc:
                stale = isinstance(exc.__cause__, jwt.ExpiredSignatureError)  # signature good
                raise _unauthorized(f"invalid access token: {exc}", guess=not stale) from exc
            user = db.get(User, claims["sub"])
            key = None
            valid_until = datetime.fromtimestamp(claims["exp"], UTC)
        if user is None or user.disabled:
            raise _unauthorized("the user does not exist or is disabled")
        return Principal(user, key, valid_until)


class PrincipalCache:
    """Principals by token for a few seconds, so most requests skip the database and a
    thread hop. A revoked key is dropped at once here; other replicas see a revocation
    within ``ttl`` seconds. ``last_used_at`` is updated at most once per ``ttl``."""

    def __init__(self, ttl: float = 5.0, size: int = 10_000) -> None:
        self.ttl, self.size = ttl, size
        self._items: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def get(self, token: str) -> Principal | None:
        with self._lock:
            item = self._items.get(token)
        if item is None or item[0] < time.monotonic():
            return None
        principal = item[1]
        if principal.valid_until is not None and principal.valid_until <= datetime.now(UTC):
            return None
        return principal

    def put(self, token: str, principal: Principal) -> None:
        with self._lock:
            if len(self._items) >= self.size:
                self._items.clear()
            self._items[token] = (time.monotonic() + self.ttl, principal)

    def forget_key(self, key_id: str) -> None:
        with self._lock:
            for token in [t for t, (_, p) in self._items.items() if p.key and p.key.id == key_id]:
                del self._items[token]


def authenticate_throttled(token: str, state: AppState, counted: str) -> Principal:
    """:func:`authenticate` behind the brute-force throttle of ``counted`` (the client's
    address): 429 past its failures, and a wrong guess counted (reads the database)."""
    state.auth_throttle.check(counted)
    try:
        return authenticate(token, state)
    except Unauthorized as exc:
        if exc.guess:
            state.auth_throttle.failed(counted)
        raise


async def current_principal(
    request: Request, state: Annotated[AppState, Depends(app_state)]
) -> Principal:
    """The caller; 401 without valid credentials, 429 when an API key is over its limit
    or the client's address has made too many failed attempts (even with a valid
    credential: otherwise a throttled guesser would still learn which guess is right).
    The throttle is consulted whenever the credential is not one this replica accepted
    in the last seconds: a guess never is one."""
    token = bearer_token(request)
    principal = state.principals.get(token)
    if principal is None:
        counted = f"token-address:{client_address(request)}"
        principal = await run_in_threadpool(authenticate_throttled, token, state, counted)
        state.principals.put(token, principal)
    request.state.actor = principal.user.email  # refused requests below are theirs too
    if principal.key is not None:
        wait = await run_in_threadpool(state.key_limiter.hit, principal.key.id)
        if wait:
            raise Problem(
                429,
                "rate-limited",
                "Too many requests for this API key",
                f"limit {state.key_limiter.limit} per minute; retry in {wait}s",
                headers={"retry-after": str(wait)},
            )
        request.state.key_id = principal.key.id
    else:  # a user's bearer tokens share one limit, counted like a key's
        wait = await run_in_threadpool(state.user_limiter.hit, principal.user.id)
        if wait:
            raise Problem(
                429,
                "rate-limited",
                "Too many requests for this user",
                f"limit {state.user_limiter.limit} per minute; retry in {wait}s",
                headers={"retry-after": str(wait)},
            )
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


@dataclass(frozen=True)
class OrgAccess:
    """The caller's standing in one organization."""

    principal: Principal
    org: Organization
    role: str  # organization role

    def require(self, permission: str) -> None:
        """403 unless both the role and (for a key) the key's scope grant ``permission``.
        An organization-level permission is never granted to a key limited to one
        workspace (M-H6): such a key acts only through :class:`WorkspaceAccess`."""
        key = self.principal.key
        if key is not None and key.workspace_id is not None:
            raise Problem(
                403,
                "workspace-scoped-key",
                "Not allowed for a workspace key",
                f"this API key is limited to one workspace; {permission} in organization "
                f"{self.org.slug} needs an organization-wide key or your own login",
            )
        if not grants(ORG_ROLES[self.role], permission):
            raise Problem(
                403,
                "forbidden",
                "Not allowed",
                f"your role {self.role} in {self.org.slug} does not grant {permission}",
            )
        if key is not None and not grants(key.permissions, permission):
            raise Problem(
                403, "forbidden", "Not allowed", f"this API key's scope does not grant {permission}"
            )
        policies.enforce(self.principal, self.org, self.role, permission)  # after the roles


def org_access(db: Session, principal: Principal, slug: str) -> OrgAccess:
    """The caller's membership of ``slug``; 404 for organizations they are not in (so
    other tenants' names do not leak), and for keys of another organization."""
    org = db.exec(select(Organization).where(Organization.slug == slug)).first()
    membership = (
        db.exec(
            select(Membership).where(
                Membership.org_id == org.id, Membership.user_id == principal.user.id
            )
        ).first()
        if org
        else None
    )
    if (
        org is None
        or membership is None
        or (principal.key is not None and principal.key.org_id != org.id)
    ):
        raise Problem(404, "not-found", "No such organization", f"organization {slug!r}")
    member_of(org.slug)  # this request belongs in the organization's audit view
    return OrgAccess(principal, org, membership.role)


@dataclass(frozen=True)
class WorkspaceAccess:
    """The caller's standing in one workspace, and whom to impersonate there."""

    org: OrgAccess
    workspace: Workspace
    role: str | None  # workspace role; None: no access
    caller: Caller

    @property
    def namespace(self) -> str:
        return self.workspace.namespace

    def require(self, permission: str) -> None:
        """403 unless the workspace role and (for a key) its scope grant ``permission``."""
        if self.role is None:
            raise Problem(
                403,
                "forbidden",
                "Not a member of this workspace",
                f"you have no role in workspace {self.workspace.name!r}",
            )
        if not grants(WORKSPACE_ROLES[self.role], permission):
            raise Problem(
                403,
                "forbidden",
                "Not allowed",
                f"your role {self.role} in workspace {self.workspace.name!r} "
                f"does not grant {permission}",
            )
        key = self.org.principal.key
        if key is not None:
            if key.workspace_id not in (None, self.workspace.id):
                raise Problem(
                    403, "forbidden", "Not allowed", "this API key is scoped to another workspace"
                )
            if not grants(key.permissions, permission):
                raise Problem(
                    403,
                    "forbidden",
                    "Not allowed",
                    f"this API key's scope does not grant {permission}",
                )
        policies.enforce(self.org.principal, self.org.org, self.org.role, permission, self)


def team_names(db: Session, org: Organization, user: User) -> list[str]:
    rows = db.exec(
        select(Team.name)
        .join(TeamMember, col(TeamMember.team_id) == col(Team.id))
        .where(Team.org_id == org.id, TeamMember.user_id == user.id)
    ).all()
    return sorted(rows)


def caller_for(db: Session, access: OrgAccess) -> Caller:
    """The Kubernetes user and groups of the caller in this organization only."""
    slug = access.org.slug
    groups = [org_group(slug), org_group(slug, access.role)]
    groups += [team_group(slug, t) for t in team_names(db, access.org, access.principal.user)]
    return Caller(user_name(access.principal.user.email), tuple(groups))


def workspace_access(db: Session, access: OrgAccess, name: str) -> WorkspaceAccess:
    ws = db.exec(
        select(Workspace).where(Workspace.org_id == access.org.id, Workspace.name == name)
    ).first()
    if ws is None:
        raise Problem(404, "not-found", "No such workspace", f"workspace {name!r}")
    roles = [ORG_WIDE[access.role]] if access.role in ORG_WIDE else []
    user = access.principal.user
    team_ids = db.exec(
        select(Team.id)
        .join(TeamMember, col(TeamMember.team_id) == col(Team.id))
        .where(Team.org_id == access.org.id, TeamMember.user_id == user.id)
    ).all()
    for member in db.exec(select(WorkspaceMember).where(WorkspaceMember.workspace_id == ws.id)):
        if (member.subject_kind == "user" and member.subject_id == user.id) or (
            member.subject_kind == "team" and member.subject_id in team_ids
        ):
            roles.append(member.role)
    return WorkspaceAccess(access, ws, strongest(roles), caller_for(db, access))


async def forget_accesses(
    request: Request, state: Annotated[AppState, Depends(app_state)]
) -> AsyncIterator[None]:
    """After a change to memberships, teams or workspaces, drop remembered access."""
    yield
    if request.method in ("POST", "PUT", "PATCH", "DELETE"):
        state.accesses.clear()
