"""Users: register, log in, refresh (rotating), log out; the JWKS of the signing keys."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session, col, select, update

from kaizen_api.server.access import CurrentPrincipal
from kaizen_api.server.db import session
from kaizen_api.server.models import Membership, Organization, RefreshToken, User, new_id
from kaizen_api.server.problems import API_PREFIX, PROBLEM_RESPONSES, Problem
from kaizen_api.server.security import Email, HashingBusy, InvalidToken, token_claims
from kaizen_api.server.state import AppState, app_state
from kaizen_api.server.throttle import client_address

router = APIRouter(prefix=API_PREFIX, responses=PROBLEM_RESPONSES, tags=["users"])
State = Annotated[AppState, Depends(app_state)]


class Register(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Email
    password: str = Field(min_length=12, max_length=256, description="At least 12 characters.")
    name: str = Field(default="", max_length=200)


class Login(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Email
    password: str = Field(max_length=256)


class RefreshRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    refresh_token: str = Field(max_length=4096)


class Tokens(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "Bearer"  # noqa: S105 - the scheme's name, not a secret
    expires_in: int


class UserOut(BaseModel):
    id: str
    email: str
    name: str


class OrgRole(BaseModel):
    slug: str
    name: str
    role: str


class Me(UserOut):
    organizations: list[OrgRole]


def _issue(state: AppState, user: User, family: str) -> Tokens:
    s = state.settings
    access = token_claims(
        user.id,
        "access",
        s.access_ttl_seconds,
        issuer=s.issuer,
        audience=s.audience,
        email=user.email,
    )
    refresh = token_claims(
        user.id,
        "refresh",
        s.refresh_ttl_seconds,
        issuer=s.issuer,
        audience=s.audience,
        fam=family,
    )
    with session(state.engine) as db:
        db.add(
            RefreshToken(
                jti=refresh["jti"], family=family, user_id=user.id, expires_at=refresh["exp"]
            )
        )
    return Tokens(
        access_token=state.keys.sign(access),
        refresh_token=state.keys.sign(refresh),
        expires_in=s.access_ttl_seconds,
    )


def _busy() -> Problem:
    return Problem(
        503,
        "busy",
        "Too many password checks at once",
        "the facade bounds simultaneous password hashing; retry shortly",
        headers={"retry-after": "2"},
    )


@router.post("/auth/register", status_code=201, response_model=UserOut)
def register(body: Register, request: Request, state: State) -> UserOut:
    """A new user. Registrations are limited per client address; the password is
    hashed before the address is looked up, so a taken address answers no faster."""
    email = body.email.lower()
    request.state.actor = email
    if state.register_limiter is not None:
        wait = state.register_limiter.hit(client_address(request))
        if wait:
            raise Problem(
                429,
                "too-many-registrations",
                "Too many registrations",
                f"{state.register_limiter.limit} registrations within "
                f"{state.register_limiter.window:g}s from this address; retry in {wait}s",
                headers={"retry-after": str(wait)},
            )
    try:
        password_hash = state.passwords.hash(body.password)
    except HashingBusy as exc:
        raise _busy() from exc
    with session(state.engine) as db:
        if db.exec(select(User).where(User.email == email)).first():
            raise Problem(409, "email-taken", "This email is registered", "log in instead")
        user = User(email=email, name=body.name, password_hash=password_hash)
        db.add(user)
    return UserOut(id=user.id, email=user.email, name=user.name)


@router.post("/auth/login", response_model=Tokens)
def login(body: Login, request: Request, state: State) -> Tokens:
    """Tokens for the right password. Failures are counted per client address and per
    account (throttle.AuthThrottle.check_login); an unknown email costs the same
    password check as a wrong password."""
    email = body.email.lower()
    request.state.actor = email
    address = client_address(request)
    state.auth_throttle.check_login(address, email)
    with session(state.engine) as db:
        user = db.exec(select(User).where(User.email == email)).first()
    try:
        right = state.passwords.verify(user.password_hash if user else None, body.password)
    except HashingBusy as exc:
        raise _busy() from exc
    if user is None or user.disabled or not right:
        state.auth_throttle.login_failed(address, email)
        raise Problem(401, "invalid-credentials", "Wrong email or password")
    return _issue(state, user, new_id())


@router.post("/auth/refresh", response_model=Tokens)
def refresh(body: RefreshRequest, request: Request, state: State) -> Tokens:
    """A new access and refresh token; the refresh token given is spent. Presenting a
    spent one again revokes its whole family (it was stolen or replayed)."""
    s = state.settings
    try:
        claims = state.keys.verify(
            body.refresh_token, audience=s.audience, issuer=s.issuer, kind="refresh"
        )
    except InvalidToken as exc:
        raise Problem(401, "invalid-token", "Invalid refresh token", str(exc)) from exc
    now = datetime.now(UTC)
    with session(state.engine) as db:
        record = db.get(RefreshToken, claims["jti"])
        user = db.get(User, claims["sub"])
        if record is None or user is None or user.disabled:
            raise Problem(401, "invalid-token", "Invalid refresh token", "unknown token")
        request.state.actor = user.email
        # Spent by a conditional UPDATE: of simultaneous uses exactly one changes the
        # row (the others wait for its lock, then match nothing) and the rest count
        # as reuse.
        spent = db.exec(
            update(RefreshToken)
            .where(
                col(RefreshToken.jti) == record.jti,
                col(RefreshToken.used_at).is_(None),
                col(RefreshToken.revoked_at).is_(None),
            )
            .values(used_at=now)
        )
        reused = spent.rowcount != 1
        if reused:  # revoke the whole login; committed before answering
            revoke_family(db, record.family, now)
    if reused:
        raise Problem(
            401,
            "token-reused",
            "Refresh token already used",
            "this login was revoked because a spent refresh token was presented again",
        )
    return _issue(state, user, record.family)


def revoke_family(db: Session, family: str, now: datetime) -> None:
    """Revoke every refresh token of one login."""
    for token in db.exec(select(RefreshToken).where(RefreshToken.family == family)):
        token.revoked_at = token.revoked_at or now
        db.add(token)


@router.post("/auth/logout", status_code=204)
def logout(body: RefreshRequest, request: Request, state: State) -> Response:
    """Revoke the login (every refresh token of its family)."""
    s = state.settings
    try:
        claims = state.keys.verify(
            body.refresh_token, audience=s.audience, issuer=s.issuer, kind="refresh"
        )
    except InvalidToken as exc:
        raise Problem(401, "invalid-token", "Invalid refresh token", str(exc)) from exc
    now = datetime.now(UTC)
    with session(state.engine) as db:
        record = db.get(RefreshToken, claims["jti"])
        if record is not None:
            revoke_family(db, record.family, now)
    request.state.actor = claims.get("sub")
    return Response(status_code=204)


@router.get("/auth/me", response_model=Me)
def me(principal: CurrentPrincipal, state: State) -> Me:
    query = (
        select(Organization, Membership.role)
        .join(Membership, col(Membership.org_id) == col(Organization.id))
        .where(Membership.user_id == principal.user.id)
    )
    if principal.key is not None:  # a key sees only its own organization
        query = query.where(col(Membership.org_id) == principal.key.org_id)
    with session(state.engine) as db:
        rows = db.exec(query).all()
    user = principal.user
    return Me(
        id=user.id,
        email=user.email,
        name=user.name,
        organizations=[OrgRole(slug=o.slug, name=o.name, role=r) for o, r in rows],
    )


jwks_router = APIRouter(tags=["users"])


@jwks_router.get("/.well-known/jwks.json")
def jwks(state: State) -> dict[str, Any]:
    """Public keys that verify the facade's tokens (all keys still in rotation)."""
    return state.keys.jwks()
