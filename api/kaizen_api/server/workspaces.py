"""Writing a workspace's Kubernetes side (as the facade itself): its Namespace, the
RoleBindings of its members and the plan's ResourceQuota, rendered by ``tenancy``."""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlmodel import Session, select

from kaizen_api.server.guards import render_workspace_guards, with_pod_security
from kaizen_api.server.kube import Kube, KubeError
from kaizen_api.server.models import Organization, Team, User, Workspace, WorkspaceMember
from kaizen_api.server.problems import Problem
from kaizen_api.server.tenancy import (
    MANAGED,
    ORG_ID_LABEL,
    ORG_LABEL,
    WORKSPACE_LABEL,
    Subject,
    owned_by,
    render_account_binding,
    render_facade_binding,
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


def not_owned(namespace: str, org: Organization, ws: Workspace) -> Problem:
    return Problem(
        409,
        "namespace-not-owned",
        "The workspace's namespace belongs to someone else",
        f"namespace {namespace} exists but was not created for workspace {ws.name!r} of "
        f"organization {org.slug!r} (its {ORG_ID_LABEL} label differs or is missing); the "
        "facade does not adopt it. A cluster administrator deletes it, or, if it is this "
        "workspace's from before an upgrade, runs `kaizen-api sync-workspaces --adopt`",
    )


def unlabelled_legacy(namespace: dict[str, Any], org: Organization, ws: Workspace) -> bool:
    """A namespace an older facade made for this slug and workspace (no org id yet)."""
    labels = (namespace.get("metadata") or {}).get("labels") or {}
    return (
        ORG_ID_LABEL not in labels
        and labels.get(ORG_LABEL) == org.slug
        and labels.get(WORKSPACE_LABEL) == ws.name
        and all(labels.get(k) == v for k, v in MANAGED.items())
    )


def claim_namespace(kube: Kube, org: Organization, ws: Workspace, *, adopt: bool = False) -> None:
    """Create the workspace's Namespace, or check that the existing one is this
    organization's (by its org-id label) before anything else is written into it
    (H5): a namespace left by a lost database or made by anyone else is refused.
    ``adopt``: also take over a namespace an older facade made (upgrade; see
    docs/security.md)."""
    wanted = with_pod_security(
        render_namespace(org.slug, ws.name, org_id=org.id, namespace=ws.namespace),
        kube.workspace_policy,
    )
    path = f"/api/v1/namespaces/{ws.namespace}"
    try:
        current = kube.request("GET", path)
    except KubeError as exc:
        if exc.status != 404:
            raise
        try:
            kube.request("POST", "/api/v1/namespaces", body=wanted)
            return
        except KubeError as again:
            if again.status != 409:  # made meanwhile: check it like any other
                raise
            current = kube.request("GET", path)
    if not owned_by(current, org.id, ws.name) and not (
        adopt and unlabelled_legacy(current, org, ws)
    ):
        raise not_owned(ws.namespace, org, ws)
    kube.apply(wanted)  # labels this version adds


def check_owned(kube: Kube, org: Organization, ws: Workspace) -> None:
    """409 unless the workspace's Namespace is absent or this organization's: the
    facade deletes no namespace it did not make for the organization."""
    try:
        current = kube.request("GET", f"/api/v1/namespaces/{ws.namespace}")
    except KubeError as exc:
        if exc.status == 404:
            return
        raise
    if not owned_by(current, org.id, ws.name):
        raise not_owned(ws.namespace, org, ws)


def sync_workspace(
    kube: Kube, db: Session, org: Organization, ws: Workspace, *, adopt: bool = False
) -> None:
    """Apply the workspace's Namespace, RoleBindings, quotas, limits and egress policy
    (idempotent), once the namespace is known to be this organization's."""
    claim_namespace(kube, org, ws, adopt=adopt)
    apply_guards(kube, ws.namespace)
    if kube.workspace_role and kube.service_account:
        kube.apply(render_facade_binding(ws.namespace, kube.workspace_role, kube.service_account))
        wait_for_binding(kube, ws.namespace)
    if kube.operator_secrets_role and kube.operator_service_account:
        role = kube.operator_secrets_role  # the binding is named like the role it binds
        account = kube.operator_service_account
        kube.apply(render_account_binding(role, ws.namespace, role, account))
    members = members_of(db, org, ws)
    for binding in render_role_bindings(org.slug, ws.name, members, namespace=ws.namespace):
        kube.apply(binding)
    quota = render_quota(org.slug, ws.name, org.plan, namespace=ws.namespace)
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


def wait_for_binding(kube: Kube, namespace: str, timeout: float = 10.0) -> bool:
    """Wait until the apiserver's RBAC has the facade's new RoleBinding in ``namespace``
    (its authorizer sees bindings through a cache): a caller's first request there
    would otherwise be refused for a moment. False if it did not within ``timeout``."""
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {
            "resourceAttributes": {
                "namespace": namespace,
                "group": "kaizen.studio",
                "resource": "agents",
                "verb": "impersonate-on:user-info:list",
            }
        },
    }
    path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
    deadline = time.monotonic() + timeout
    while True:
        if (kube.request("POST", path, body=review).get("status") or {}).get("allowed"):
            return True
        if time.monotonic() >= deadline:
            log.warning("the facade's RoleBinding in %s is not in effect yet", namespace)
            return False
        time.sleep(0.1)


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
    quota = render_quota(org.slug, ws.name, org.plan, namespace=ws.namespace)
    if quota is not None:
        recount(kube, quota)
