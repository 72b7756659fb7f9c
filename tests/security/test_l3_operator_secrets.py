"""L3 (and H3) of the security review: the operator's ClusterRole granted `get` on every
Secret of the cluster, so the operator process (and anyone who takes it over) could read
kube-system's and every tenant's credentials.

Now the chart's operator ClusterRole has no access to Secrets; the ClusterRole
<release>-operator-secrets is bound per namespace (by the facade in the workspaces it
makes, by the chart in operator.secretNamespaces, by an administrator elsewhere). Where
it is missing, the object naming a Secret gets a condition saying which RoleBinding to
create, and the operator keeps running. A real operator process runs here with a token
of the chart's own ServiceAccount and RBAC.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.e2e.test_operator_reconciles import apply_yaml, condition, get
from tests.integration.test_helm_chart import render
from tests.support.kube import eventually, kubectl, token_kubeconfig
from tests.support.objects import agent
from tests.support.processes import start_operator

CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding"}


@dataclass
class ChartOperator:
    release_namespace: str
    account: str  # the chart's operator ServiceAccount (and ClusterRole) name
    kubeconfig: Path  # that ServiceAccount's token, nothing else


def _operator_rbac(release: str, namespace: str, *values: str) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(render(*values).replace("kaizen-system", namespace)) if d]
    op = f"{release}-operator"
    return [
        d
        for d in docs
        if d["kind"] in CLUSTER_SCOPED | {"ServiceAccount", "Role", "RoleBinding"}
        and d["metadata"]["name"].startswith(op)
        and d["metadata"].get("namespace") != "kube-system"  # the metrics API's, not needed
    ]


@pytest.fixture
def chart_operator(
    crds: Path, api_client: client.ApiClient, tmp_path: Path
) -> Iterator[ChartOperator]:
    """The chart's operator ServiceAccount and RBAC in a release namespace of its own
    (cluster-scoped objects renamed per test), and a kubeconfig with its token."""
    suffix = uuid.uuid4().hex[:6]
    namespace, op = f"op-{suffix}", f"op{suffix}-operator"
    objects = json.loads(
        json.dumps(_operator_rbac("kaizen", namespace)).replace("kaizen-operator", op)
    )
    core = client.CoreV1Api(api_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    try:
        for obj in objects:
            kubectl(crds, "apply", "--server-side", "-f", "-", stdin=json.dumps(obj))
        token = kubectl(crds, "create", "token", op, "-n", namespace).stdout.strip()
        kubeconfig = token_kubeconfig(crds, token, tmp_path / "operator-sa.kubeconfig")
        yield ChartOperator(namespace, op, kubeconfig)
    finally:
        for obj in objects:
            if obj["kind"] in CLUSTER_SCOPED:
                kind, name = obj["kind"].lower(), obj["metadata"]["name"]
                kubectl(crds, "delete", kind, name, "--ignore-not-found", check=False)
        core.delete_namespace(namespace, propagation_policy="Background")


def _can(kubeconfig: Path, *args: str) -> bool:
    return kubectl(kubeconfig, "auth", "can-i", *args, check=False).stdout.strip() == "yes"


def test_the_operator_reads_secrets_only_where_it_is_bound(
    crds: Path,
    api_client: client.ApiClient,
    chart_operator: ChartOperator,
    own_namespace: str,
    tmp_path: Path,
) -> None:
    op, ns = chart_operator.account, own_namespace
    as_operator = chart_operator.kubeconfig
    # No Secret anywhere by the chart's cluster-wide RBAC: not kube-system's, not a tenant's.
    assert not _can(as_operator, "get", "secrets", "-n", "kube-system")
    assert not _can(as_operator, "get", "secrets", "-n", ns)
    assert not _can(as_operator, "list", "secrets", "--all-namespaces")

    client.CoreV1Api(api_client).create_namespaced_secret(
        ns, {"metadata": {"name": "llm"}, "stringData": {"apiKey": "sk-llm-0123456789"}}
    )
    model = {"provider": "openai", "name": "gpt-4o-mini", "credentialsSecretRef": {"name": "llm"}}
    body = agent("assistant", model=model)
    body["metadata"] = {"name": "assistant"}
    proc, _ = start_operator(as_operator, ns, tmp_path / "operator.log")
    try:
        apply_yaml(crds, ns, [body])

        def ready_reason(reason: str) -> dict[str, Any] | None:
            ready = condition(get(api_client, ns, "agents", "assistant"), "Ready")
            return ready if ready and ready["reason"] == reason else None

        ready = eventually(lambda: ready_reason("SecretAccessDenied"), what="SecretAccessDenied")
        assert ready["status"] == "False"
        binding = (
            f"kubectl -n {ns} create rolebinding {op}-secrets --clusterrole={op}-secrets "
            f"--serviceaccount={chart_operator.release_namespace}:{op}"
        )
        assert f"the operator may not read Secret 'llm' in namespace '{ns}'" in ready["message"]
        assert binding in ready["message"], ready["message"]
        assert "sk-llm" not in json.dumps(get(api_client, ns, "agents", "assistant"))
        assert proc.proc.poll() is None  # no crash loop

        # The RoleBinding the chart renders for operator.secretNamespaces (the same one
        # the message names, and the facade creates in workspace namespaces).
        rendered = _operator_rbac(
            "kaizen",
            chart_operator.release_namespace,
            "--set",
            f"operator.secretNamespaces={{{ns}}}",
        )
        [grant] = [
            d for d in rendered if d["kind"] == "RoleBinding" and d["metadata"]["namespace"] == ns
        ]
        grant = json.loads(json.dumps(grant).replace("kaizen-operator", op))
        kubectl(crds, "apply", "-f", "-", stdin=json.dumps(grant))
        assert _can(as_operator, "get", "secrets", "-n", ns)
        assert not _can(as_operator, "get", "secrets", "-n", "kube-system")
        ready = eventually(lambda: ready_reason("RevisionReady"), what="the agent Ready")
        assert ready["status"] == "True"
    finally:
        proc.stop()
