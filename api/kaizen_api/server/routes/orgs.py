"""Organizations, their members, invitations and teams."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session, col, func, select

from kaizen_api.server.access import (
    CurrentPrincipal,
    OrgAccess,
    Principal,
    forget_accesses,
    org_access,
)
from kaizen_api.server.audit import member_of
from kaizen_api.server.db import aware, session
from kaizen_api.server.events import emit_event
from kaizen_api.server.models import (
    ApiKey,
    Invitation,
    Membership,
    Organization,
    Team,
    TeamMember,
    User,
    Workspace,
    WorkspaceMember,
)
from kaizen_api.server.problems import API_PREFIX, PROBLEM_RESPONSES, Problem
from kaizen_api.server.security import Email, sha256_hex
from kaizen_api.server.state import AppState, app_state
from kaizen_api.server.tenancy import PLANS
from kaizen_api.server.workspaces import sync_workspace

router = APIRouter(
    prefix=API_PREFIX,
    responses=PROBLEM_RESPONSES,
    tags=["organizations"],
    dependencies=[Depends(forget_accesses)],
)
State = Annotated[AppState, Depends(app_state)]
SLUG = r"^[a-z0-9]([-a-z0-9]{0,18}[a-z0-9])?$"
OrgRoleName = Literal["org_owner", "org_admin", "developer", "viewer", "billing_admin"]


class OrgIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slug: str = Field(pattern=SLUG, description="DNS label, at most 20 characters.")
    name: str = Field(min_length=1, max_length=200)
    plan: Literal["free", "pro", "enterprise"] = "free"


class OrgOut(BaseModel):
    slug: str
    name: str
    plan: str
    role: str


class MemberIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Email
    role: OrgRoleName


class MemberOut(BaseModel):
    user_id: str
    email: str
    role: str


class InvitationIn(MemberIn):
    pass


class InvitationOut(BaseModel):
    id: str
    email: str
    role: str
    token: str = Field(description="Shown once; the invitee accepts with it.")
    expires_at: datetime


class AcceptIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(max_length=200)


class TeamIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=SLUG)


class TeamOut(BaseModel):
    name: str
    members: list[str]


class TeamMemberIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Email


def access_to(db: Session, principal: Principal, slug: str, permission: str) -> OrgAccess:
    access = org_access(db, principal, slug)
    access.require(permission)
    return access


def lock_org(db: Session, org: Organization) -> None:
    """Hold the organization's row until the transaction ends, so that concurrent
    requests counting against a plan limit take turns (PostgreSQL: FOR UPDATE; SQLite
    has one writer at a time and refuses a stale one)."""
    db.exec(select(Organization.id).where(Organization.id == org.id).with_for_update()).one()


def _check_user_quota(db: Session, org: Organization) -> None:
    limit = PLANS[org.plan]["users"]
    if limit is None:
        return
    lock_org(db, org)
    count = db.exec(select(func.count()).where(Membership.org_id == org.id)).one()
    if count >= limit:
        raise Problem(
            403,
            "quota-exceeded",
            "The organization's plan quota is used up",
            f"plan {org.plan} allows {limit} users (quota: users); upgrade the plan",
            quota="users",
        )


def _member_data(user: User | None, role: str, by: Principal) -> dict[str, str]:
    """An event's data about a member (and who changed it)."""
    return {
        "userId": user.id if user else "",
        "email": user.email if user else "",
        "role": role,
        "actor": by.user.email,
    }


def _owners(db: Session, org: Organization) -> int:
    return int(
        db.exec(
            select(func.count()).where(Membership.org_id == org.id, Membership.role == "org_owner")
        ).one()
    )


@router.post("/orgs", status_code=201, response_model=OrgOut)
def create_org(body: OrgIn, request: Request, principal: CurrentPrincipal, state: State) -> OrgOut:
    if principal.key is not None:
        raise Problem(403, "forbidden", "Not allowed", "API keys cannot create organizations")
    if not state.settings.self_service(body.plan) and not state.settings.is_platform_admin(
        principal.user.email
    ):
        raise Problem(
            403,
            "plan-not-self-service",
            "This plan is set by a platform administrator",
            f"plan {body.plan} is not self-service (allowed: {state.settings.self_service_plans});"
            " create the organization on one of those and ask for the change",
        )
    with session(state.engine) as db:
        if db.exec(select(Organization).where(Organization.slug == body.slug)).first():
            raise Problem(409, "conflict", "Organization exists", f"slug {body.slug!r} is taken")
        org = Organization(slug=body.slug, name=body.name, plan=body.plan)
        db.add(org)
        db.flush()
        db.add(Membership(org_id=org.id, user_id=principal.user.id, role="org_owner"))
    member_of(org.slug)  # the creation opens the new organization's audit view
    return OrgOut(slug=org.slug, name=org.name, plan=org.plan, role="org_owner")


@router.get("/orgs", response_model=list[OrgOut])
def list_orgs(principal: CurrentPrincipal, state: State) -> list[OrgOut]:
    with session(state.engine) as db:
        query = (
            select(Organization, Membership.role)
            .join(Membership, col(Membership.org_id) == col(Organization.id))
            .where(Membership.user_id == principal.user.id)
        )
        if principal.key is not None:
            query = query.where(Organization.id == principal.key.org_id)
        rows = db.exec(query.order_by(Organization.slug)).all()
    return [OrgOut(slug=o.slug, name=o.name, plan=o.plan, role=r) for o, r in rows]


@router.get("/orgs/{org}", response_model=OrgOut)
def get_org(org: str, principal: CurrentPrincipal, state: State) -> OrgOut:
    with session(state.engine) as db:
        access = access_to(db, principal, org, "orgs:read")
    o = access.org
    return OrgOut(slug=o.slug, name=o.name, plan=o.plan, role=access.role)


class PlanIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plan: Literal["free", "pro", "enterprise"]


@router.put("/orgs/{org}/plan", response_model=OrgOut)
def set_plan(org: str, body: PlanIn, principal: CurrentPrincipal, state: State) -> OrgOut:
    """Change an organization's plan (platform administrators only, with their own
    login): the workspaces' quotas follow."""
    if principal.key is not None or not state.settings.is_platform_admin(principal.user.email):
        raise Problem(
            403,
            "platform-admin-only",
            "Only a platform administrator changes plans",
            "plans are billing decisions; organization owners cannot change their own",
        )
    with session(state.engine) as db:
        found = db.exec(select(Organization).where(Organization.slug == org)).first()
        if found is None:
            raise Problem(404, "not-found", "No such organization", f"organization {org!r}")
        member_of(found.slug)
        found.plan = body.plan
        db.add(found)
        db.flush()
        for ws in db.exec(select(Workspace).where(Workspace.org_id == found.id)).all():
            sync_workspace(state.kube, db, found, ws)
    return OrgOut(slug=found.slug, name=found.name, plan=found.plan, role="platform_admin")


@router.get("/orgs/{org}/members", response_model=list[MemberOut])
def list_members(org: str, principal: CurrentPrincipal, state: State) -> list[MemberOut]:
    with session(state.engine) as db:
        access = access_to(db, principal, org, "orgs:read")
        rows = db.exec(
            select(User, Membership.role)
            .join(Membership, col(Membership.user_id) == col(User.id))
            .where(Membership.org_id == access.org.id)
            .order_by(User.email)
        ).all()
    return [MemberOut(user_id=u.id, email=u.email, role=r) for u, r in rows]


@router.post("/orgs/{org}/members", status_code=201, response_model=MemberOut)
def add_member(org: str, body: MemberIn, principal: CurrentPrincipal, state: State) -> MemberOut:
    """Add a registered user (others get an invitation)."""
    with session(state.engine) as db:
        access = access_to(db, principal, org, "members:create")
        if body.role == "org_owner" and access.role != "org_owner":
            raise Problem(403, "forbidden", "Not allowed", "only an org_owner can add owners")
        user = db.exec(select(User).where(User.email == body.email.lower())).first()
        if user is None:
            raise Problem(
                404,
                "not-found",
                "No such user",
                f"{body.email} has not registered; send an invitation instead",
            )
        existing = db.exec(
            select(Membership).where(
                Membership.org_id == access.org.id, Membership.user_id == user.id
            )
        ).first()
        if existing is not None:
            raise Problem(409, "conflict", "Already a member", f"{user.email} is a member")
        _check_user_quota(db, access.org)
        db.add(Membership(org_id=access.org.id, user_id=user.id, role=body.role))
        emit_event(db, access.org, "member.added", _member_data(user, body.role, principal))
    return MemberOut(user_id=user.id, email=user.email, role=body.role)


@router.put("/orgs/{org}/members/{user_id}", response_model=MemberOut)
def change_member(
    org: str, user_id: str, body: MemberIn, principal: CurrentPrincipal, state: State
) -> MemberOut:
    with session(state.engine) as db:
        access = access_to(db, principal, org, "members:update")
        membership = db.exec(
            select(Membership).where(
                Membership.org_id == access.org.id, Membership.user_id == user_id
            )
        ).first()
        if membership is None:
            raise Problem(404, "not-found", "No such member", user_id)
        if "org_owner" in (body.role, membership.role) and access.role != "org_owner":
            raise Problem(403, "forbidden", "Not allowed", "only an org_owner can change owners")
        if (
            membership.role == "org_owner"
            and body.role != "org_owner"
            and _owners(db, access.org) == 1
        ):
            raise Problem(409, "last-owner", "The last owner stays", "add another owner first")
        before = membership.role
        membership.role = body.role
        db.add(membership)
        user = db.get(User, user_id)
        data = {**_member_data(user, body.role, principal), "previousRole": before}
        emit_event(db, access.org, "member.role_changed", data)
    return MemberOut(user_id=user_id, email=user.email if user else "", role=body.role)


@router.delete("/orgs/{org}/members/{user_id}", status_code=204)
def remove_member(org: str, user_id: str, principal: CurrentPrincipal, state: State) -> Response:
    """Remove a member with all their grants in the organization: workspace roles,
    teams and API keys go too (nothing returns if they are added again)."""
    with session(state.engine) as db:
        access = access_to(db, principal, org, "members:delete")
        membership = db.exec(
            select(Membership).where(
                Membership.org_id == access.org.id, Membership.user_id == user_id
            )
        ).first()
        if membership is None:
            raise Problem(404, "not-found", "No such member", user_id)
        if membership.role == "org_owner":
            if access.role != "org_owner":
                raise Problem(403, "forbidden", "Not allowed", "only an org_owner removes owners")
            if _owners(db, access.org) == 1:
                raise Problem(409, "last-owner", "The last owner stays", "add another owner first")
        db.delete(membership)
        gone = db.get(User, user_id)
        emit_event(db, access.org, "member.removed", _member_data(gone, membership.role, principal))
        keys, workspaces = _drop_grants(db, access.org, user_id)
        for ws in workspaces:  # their RoleBindings no longer name the user
            sync_workspace(state.kube, db, access.org, ws)
    for key_id in keys:
        state.principals.forget_key(key_id)
    return Response(status_code=204)


def _drop_grants(db: Session, org: Organization, user_id: str) -> tuple[list[str], list[Workspace]]:
    """Everything a removed member held in ``org`` besides the membership (M5): their
    workspace roles, team places and API keys (revoked), so that nothing comes back
    if they are added again. The revoked keys' ids and the workspaces to re-sync."""
    workspace_ids = select(Workspace.id).where(Workspace.org_id == org.id)
    workspaces: list[Workspace | None] = []
    for member in db.exec(
        select(WorkspaceMember).where(
            WorkspaceMember.subject_kind == "user",
            WorkspaceMember.subject_id == user_id,
            col(WorkspaceMember.workspace_id).in_(workspace_ids),
        )
    ).all():
        db.delete(member)
        workspaces.append(db.get(Workspace, member.workspace_id))
    team_ids = select(Team.id).where(Team.org_id == org.id)
    for place in db.exec(
        select(TeamMember).where(
            TeamMember.user_id == user_id, col(TeamMember.team_id).in_(team_ids)
        )
    ).all():
        db.delete(place)
    now = datetime.now(UTC)
    keys = db.exec(
        select(ApiKey).where(
            ApiKey.org_id == org.id, ApiKey.user_id == user_id, col(ApiKey.revoked_at).is_(None)
        )
    ).all()
    for key in keys:
        key.revoked_at = now
        db.add(key)
    db.flush()
    return [key.id for key in keys], [w for w in workspaces if w is not None]


@router.post("/orgs/{org}/invitations", status_code=201, response_model=InvitationOut)
def invite(
    org: str, body: InvitationIn, principal: CurrentPrincipal, state: State
) -> InvitationOut:
    with session(state.engine) as db:
        access = access_to(db, principal, org, "members:create")
        if body.role == "org_owner" and access.role != "org_owner":
            raise Problem(403, "forbidden", "Not allowed", "only an org_owner can invite owners")
        _check_user_quota(db, access.org)
        token = secrets.token_urlsafe(24)
        invitation = Invitation(
            org_id=access.org.id,
            email=body.email.lower(),
            role=body.role,
            token_hash=sha256_hex(token),
            invited_by=principal.user.id,
            expires_at=datetime.now(UTC) + timedelta(days=7),
        )
        db.add(invitation)
    return InvitationOut(
        id=invitation.id,
        email=invitation.email,
        role=invitation.role,
        token=token,
        expires_at=invitation.expires_at,
    )


@router.post("/invitations/accept", response_model=OrgOut)
def accept(body: AcceptIn, principal: CurrentPrincipal, state: State) -> OrgOut:
    with session(state.engine) as db:
        invitation = db.exec(
            select(Invitation).where(Invitation.token_hash == sha256_hex(body.token))
        ).first()
        now = datetime.now(UTC)
        if (
            invitation is None
            or invitation.accepted_at is not None
            or aware(invitation.expires_at) <= now
        ):
            raise Problem(404, "not-found", "No such invitation", "it expired or was used")
        if principal.key is not None:  # a key acts in its organization only
            raise Problem(
                403,
                "api-key-not-allowed",
                "API keys cannot accept invitations",
                "accept with your own login (a bearer access token)",
            )
        if invitation.email != principal.user.email:
            raise Problem(403, "forbidden", "Not your invitation", "log in as the invitee")
        org = db.get(Organization, invitation.org_id)
        assert org is not None  # noqa: S101 - foreign key
        member_of(org.slug)  # joining is in the organization's audit view
        if db.exec(
            select(Membership).where(
                Membership.org_id == org.id, Membership.user_id == principal.user.id
            )
        ).first():
            raise Problem(409, "already-member", "Already a member", f"you are in {org.slug}")
        _check_user_quota(db, org)
        invitation.accepted_at = now
        db.add(invitation)
        db.add(Membership(org_id=org.id, user_id=principal.user.id, role=invitation.role))
        emit_event(
            db, org, "member.added", _member_data(principal.user, invitation.role, principal)
        )
    return OrgOut(slug=org.slug, name=org.name, plan=org.plan, role=invitation.role)


def _team(db: Session, access: OrgAccess, name: str) -> Team:
    team = db.exec(select(Team).where(Team.org_id == access.org.id, Team.name == name)).first()
    if team is None:
        raise Problem(404, "not-found", "No such team", name)
    return team


def _team_out(db: Session, team: Team) -> TeamOut:
    emails = db.exec(
        select(User.email)
        .join(TeamMember, col(TeamMember.user_id) == col(User.id))
        .where(TeamMember.team_id == team.id)
        .order_by(User.email)
    ).all()
    return TeamOut(name=team.name, members=list(emails))


@router.get("/orgs/{org}/teams", response_model=list[TeamOut])
def list_teams(org: str, principal: CurrentPrincipal, state: State) -> list[TeamOut]:
    with session(state.engine) as db:
        access = access_to(db, principal, org, "teams:read")
        teams = db.exec(select(Team).where(Team.org_id == access.org.id).order_by(Team.name))
        return [_team_out(db, t) for t in teams]


@router.post("/orgs/{org}/teams", status_code=201, response_model=TeamOut)
def create_team(org: str, body: TeamIn, principal: CurrentPrincipal, state: State) -> TeamOut:
    with session(state.engine) as db:
        access = access_to(db, principal, org, "teams:create")
        if db.exec(
            select(Team).where(Team.org_id == access.org.id, Team.name == body.name)
        ).first():
            raise Problem(409, "conflict", "Team exists", body.name)
        team = Team(org_id=access.org.id, name=body.name)
        db.add(team)
    return TeamOut(name=team.name, members=[])


@router.post("/orgs/{org}/teams/{team}/members", status_code=201, response_model=TeamOut)
def add_team_member(
    org: str, team: str, body: TeamMemberIn, principal: CurrentPrincipal, state: State
) -> TeamOut:
    with session(state.engine) as db:
        access = access_to(db, principal, org, "teams:update")
        found = _team(db, access, team)
        user = db.exec(
            select(User)
            .join(Membership, col(Membership.user_id) == col(User.id))
            .where(User.email == body.email.lower(), Membership.org_id == access.org.id)
        ).first()
        if user is None:
            raise Problem(404, "not-found", "No such member", f"{body.email} is not in {org}")
        exists = db.exec(
            select(TeamMember).where(TeamMember.team_id == found.id, TeamMember.user_id == user.id)
        ).first()
        if exists is None:
            db.add(TeamMember(team_id=found.id, user_id=user.id))
            db.flush()
        return _team_out(db, found)
