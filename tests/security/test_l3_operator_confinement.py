"""L3: the operator's ServiceAccount has cluster-wide RBAC for workloads; the chart's
confinement policy keeps it (if compromised) from writing them into kube-system and
the other protected namespaces, while it still writes in tenant namespaces."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.conftest import impersonating
from tests.integration.test_helm_chart import render
from tests.support.kube import eventually, kubectl

DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "implant"},
    "spec": {
        "selector": {"matchLabels": {"app": "implant"}},
        "template": {
            "metadata": {"labels": {"app": "implant"}},
            "spec": {"containers": [{"name": "c", "image": "attacker/img:1"}]},
        },
    },
}


@pytest.fixture
def confined_operator(crds: Path, api_client: client.ApiClient) -> Iterator[str]:
    """The chart's confinement policy for a release in its own namespace, and the
    RBAC the chart gives that operator: the operator's user name."""
    release_ns = f"conf-{uuid.uuid4().hex[:6]}"
    docs = [
        d
        for d in yaml.safe_load_all(
            render("--show-only", "templates/operator-confinement.yaml").replace(
                "kaizen-system", release_ns
            )
        )
        if d
    ]
    for doc in docs:
        doc["metadata"]["name"] += f"-{release_ns}"
    docs[1]["spec"]["policyName"] = docs[0]["metadata"]["name"]
    user = f"system:serviceaccount:{release_ns}:kaizen-operator"
    rbac: list[dict[str, Any]] = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": release_ns},
            "rules": [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["create"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": release_ns},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": release_ns,
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        },
    ]
    objects = docs + rbac
    kubectl(
        crds,
        "apply",
        "-f",
        "-",
        stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}),
    )
    yield user
    for obj in objects:
        kubectl(
            crds, "delete", obj["kind"], obj["metadata"]["name"], "--ignore-not-found", check=False
        )


def test_the_operator_cannot_write_workloads_into_kube_system(
    confined_operator: str, api_client: client.ApiClient, namespace: str
) -> None:
    apps = client.AppsV1Api(impersonating(api_client, confined_operator))

    def refusal() -> str | None:
        try:
            apps.create_namespaced_deployment("kube-system", DEPLOYMENT, dry_run="All")
        except ApiException as exc:
            assert exc.status == 403, exc.body
            return str(json.loads(exc.body)["message"])
        return None  # not in force yet

    message = eventually(refusal, timeout=30, what="the confinement policy in force")
    assert "the Kaizen operator may not write deployments in namespace kube-system" in message
    # A tenant namespace is where it works.
    apps.create_namespaced_deployment(namespace, DEPLOYMENT, dry_run="All")
