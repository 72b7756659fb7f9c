"""Writing a workspace's Kubernetes side (as the facade itself): its Namespace, the
RoleBindings of its members and the plan's ResourceQuota, rendered by ``tenancy``."""

from __future__ import annotations

import time

from sqlmodel import Session, select

from kaizen_api.server.kube import Kube
from kaizen_api.server.models import Organization, Team, User, Workspace, WorkspaceMember
from kaizen_api.server.tenancy import (
    Subject,
    render_namespace,
    render_quota,
    render_role_bindings,
    team_group,
    user_name,
)


def members_of(db: Session, org: Organization, ws: Workspace) -> list[tuple[Subject, str]]:
    """The workspace's members as RoleBinding subjects with their roles."""
    out: list[tuple[Subject, str]] = []
    for member in db.exec(select(WorkspaceMember).where(WorkspaceMember.workspace_id == ws.id)):
        if member.subject_kind == "user":
            user = db.get(User, member.subject_id)
            if user is not None:
                out.append((Subject("User", user_name(user.email)), member.role))
        else:
            team = db.get(Team, member.subject_id)
            if team is not None:
                out.append((Subject("Group", team_group(org.slug, team.name)), member.role))
    return out


def sync_workspace(kube: Kube, db: Session, org: Organization, ws: Workspace) -> None:
    """Apply the workspace's Namespace, RoleBindings and quota (idempotent)."""
    kube.apply(render_namespace(org.slug, ws.name))
    for binding in render_role_bindings(org.slug, ws.name, members_of(db, org, ws)):
        kube.apply(binding)
    quota = render_quota(org.slug, ws.name, org.plan)
    if quota is not None:
        kube.apply(quota)
        wait_for_quota(kube, ws.namespace)
    else:
        kube.delete(f"/api/v1/namespaces/{ws.namespace}/resourcequotas/kaizen-plan")


def wait_for_quota(kube: Kube, namespace: str, timeout: float = 15.0) -> None:
    """Until the quota controller has counted a new quota, the apiserver refuses every
    create it covers ("status unknown for quota"); wait so the workspace works at once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        quota = kube.request("GET", f"/api/v1/namespaces/{namespace}/resourcequotas/kaizen-plan")
        if (quota.get("status") or {}).get("hard"):
            return
        time.sleep(0.1)
