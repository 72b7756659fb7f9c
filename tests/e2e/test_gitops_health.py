"""Argo CD health checks, Flux's kstatus and the approve action on real objects the
operator wrote: Ready kinds are Healthy/Current, a stalled policy is Degraded/Failed,
a Promotion waiting for approval is Suspended/InProgress, and the approve action applied
as Argo CD's ServiceAccount goes through the admission webhook, which records that
account as the approver."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes import client

from tests.e2e.test_operator_reconciles import apply_yaml, gateway, get, mock_agent, scaling_policy
from tests.support.argocd import actions, health, kstatus, run_action
from tests.support.kube import eventually, kubectl

ARGOCD = "system:serviceaccount:argocd:argocd-server"


def test_health_and_approve_action_on_real_objects(
    operator: Any, crds: Path, api_client: client.ApiClient, namespace: str
) -> None:
    rbac = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "argocd-actions"},
            "rules": [
                {
                    "apiGroups": ["kaizen.studio"],
                    "resources": ["promotions"],
                    "verbs": ["get", "patch"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "argocd-actions"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "argocd-actions",
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": "argocd-server", "namespace": "argocd"}
            ],
        },
    ]
    apply_yaml(
        crds,
        namespace,
        [
            mock_agent("hello"),
            gateway("dev", "dev", ["hello"]),
            gateway("staging", "staging", ["hello"]),
            scaling_policy(
                "lost",
                "ghost",
                minReplicas=1,
                maxReplicas=2,
                metrics=[{"type": "cpu", "averageUtilization": 50}],
            ),
            *rbac,
        ],
    )

    def healthy(plural: str, name: str) -> dict[str, Any] | None:
        body = get(api_client, namespace, plural, name)
        return body if health(body)["status"] == "Healthy" else None

    for plural, name in (("agents", "hello"), ("gateways", "dev"), ("gateways", "staging")):
        eventually(lambda p=plural, n=name: healthy(p, n), what=f"{name} Healthy")
    lost = eventually(
        lambda: (
            (body := get(api_client, namespace, "scalingpolicies", "lost"))
            and health(body)["status"] == "Degraded"
            and body
        ),
        what="the policy without its Gateway Degraded",
    )
    assert "TargetNotFound" in health(lost)["message"]
    ready = [
        get(api_client, namespace, p, n) for p, n in (("agents", "hello"), ("gateways", "dev"))
    ]
    assert kstatus(*ready, lost) == {"hello": "Current", "dev": "Current", "lost": "Failed"}
    stale = {**ready[0], "metadata": {**ready[0]["metadata"], "generation": 99}}
    assert kstatus(stale) == {"hello": "InProgress"}  # the operator has not seen it yet

    apply_yaml(
        crds,
        namespace,
        [
            {
                "apiVersion": "kaizen.studio/v1alpha1",
                "kind": "Promotion",
                "metadata": {"name": "to-staging"},
                "spec": {
                    "agentRef": {"name": "hello"},
                    "revision": 1,
                    "from": "dev",
                    "to": "staging",
                    "approval": {"required": True, "approvers": {"users": [ARGOCD]}},
                },
            }
        ],
    )
    waiting = eventually(
        lambda: (
            (body := get(api_client, namespace, "promotions", "to-staging"))
            and health(body)["status"] == "Suspended"
            and body
        ),
        what="the Promotion Suspended while it waits",
    )
    assert actions(waiting) == {"approve": True, "reject": True}
    assert kstatus(waiting) == {"to-staging": "InProgress"}
    approved = run_action(waiting, "approve")
    value = approved["metadata"]["annotations"]["kaizen.studio/approve"]
    kubectl(
        crds,
        "annotate",
        "-n",
        namespace,
        "promotion",
        "to-staging",
        f"kaizen.studio/approve={value}",
        f"--as={ARGOCD}",
    )
    done = eventually(
        lambda: (
            (body := get(api_client, namespace, "promotions", "to-staging"))
            and health(body)["status"] == "Healthy"
            and body
        ),
        what="the Promotion Healthy after the action",
    )
    assert done["status"]["approvals"][0]["user"] == ARGOCD
    assert done["status"]["phase"] == "Succeeded"
    assert kstatus(done) == {"to-staging": "Current"}
