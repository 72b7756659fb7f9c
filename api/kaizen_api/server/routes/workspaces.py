"""Workspaces (a namespace each), their members, and who has access to them."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session, col, func, select

from kaizen_api.server.access import (
    CurrentPrincipal,
    forget_accesses,
    org_access,
    workspace_access,
)
from kaizen_api.server.db import session
from kaizen_api.server.models import (
    ApiKey,
    Membership,
    Team,
    User,
    Workspace,
    WorkspaceMember,
)
from kaizen_api.server.problems import API_PREFIX, PROBLEM_RESPONSES, Problem
from kaizen_api.server.routes.orgs import access_to, lock_org
from kaizen_api.server.state import AppState, app_state
from kaizen_api.server.tenancy import PLANS, namespace_name
from kaizen_api.server.workspaces import check_owned, sync_workspace

router = APIRouter(
    prefix=API_PREFIX,
    responses=PROBLEM_RESPONSES,
    tags=["workspaces"],
    dependencies=[Depends(forget_accesses)],
)
State = Annotated[AppState, Depends(app_state)]
NAME = r"^[a-z0-9]([-a-z0-9]{0,28}[a-z0-9])?$"


class WorkspaceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME, description="DNS label, at most 30 characters.")


class WorkspaceOut(BaseModel):
    name: str
    namespace: str
    role: str | None = Field(description="Your role here (None: no access).")


class WorkspaceMemberIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: str = Field(
        pattern=r"^(user:[^\s]+@[^\s]+|team:[a-z0-9-]+)$",
        description="user:<email> or team:<name>",
    )
    role: Literal["admin", "developer", "viewer"]


class WorkspaceMemberOut(BaseModel):
    subject: str
    role: str


class AccessEntry(BaseModel):
    role: str
    cluster_role: str
    subjects: list[str]


@router.post("/orgs/{org}/workspaces", status_code=201, response_model=WorkspaceOut)
def create_workspace(
    org: str, body: WorkspaceIn, principal: CurrentPrincipal, state: State
) -> WorkspaceOut:
    with session(state.engine) as db:
        access = access_to(db, principal, org, "workspaces:create")
        limit = PLANS[access.org.plan]["workspaces"]
        if limit is not None:
            lock_org(db, access.org)  # concurrent creations count in turn
            count = db.exec(select(func.count()).where(Workspace.org_id == access.org.id)).one()
            if count >= limit:
                raise Problem(
                    403,
                    "quota-exceeded",
                    "The organization's plan quota is used up",
                    f"plan {access.org.plan} allows {limit} workspaces (quota: workspaces); "
                    "upgrade the plan",
                    quota="workspaces",
                )
        exists = db.exec(
            select(Workspace).where(Workspace.org_id == access.org.id, Workspace.name == body.name)
        ).first()
        if exists is not None:
            raise Problem(409, "conflict", "Workspace exists", body.name)
        ws = Workspace(
            org_id=access.org.id, name=body.name, namespace=namespace_name(org, body.name)
        )
        db.add(ws)
        db.flush()
        sync_workspace(state.kube, db, access.org, ws)  # fails the transaction if refused
        role = workspace_access(db, access, body.name).role
    return WorkspaceOut(name=ws.name, namespace=ws.namespace, role=role)


@router.get("/orgs/{org}/workspaces", response_model=list[WorkspaceOut])
def list_workspaces(org: str, principal: CurrentPrincipal, state: State) -> list[WorkspaceOut]:
    with session(state.engine) as db:
        key = principal.key
        if key is not None and key.workspace_id is not None:  # its own workspace only
            access = org_access(db, principal, org)
            query = select(Workspace).where(
                Workspace.org_id == access.org.id, Workspace.id == key.workspace_id
            )
            rows = db.exec(query).all()
            for w in rows:
                workspace_access(db, access, w.name).require("workspaces:read")
        else:
            access = access_to(db, principal, org, "workspaces:read")
            rows = db.exec(
                select(Workspace).where(Workspace.org_id == access.org.id).order_by(Workspace.name)
            ).all()
        return [
            WorkspaceOut(
                name=w.name, namespace=w.namespace, role=workspace_access(db, access, w.name).role
            )
            for w in rows
        ]


@router.get("/orgs/{org}/workspaces/{ws}", response_model=WorkspaceOut)
def get_workspace(org: str, ws: str, principal: CurrentPrincipal, state: State) -> WorkspaceOut:
    with session(state.engine) as db:
        access = workspace_access(db, org_access(db, principal, org), ws)
        access.require("workspaces:read")
    return WorkspaceOut(name=ws, namespace=access.namespace, role=access.role)


@router.delete("/orgs/{org}/workspaces/{ws}", status_code=204)
def delete_workspace(org: str, ws: str, principal: CurrentPrincipal, state: State) -> Response:
    """Delete the workspace and its namespace (with everything in it)."""
    with session(state.engine) as db:
        access = workspace_access(db, access_to(db, principal, org, "workspaces:delete"), ws)
        access.require("workspaces:delete")
        check_owned(state.kube, access.org.org, access.workspace)
        for member in db.exec(
            select(WorkspaceMember).where(WorkspaceMember.workspace_id == access.workspace.id)
        ):
            db.delete(member)
        # Its keys go with it (a key left without its workspace would be org-wide).
        keys = db.exec(select(ApiKey).where(ApiKey.workspace_id == access.workspace.id)).all()
        for key in keys:
            db.delete(key)
        db.flush()
        db.delete(access.workspace)
    for key in keys:
        state.principals.forget_key(key.id)
    # The namespace goes once the database no longer has the workspace: a refused
    # commit leaves both in place (L3).
    state.kube.delete(f"/api/v1/namespaces/{access.namespace}")
    return Response(status_code=204)


def _subject_label(db: Session, member: WorkspaceMember) -> str:
    if member.subject_kind == "user":
        user = db.get(User, member.subject_id)
        return f"user:{user.email if user else member.subject_id}"
    team = db.get(Team, member.subject_id)
    return f"team:{team.name if team else member.subject_id}"


@router.get("/orgs/{org}/workspaces/{ws}/members", response_model=list[WorkspaceMemberOut])
def list_workspace_members(
    org: str, ws: str, principal: CurrentPrincipal, state: State
) -> list[WorkspaceMemberOut]:
    with session(state.engine) as db:
        access = workspace_access(db, org_access(db, principal, org), ws)
        access.require("workspaces:read")
        members = db.exec(
            select(WorkspaceMember).where(WorkspaceMember.workspace_id == access.workspace.id)
        ).all()
        return [WorkspaceMemberOut(subject=_subject_label(db, m), role=m.role) for m in members]


@router.put("/orgs/{org}/workspaces/{ws}/members", response_model=WorkspaceMemberOut)
def set_workspace_member(
    org: str, ws: str, body: WorkspaceMemberIn, principal: CurrentPrincipal, state: State
) -> WorkspaceMemberOut:
    """Give a user or team a role in the workspace (several owners and teams are fine)."""
    with session(state.engine) as db:
        in_org = org_access(db, principal, org)
        access = workspace_access(db, in_org, ws)
        access.require("members:update")
        kind, _, ref = body.subject.partition(":")
        if kind == "user":
            user = db.exec(
                select(User)
                .join(Membership, col(Membership.user_id) == col(User.id))
                .where(User.email == ref.lower(), Membership.org_id == in_org.org.id)
            ).first()
            if user is None:
                raise Problem(404, "not-found", "No such member", f"{ref} is not in {org}")
            subject_id = user.id
        else:
            team = db.exec(
                select(Team).where(Team.org_id == in_org.org.id, Team.name == ref)
            ).first()
            if team is None:
                raise Problem(404, "not-found", "No such team", ref)
            subject_id = team.id
        member = db.exec(
            select(WorkspaceMember).where(
                WorkspaceMember.workspace_id == access.workspace.id,
                WorkspaceMember.subject_kind == kind,
                WorkspaceMember.subject_id == subject_id,
            )
        ).first() or WorkspaceMember(
            workspace_id=access.workspace.id, subject_kind=kind, subject_id=subject_id, role=""
        )
        member.role = body.role
        db.add(member)
        db.flush()
        sync_workspace(state.kube, db, in_org.org, access.workspace)
    return WorkspaceMemberOut(subject=body.subject, role=body.role)


@router.delete("/orgs/{org}/workspaces/{ws}/members/{subject}", status_code=204)
def remove_workspace_member(
    org: str, ws: str, subject: str, principal: CurrentPrincipal, state: State
) -> Response:
    with session(state.engine) as db:
        in_org = org_access(db, principal, org)
        access = workspace_access(db, in_org, ws)
        access.require("members:delete")
        found = [
            m
            for m in db.exec(
                select(WorkspaceMember).where(WorkspaceMember.workspace_id == access.workspace.id)
            )
            if _subject_label(db, m) == subject
        ]
        if not found:
            raise Problem(404, "not-found", "No such workspace member", subject)
        for member in found:
            db.delete(member)
        db.flush()
        sync_workspace(state.kube, db, in_org.org, access.workspace)
    return Response(status_code=204)


@router.get("/orgs/{org}/workspaces/{ws}/access", response_model=list[AccessEntry])
def who_has_access(
    org: str, ws: str, principal: CurrentPrincipal, state: State
) -> list[AccessEntry]:
    """Who has which role, read from the namespace's RoleBindings (as the caller)."""
    with session(state.engine) as db:
        access = workspace_access(db, org_access(db, principal, org), ws)
        access.require("members:read")
    bindings = state.kube.request(
        "GET",
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{access.namespace}/rolebindings",
        caller=access.caller,
        params={"labelSelector": "app.kubernetes.io/managed-by=kaizen-api"},
    )
    out = []
    for binding in bindings.get("items", []):
        cluster_role = binding["roleRef"]["name"]
        out.append(
            AccessEntry(
                role=cluster_role.removeprefix("kaizen-"),
                cluster_role=cluster_role,
                subjects=[f"{s['kind']}:{s['name']}" for s in binding.get("subjects") or []],
            )
        )
    return sorted(out, key=lambda e: e.role)
