"""Writing a workspace's Kubernetes side (as the facade itself): its Namespace, the
RoleBindings of its members and the plan's ResourceQuota, rendered by ``tenancy``."""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlmodel import Session, select

from kaizen_api.server.guards import render_workspace_guards, with_pod_security
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

log = logging.getLogger(__name__)
RECOUNT_AFTER_SECONDS = 2.0  # a new quota is counted within milliseconds, normally


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
    """Apply the workspace's Namespace, RoleBindings, quotas, limits and egress policy
    (idempotent)."""
    kube.apply(with_pod_security(render_namespace(org.slug, ws.name), kube.workspace_policy))
    apply_guards(kube, ws.namespace)
    for binding in render_role_bindings(org.slug, ws.name, members_of(db, org, ws)):
        kube.apply(binding)
    quota = render_quota(org.slug, ws.name, org.plan)
    if quota is not None:
        kube.apply(quota)
        wait_for_quota(kube, quota)
    else:
        kube.delete(f"/api/v1/namespaces/{ws.namespace}/resourcequotas/kaizen-plan")


GUARD_PATHS = {
    "ResourceQuota": "/api/v1/namespaces/{ns}/resourcequotas/{name}",
    "LimitRange": "/api/v1/namespaces/{ns}/limitranges/{name}",
    "NetworkPolicy": "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies/{name}",
}


def apply_guards(kube: Kube, namespace: str) -> None:
    """The workspace's compute quota, LimitRange and egress NetworkPolicy (guards.py);
    the compute quota is waited for, so that the first pod is not refused as uncounted."""
    apply, remove = render_workspace_guards(namespace, kube.workspace_policy)
    for obj in apply:
        kube.apply(obj)
        if obj["kind"] == "ResourceQuota":
            wait_for_quota(kube, obj)
    for kind, name in remove:
        kube.delete(GUARD_PATHS[kind].format(ns=namespace, name=name))


def wait_for_quota(kube: Kube, quota: dict[str, Any]) -> bool:
    """Wait, up to ``kube.quota_wait_seconds``, until the quota controller has counted
    every resource of the (just applied) ``quota``: until then the apiserver refuses
    each create it covers ("status unknown for quota"). False if it did not."""
    meta = quota["metadata"]
    path = f"/api/v1/namespaces/{meta['namespace']}/resourcequotas/{meta['name']}"
    wanted = set(quota["spec"]["hard"])
    now = time.monotonic()
    deadline, recount_at = now + kube.quota_wait_seconds, now + RECOUNT_AFTER_SECONDS
    while True:
        if wanted <= set((kube.request("GET", path).get("status") or {}).get("used") or {}):
            return True
        now = time.monotonic()
        if now >= deadline:
            log.warning(
                "the quota controller has not counted quota %s/%s after %ss; creates there "
                "wait for it (then 503 quota-pending)",
                meta["namespace"],
                meta["name"],
                kube.quota_wait_seconds,
            )
            return False
        if now >= recount_at:
            recount(kube, quota)
            recount_at = now + RECOUNT_AFTER_SECONDS
        time.sleep(0.2)


def recount(kube: Kube, quota: dict[str, Any]) -> None:
    """Make the quota controller count ``quota`` again. It counts a quota when the
    quota's limits change, and otherwise only in its full resync (every 5 minutes): a
    quota made before the controller knew a resource (CRDs installed moments ago) stays
    uncounted that long. So change the limits: to zero (stricter, and every create is
    refused while uncounted anyway), then back."""
    zero = {**quota, "spec": {**quota["spec"], "hard": dict.fromkeys(quota["spec"]["hard"], "0")}}
    kube.apply(zero)
    kube.apply(quota)


def recount_plan_quota(kube: Kube, org: Organization, ws: Workspace) -> None:
    """:func:`recount` the workspace's plan quota (nothing for unlimited plans)."""
    quota = render_quota(org.slug, ws.name, org.plan)
    if quota is not None:
        recount(kube, quota)
