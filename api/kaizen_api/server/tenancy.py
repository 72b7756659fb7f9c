"""Workspaces as namespaces (pure render functions): the Namespace with its org and
workspace labels, one RoleBinding per workspace role, the plan's ResourceQuota, and
the aggregated ClusterRoles those bindings refer to. Also the Kubernetes identities
(user and groups) the facade impersonates for a caller."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kaizen_api.server.permissions import CLUSTER_ROLES, ORG_WIDE
from kaizen_api.v1alpha1.rbac import render_cluster_roles as _render_cluster_roles

ORG_LABEL = "kaizen.studio/org"
WORKSPACE_LABEL = "kaizen.studio/workspace"
# The organization's database id: a namespace is this organization's only if it carries
# it (a slug is reused after a database loss; the id, a random UUID, never is).
ORG_ID_LABEL = "kaizen.studio/org-id"
NAMESPACE_PREFIX = "kz-"
MANAGED = {
    "app.kubernetes.io/managed-by": "kaizen-api",
    "app.kubernetes.io/part-of": "kaizen-studio",
}
KINDS = ("agents", "pipelines", "gateways", "scalingpolicies", "promotions")

# Plan -> object counts (None: unlimited). Agents and Pipelines count per workspace (a
# namespace's ResourceQuota, each kind up to the plan's number), so the number of
# workspaces is limited too. Pipelines count on their own: they cost no compute, but a
# workspace must not fill etcd with them either.
# Executions (answered requests) and tokens count per calendar month (UTC) from the
# usage rollups; past them, OVERAGE says whether the gateways refuse (block) or serve
# and the month is flagged (flag) for billing. See kaizen_api.server.budgets.
PLANS: dict[str, dict[str, int | None]] = {
    "free": {
        "agents": 10,
        "users": 3,
        "workspaces": 3,
        "executions": 10_000,
        "tokens": 1_000_000,
    },
    "pro": {
        "agents": 100,
        "users": None,
        "workspaces": 25,
        "executions": 100_000,
        "tokens": 50_000_000,
    },
    "enterprise": {
        "agents": None,
        "users": None,
        "workspaces": None,
        "executions": None,
        "tokens": None,
    },
}
QUOTA_KINDS = ("agents", "pipelines")  # counted by the plan's ResourceQuota
OVERAGE = {"free": "block", "pro": "flag", "enterprise": "flag"}
MONTHLY = ("executions", "tokens")


def user_name(email: str) -> str:
    """The Kubernetes user a facade user is impersonated as."""
    return f"kaizen:{email}"


def org_group(org: str, role: str | None = None) -> str:
    return f"kaizen:org:{org}" + (f":{role}" if role else "")


def team_group(org: str, team: str) -> str:
    return f"kaizen:team:{org}:{team}"


def namespace_name(org: str, workspace: str) -> str:
    """``kz-<org>--<ws>``: one namespace per (org, workspace) pair, never two pairs per
    namespace. Neither part may then contain ``--`` (slugs end in a letter or digit, so
    the one ``--`` is the separator); a pair where one does, or whose name would pass
    63 characters, gets ``kz-x-<hash>``, which has no ``--`` and so meets no other."""
    name = f"{NAMESPACE_PREFIX}{org}--{workspace}"
    if "--" in org or "--" in workspace or len(name) > 63:
        digest = hashlib.sha256(f"{org}/{workspace}".encode()).hexdigest()[:32]
        name = f"{NAMESPACE_PREFIX}x-{digest}"
    return name


def owned_by(namespace: dict[str, Any], org_id: str, workspace: str) -> bool:
    """Whether an existing Namespace is this organization's workspace (by its labels)."""
    labels = (namespace.get("metadata") or {}).get("labels") or {}
    return bool(labels.get(ORG_ID_LABEL) == org_id and labels.get(WORKSPACE_LABEL) == workspace)


@dataclass(frozen=True)
class Subject:
    """A RoleBinding subject: a user (by email) or a group."""

    kind: str  # User | Group
    name: str


def render_namespace(
    org: str, workspace: str, *, org_id: str, namespace: str | None = None
) -> dict[str, Any]:
    """The workspace's Namespace (``namespace``: its stored name, default the current
    naming). Every label a workspace namespace carries is set here."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": namespace or namespace_name(org, workspace),
            "labels": {
                **MANAGED,
                ORG_LABEL: org,
                ORG_ID_LABEL: org_id,
                WORKSPACE_LABEL: workspace,
            },
        },
    }


def render_role_bindings(
    org: str,
    workspace: str,
    members: Iterable[tuple[Subject, str]],
    *,
    namespace: str | None = None,
) -> list[dict[str, Any]]:
    """One RoleBinding per workspace role; org-wide roles bind through their group."""
    ns = namespace or namespace_name(org, workspace)
    subjects: dict[str, list[Subject]] = {role: [] for role in CLUSTER_ROLES}
    for org_role, ws_role in ORG_WIDE.items():
        subjects[ws_role].append(Subject("Group", org_group(org, org_role)))
    for subject, role in members:
        if subject not in subjects[role]:
            subjects[role].append(subject)
    bindings = []
    for role, cluster_role in CLUSTER_ROLES.items():
        bindings.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": cluster_role, "namespace": ns, "labels": dict(MANAGED)},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": cluster_role,
                },
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": s.kind, "name": s.name}
                    for s in subjects[role]
                ],
            }
        )
    return bindings


FACADE_BINDING = "kaizen-api-facade"


def render_facade_binding(namespace: str, cluster_role: str, account: str) -> dict[str, Any]:
    """The facade's own RoleBinding in a workspace namespace: ``cluster_role`` (the
    chart's narrow <release>-api-workspace, what it may do there by impersonation) for
    its ServiceAccount ``account`` ("<namespace>:<name>"). Only namespaces it made for
    an organization get one, so nowhere else can it act as anyone (H4)."""
    return render_account_binding(FACADE_BINDING, namespace, cluster_role, account)


def render_account_binding(
    name: str, namespace: str, cluster_role: str, account: str
) -> dict[str, Any]:
    """A RoleBinding ``name`` of ``cluster_role`` to the ServiceAccount ``account``
    ("<namespace>:<name>") in a workspace namespace: the facade's own, or the operator's
    (``<release>-operator-secrets``: it reads Secrets only where it is bound)."""
    account_ns, _, account_name = account.partition(":")
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(MANAGED)},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": cluster_role,
        },
        "subjects": [{"kind": "ServiceAccount", "name": account_name, "namespace": account_ns}],
    }


def render_quota(
    org: str, workspace: str, plan: str, *, namespace: str | None = None
) -> dict[str, Any] | None:
    """The plan's object counts as a ResourceQuota (None when unlimited)."""
    agents = PLANS[plan]["agents"]
    if agents is None:
        return None
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {
            "name": "kaizen-plan",
            "namespace": namespace or namespace_name(org, workspace),
            "labels": {**MANAGED, "kaizen.studio/plan": plan},
        },
        "spec": {"hard": {f"count/{kind}.kaizen.studio": str(agents) for kind in QUOTA_KINDS}},
    }


def render_cluster_roles() -> list[dict[str, Any]]:
    """kaizen-viewer/developer/admin as the facade, dev and tests apply them."""
    return _render_cluster_roles(MANAGED)
