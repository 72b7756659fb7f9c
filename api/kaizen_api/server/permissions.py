"""Roles and permission strings (pure).

Permissions are ``<resource>:<verb>`` with ``*`` wildcards (``agents:*``, ``*:read``).
Organization roles are the seeds; workspace roles decide what a member may do in
one workspace, and map onto the aggregated ClusterRoles bound in its namespace.
"""

from __future__ import annotations

from collections.abc import Iterable

ORG_ROLES: dict[str, tuple[str, ...]] = {
    "org_owner": ("*:*",),
    "org_admin": (
        "orgs:read",
        "members:*",
        "teams:*",
        "workspaces:*",
        "agents:*",
        "pipelines:*",
        "gateways:*",
        "scalingpolicies:*",
        "promotions:*",
        "keys:*",
        "audit:read",
        "webhooks:*",
        "policies:*",
    ),
    "developer": ("orgs:read", "workspaces:read", "teams:read", "keys:*"),
    "viewer": ("orgs:read", "workspaces:read", "teams:read"),
    "billing_admin": ("orgs:read", "billing:*", "usage:read"),
}

# Workspace roles: what a member may do to the resources of that workspace.
WORKSPACE_ROLES: dict[str, tuple[str, ...]] = {
    "admin": ("*:*",),
    "developer": (
        "workspaces:read",
        "agents:*",
        "pipelines:*",
        "gateways:*",
        "scalingpolicies:*",
        "promotions:*",
    ),
    "viewer": ("*:read",),
}

# Workspace role -> the ClusterRole bound in the workspace's namespace.
CLUSTER_ROLES = {
    "admin": "kaizen-admin",
    "developer": "kaizen-developer",
    "viewer": "kaizen-viewer",
}
# Organization roles that act as a workspace role in every workspace of the org.
ORG_WIDE = {"org_owner": "admin", "org_admin": "admin"}
RANK = {"viewer": 1, "developer": 2, "admin": 3}


def grants(granted: Iterable[str], needed: str) -> bool:
    """True when one of ``granted`` covers ``needed`` (``agents:create``)."""
    resource, _, verb = needed.partition(":")
    for permission in granted:
        g_resource, _, g_verb = permission.partition(":")
        if g_resource in ("*", resource) and g_verb in ("*", verb):
            return True
    return False


def strongest(roles: Iterable[str]) -> str | None:
    """The strongest of several workspace roles (a user in two teams keeps both)."""
    ranked = sorted(roles, key=lambda r: RANK.get(r, 0))
    return ranked[-1] if ranked else None


PERMISSION_PATTERN = r"^[A-Za-z0-9*_-]+:[A-Za-z0-9*_-]+$"
