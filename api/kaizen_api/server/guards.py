"""What bounds the workloads of a workspace namespace (pure render functions): Pod
Security ``restricted`` labels on the Namespace, a compute ResourceQuota, a LimitRange
with container defaults and maxima, and a default egress NetworkPolicy that keeps the
namespace's pods off link-local (cloud metadata) and cluster-internal addresses
except DNS and the platform endpoints listed.

``workspaces.sync_workspace`` applies them where it applies the Namespace; the chart
sets them (``workspaces.*`` values, as ``KAIZEN_WORKSPACE_POLICY``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kaizen_api.netpolicy import egress_rules

MANAGED = {
    "app.kubernetes.io/managed-by": "kaizen-api",
    "app.kubernetes.io/part-of": "kaizen-studio",
}
POD_SECURITY_LEVELS = ("restricted", "baseline", "privileged")
COMPUTE_QUOTA = "kaizen-compute"
LIMIT_RANGE = "kaizen-limits"
EGRESS_POLICY = "kaizen-egress"


def _default_quota() -> dict[str, str]:
    return {
        "pods": "50",
        "requests.cpu": "8",
        "requests.memory": "16Gi",
        "limits.cpu": "16",
        "limits.memory": "32Gi",
        "requests.ephemeral-storage": "10Gi",
        "requests.nvidia.com/gpu": "0",
        "services.loadbalancers": "0",
        "services.nodeports": "0",
    }


def _default_limits() -> dict[str, dict[str, str]]:
    return {
        "defaultRequest": {"cpu": "100m", "memory": "128Mi"},
        "default": {"cpu": "1", "memory": "512Mi"},
        "max": {"cpu": "4", "memory": "8Gi"},
    }


@dataclass(frozen=True)
class WorkspacePolicy:
    """The chart's ``workspaces`` values."""

    pod_security: str = "restricted"
    quota: Mapping[str, str] = field(default_factory=_default_quota)  # {} : no compute quota
    limit_range: Mapping[str, Mapping[str, str]] = field(default_factory=_default_limits)
    egress_allow: tuple[Mapping[str, Any], ...] = ()
    egress_denied: tuple[str, ...] = ()
    egress_policy: bool = True

    @classmethod
    def from_json(cls, text: str) -> WorkspacePolicy:
        """``{"podSecurity": ..., "quota": {...}, "limitRange": {...}, "egress":
        {"enabled": true, "allow": [...], "deny": [...]}}``; absent keys keep defaults."""
        data = json.loads(text) if text.strip() else {}
        egress = data.get("egress") or {}
        policy = cls(
            pod_security=data.get("podSecurity", cls.pod_security),
            quota=data["quota"] if "quota" in data else _default_quota(),
            limit_range=data["limitRange"] if "limitRange" in data else _default_limits(),
            egress_allow=tuple(egress.get("allow") or ()),
            egress_denied=tuple(egress.get("deny") or ()),
            egress_policy=bool(egress.get("enabled", True)),
        )
        if policy.pod_security not in POD_SECURITY_LEVELS:
            raise ValueError(f"podSecurity must be one of {', '.join(POD_SECURITY_LEVELS)}")
        return policy


def pod_security_labels(policy: WorkspacePolicy) -> dict[str, str]:
    """Pod Security Admission: enforce (and warn, audit) the policy's level."""
    level = policy.pod_security
    labels = {f"pod-security.kubernetes.io/{mode}": level for mode in ("enforce", "warn", "audit")}
    labels["pod-security.kubernetes.io/enforce-version"] = "latest"
    return labels


def with_pod_security(namespace: dict[str, Any], policy: WorkspacePolicy) -> dict[str, Any]:
    """The Namespace object with the Pod Security labels added."""
    meta = namespace["metadata"]
    labels = {**(meta.get("labels") or {}), **pod_security_labels(policy)}
    return {**namespace, "metadata": {**meta, "labels": labels}}


def render_compute_quota(namespace: str, policy: WorkspacePolicy) -> dict[str, Any] | None:
    """Pods, CPU, memory, GPUs, LoadBalancer and NodePort Services of the namespace."""
    if not policy.quota:
        return None
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": COMPUTE_QUOTA, "namespace": namespace, "labels": dict(MANAGED)},
        "spec": {"hard": {k: str(v) for k, v in policy.quota.items()}},
    }


def render_limit_range(namespace: str, policy: WorkspacePolicy) -> dict[str, Any] | None:
    """Container defaults (so that the quota's pods need not all state them) and maxima."""
    if not policy.limit_range:
        return None
    item: dict[str, Any] = {"type": "Container"}
    item.update({k: dict(v) for k, v in policy.limit_range.items()})
    return {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": {"name": LIMIT_RANGE, "namespace": namespace, "labels": dict(MANAGED)},
        "spec": {"limits": [item]},
    }


def render_egress_policy(namespace: str, policy: WorkspacePolicy) -> dict[str, Any] | None:
    """Every pod of the namespace: egress to public addresses, DNS and the listed
    platform endpoints only (NetworkPolicies add up: a Gateway's own policy may allow
    what the operator was told, never less than this)."""
    if not policy.egress_policy:
        return None
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": EGRESS_POLICY, "namespace": namespace, "labels": dict(MANAGED)},
        "spec": {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": egress_rules(policy.egress_allow, policy.egress_denied),
        },
    }


def render_workspace_guards(
    namespace: str, policy: WorkspacePolicy
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """The guard objects to apply, and (kind, name) of those switched off (to delete)."""
    rendered = [
        ("ResourceQuota", COMPUTE_QUOTA, render_compute_quota(namespace, policy)),
        ("LimitRange", LIMIT_RANGE, render_limit_range(namespace, policy)),
        ("NetworkPolicy", EGRESS_POLICY, render_egress_policy(namespace, policy)),
    ]
    apply = [obj for _, _, obj in rendered if obj is not None]
    remove = [(kind, name) for kind, name, obj in rendered if obj is None]
    return apply, remove
