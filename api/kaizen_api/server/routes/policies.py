"""Access policies of an organization (Cedar): the published schema, CRUD for org
owners and admins, the policy mode, and a dry run ("would this request be allowed,
and by which policy?"). Every change bumps the set's version (other replicas pick it
up within ``policy_refresh_seconds``) and is audited like every mutation."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, IPvAnyAddress
from sqlmodel import Session, col, select

from kaizen_api.server import policies
from kaizen_api.server.access import (
    CurrentPrincipal,
    OrgAccess,
    Principal,
    org_access,
    team_names,
    workspace_access,
)
from kaizen_api.server.db import session
from kaizen_api.server.models import AccessPolicy, ApiKey, Membership, PolicySetState, User
from kaizen_api.server.permissions import PERMISSION_PATTERN
from kaizen_api.server.policy_engine import (
    POLICY_NAME,
    SCHEMA,
    Circumstances,
    InvalidPolicy,
    StoredPolicy,
    Subject,
    Target,
    compile_policies,
    decide,
    validate,
)
from kaizen_api.server.problems import API_PREFIX, PROBLEM_RESPONSES, Problem
from kaizen_api.server.routes.orgs import access_to, lock_org
from kaizen_api.server.security import Email
from kaizen_api.server.state import AppState, app_state

log = logging.getLogger("kaizen_api.policies")
router = APIRouter(prefix=API_PREFIX, responses=PROBLEM_RESPONSES, tags=["policies"])
State = Annotated[AppState, Depends(app_state)]
MAX_POLICIES = 500  # per organization
Mode = Literal["restrict", "permit-required"]


class PolicyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cedar: str = Field(
        min_length=1,
        description="One or more Cedar permit/forbid statements (schema: "
        "GET /api/v1/policies/schema).",
    )
    description: str = Field(default="", max_length=1000)


class PolicyOut(BaseModel):
    name: str
    description: str
    cedar: str
    statements: int
    updated_at: datetime
    updated_by: str


class PolicyList(BaseModel):
    mode: Mode
    version: int = Field(description="Bumped by every change of the organization's policies.")
    items: list[PolicyOut]


class ModeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Mode


class ModeOut(BaseModel):
    mode: Mode
    version: int


class SimulatedKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scopes: list[Annotated[str, Field(pattern=PERMISSION_PATTERN, max_length=64)]] = Field(
        min_length=1, max_length=50
    )
    workspace: str | None = None


class CandidatePolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=POLICY_NAME)
    cedar: str = Field(min_length=1)


class CheckIn(BaseModel):
    """A request to judge. Omitted: the caller, now, the caller's address."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    user: Email | None = Field(default=None, description="A member's email (default: you).")
    api_key: SimulatedKey | None = Field(
        default=None, alias="apiKey", description="Judge it as made with such an API key."
    )
    permission: str = Field(pattern=PERMISSION_PATTERN, max_length=64, examples=["agents:delete"])
    workspace: str | None = Field(default=None, max_length=30)
    name: str = Field(default="", max_length=253)
    labels: dict[str, str] = Field(default_factory=dict, max_length=64)
    target_environment: str = Field(default="", alias="targetEnvironment", max_length=63)
    method: str = Field(default="GET", max_length=10)
    time: datetime | None = None
    source_ip: IPvAnyAddress | None = Field(default=None, alias="sourceIp")
    policy: CandidatePolicy | None = Field(
        default=None, description="Judge as if this policy were saved (replacing its name)."
    )


class CheckOut(BaseModel):
    allowed: bool
    role_allowed: bool = Field(alias="roleAllowed")
    role_detail: str = Field(default="", alias="roleDetail")
    reason: str = Field(
        description="roles (no policy objected) | permitted | forbidden | not-permitted | "
        "error | no-policies | role-denied"
    )
    policies: list[str] = Field(description="The policies that decided it.")
    mode: Mode
    errors: list[str] = []

    model_config = ConfigDict(populate_by_name=True)


@router.get("/policies/schema", response_class=PlainTextResponse)
def policy_schema() -> PlainTextResponse:
    """The Cedar schema every policy is validated against (Cedar schema syntax)."""
    return PlainTextResponse(SCHEMA)


def _state_row(db: Session, org_id: str) -> PolicySetState:
    return db.get(PolicySetState, org_id) or PolicySetState(org_id=org_id)


def _bump(db: Session, access: OrgAccess, mode: str | None = None) -> PolicySetState:
    """The next version of the organization's set (its row locked by lock_org)."""
    row = _state_row(db, access.org.id)
    row.version += 1
    if mode is not None:
        row.mode = mode
    db.add(row)
    return row


def _out(row: AccessPolicy) -> PolicyOut:
    try:
        count = validate(row.cedar)
    except InvalidPolicy:  # stored before a schema change: still shown
        count = 0
    return PolicyOut(
        name=row.name,
        description=row.description,
        cedar=row.cedar,
        statements=count,
        updated_at=row.updated_at,
        updated_by=row.updated_by,
    )


def _invalid(exc: InvalidPolicy) -> Problem:
    return Problem(
        422,
        "invalid-policy",
        "The policy is not valid Cedar for this schema",
        "; ".join(exc.errors),
        errors=[{"message": e} for e in exc.errors],
    )


@router.get("/orgs/{org}/policies", response_model=PolicyList)
def list_policies(org: str, principal: CurrentPrincipal, state: State) -> PolicyList:
    with session(state.engine) as db:
        access = access_to(db, principal, org, "policies:read")
        row = _state_row(db, access.org.id)
        rows = db.exec(
            select(AccessPolicy)
            .where(AccessPolicy.org_id == access.org.id)
            .order_by(col(AccessPolicy.name))
        ).all()
    return PolicyList(mode=row.mode, version=row.version, items=[_out(r) for r in rows])  # type: ignore[arg-type]


def _find(db: Session, access: OrgAccess, name: str) -> AccessPolicy:
    row = db.exec(
        select(AccessPolicy).where(AccessPolicy.org_id == access.org.id, AccessPolicy.name == name)
    ).first()
    if row is None:
        raise Problem(404, "not-found", "No such policy", f"policy {name!r} in {access.org.slug}")
    return row


@router.get("/orgs/{org}/policies/{name}", response_model=PolicyOut)
def get_policy(org: str, name: str, principal: CurrentPrincipal, state: State) -> PolicyOut:
    with session(state.engine) as db:
        access = access_to(db, principal, org, "policies:read")
        return _out(_find(db, access, name))


@router.put("/orgs/{org}/policies/{name}", response_model=PolicyOut)
def put_policy(
    org: str,
    name: str,
    body: PolicyIn,
    principal: CurrentPrincipal,
    state: State,
    response: Response,
) -> PolicyOut:
    """Create or replace a policy; refused (422, the engine's message) unless it
    parses and validates against the schema."""
    import re

    if not re.match(POLICY_NAME, name):
        raise Problem(
            422, "invalid-request", "Bad policy name", "lower-case letters, digits and '-'"
        )
    with session(state.engine) as db:
        access = access_to(db, principal, org, "policies:update")
        try:
            validate(body.cedar)
        except InvalidPolicy as exc:
            raise _invalid(exc) from exc
        lock_org(db, access.org)  # changes of one organization's set take turns
        row = db.exec(
            select(AccessPolicy).where(
                AccessPolicy.org_id == access.org.id, AccessPolicy.name == name
            )
        ).first()
        now = datetime.now(UTC)
        if row is None:
            count = len(
                db.exec(select(AccessPolicy.id).where(AccessPolicy.org_id == access.org.id)).all()
            )
            if count >= MAX_POLICIES:
                raise Problem(
                    403,
                    "quota-exceeded",
                    "Too many policies",
                    f"an organization has at most {MAX_POLICIES} policies",
                )
            row = AccessPolicy(org_id=access.org.id, name=name, cedar=body.cedar)
            response.status_code = 201
        row.cedar, row.description = body.cedar, body.description
        row.updated_at, row.updated_by = now, principal.user.email
        db.add(row)
        version = _bump(db, access).version
    state.policies.invalidate(access.org.id)
    log.info("policy %s of %s set by %s (version %d)", name, org, principal.user.email, version)
    return _out(row)


@router.delete("/orgs/{org}/policies/{name}", status_code=204)
def delete_policy(org: str, name: str, principal: CurrentPrincipal, state: State) -> Response:
    with session(state.engine) as db:
        access = access_to(db, principal, org, "policies:delete")
        lock_org(db, access.org)
        db.delete(_find(db, access, name))
        version = _bump(db, access).version
    state.policies.invalidate(access.org.id)
    log.info("policy %s of %s deleted by %s (version %d)", name, org, principal.user.email, version)
    return Response(status_code=204)


@router.get("/orgs/{org}/policy-mode", response_model=ModeOut)
def get_mode(org: str, principal: CurrentPrincipal, state: State) -> ModeOut:
    with session(state.engine) as db:
        access = access_to(db, principal, org, "policies:read")
        row = _state_row(db, access.org.id)
    return ModeOut(mode=row.mode, version=row.version)  # type: ignore[arg-type]


@router.put("/orgs/{org}/policy-mode", response_model=ModeOut)
def set_mode(org: str, body: ModeIn, principal: CurrentPrincipal, state: State) -> ModeOut:
    """restrict (default): policies can only forbid what roles allow. permit-required:
    a request also needs a permit policy."""
    with session(state.engine) as db:
        access = access_to(db, principal, org, "policies:update")
        lock_org(db, access.org)
        row = _bump(db, access, body.mode)
    state.policies.invalidate(access.org.id)
    log.info("policy mode of %s set to %s by %s", org, body.mode, principal.user.email)
    return ModeOut(mode=row.mode, version=row.version)  # type: ignore[arg-type]


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _simulated(db: Session, access: OrgAccess, body: CheckIn, caller: Principal) -> Principal:
    """The principal the dry run judges: a member (default the caller), with a
    made-up API key if asked (never stored)."""
    user = caller.user
    if body.user is not None:
        found = db.exec(
            select(User)
            .join(Membership, col(Membership.user_id) == col(User.id))
            .where(User.email == body.user.lower(), Membership.org_id == access.org.id)
        ).first()
        if found is None:
            raise Problem(
                422, "not-a-member", "Not a member", f"{body.user} is not in {access.org.slug}"
            )
        user = found
    key = None
    if body.api_key is not None:
        workspace_id = None
        if body.api_key.workspace:
            workspace_id = workspace_access(db, access, body.api_key.workspace).workspace.id
        key = ApiKey(
            id="simulated",
            prefix="simulated",
            secret_hash="",
            name="simulated",
            org_id=access.org.id,
            workspace_id=workspace_id,
            user_id=user.id,
            permissions=list(body.api_key.scopes),
        )
    return Principal(user, key)


@router.post("/orgs/{org}/policy-check", response_model=CheckOut, response_model_by_alias=True)
def check(
    org: str, body: CheckIn, request: Request, principal: CurrentPrincipal, state: State
) -> CheckOut:
    """Dry run: would this request be allowed, and by which policy? Roles and key
    scopes first (as on every route), then the organization's policies."""
    with session(state.engine) as db:
        access = access_to(db, principal, org, "policies:read")
        subject_principal = _simulated(db, access, body, principal)
        with policies.outside_request():
            sim = org_access(db, subject_principal, org)
            ws_access = workspace_access(db, sim, body.workspace) if body.workspace else None
            role_detail = ""
            try:
                (ws_access or sim).require(body.permission)
            except Problem as exc:
                role_detail = exc.detail or exc.title
        row = _state_row(db, access.org.id)
        stored = [
            StoredPolicy(r.name, r.cedar)
            for r in db.exec(select(AccessPolicy).where(AccessPolicy.org_id == access.org.id))
            if body.policy is None or r.name != body.policy.name
        ]
        teams = tuple(team_names(db, access.org, subject_principal.user))
    if body.policy is not None:
        try:
            validate(body.policy.cedar)
        except InvalidPolicy as exc:
            raise _invalid(exc) from exc
        stored.append(StoredPolicy(body.policy.name, body.policy.cedar))
    compiled = compile_policies(stored, row.mode, row.version)
    key = subject_principal.key
    subject = Subject(
        id=subject_principal.user.id,
        email=subject_principal.user.email.lower(),
        role=sim.role,
        workspace_role=(ws_access.role or "") if ws_access else "",
        teams=teams,
        key_scopes=tuple(key.permissions) if key else None,
        key_workspace=(body.api_key.workspace or "") if body.api_key else "",
    )
    target = Target(
        kind=body.permission.partition(":")[0],
        name=body.name,
        workspace=body.workspace or "",
        labels=body.labels,
        target_environment=body.target_environment,
    )
    circumstances = Circumstances(
        permission=body.permission,
        method=body.method.upper(),
        now=_utc(body.time or datetime.now(UTC)),
        source_ip=str(body.source_ip) if body.source_ip else policies.source_ip(request.scope),
    )
    decision = decide(compiled, subject, target, circumstances)
    return CheckOut(
        allowed=decision.allowed and not role_detail,
        roleAllowed=not role_detail,
        roleDetail=role_detail,
        reason=decision.reason if not role_detail else "role-denied",
        policies=list(decision.policies),
        mode=compiled.mode,  # type: ignore[arg-type]
        errors=list(decision.errors),
    )
