"""H2 / M8: a workspace namespace bounds whatever runs in it, whatever plan its
organization chose: Pod Security ``restricted`` is enforced, a compute quota caps pods,
CPU, memory and GPUs and forbids LoadBalancer and NodePort Services, a LimitRange caps
each container, and a default NetworkPolicy keeps egress off metadata and cluster
addresses."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.support.facade import Facade

RESTRICTED = {
    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
}
CONTAINER_CONTEXT = {
    "runAsUser": 10001,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}


def pod(name: str, resources: dict[str, Any] | None = None, **container: Any) -> dict[str, Any]:
    body = {
        "name": "c",
        "image": "example.test/any:1",
        "securityContext": CONTAINER_CONTEXT,
        **({"resources": resources} if resources else {}),
        **container,
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {**RESTRICTED, "containers": [body]},
    }


def refusal(call: Any) -> str:
    with pytest.raises(ApiException) as caught:
        call()
    assert caught.value.status == 403, caught.value.body
    return str(json.loads(caught.value.body)["message"])


def test_workspace_namespaces_bound_their_workloads(
    facade: Facade, api_client: client.ApiClient
) -> None:
    owner = facade.user("owner")
    org = facade.org(owner, plan="enterprise")  # no plan quota: compute is bounded anyway
    ns = facade.workspace(owner, org, "prod")
    core = client.CoreV1Api(api_client)

    labels = core.read_namespace(ns).metadata.labels
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"

    root = pod("root", securityContext={"privileged": True})
    root["spec"] = {"containers": root["spec"]["containers"]}
    message = refusal(lambda: core.create_namespaced_pod(ns, root, dry_run="All"))
    assert 'violates PodSecurity "restricted:latest"' in message

    gpu = pod("gpu", {"limits": {"nvidia.com/gpu": "8"}})
    message = refusal(lambda: core.create_namespaced_pod(ns, gpu, dry_run="All"))
    assert "exceeded quota: kaizen-compute" in message
    assert "requests.nvidia.com/gpu" in message

    huge = pod("huge", {"limits": {"memory": "64Gi"}})
    message = refusal(lambda: core.create_namespaced_pod(ns, huge, dry_run="All"))
    assert "maximum memory usage per Container is 8Gi" in message

    lb = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "public"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
    }
    message = refusal(lambda: core.create_namespaced_service(ns, lb, dry_run="All"))
    assert "exceeded quota: kaizen-compute" in message
    assert "services.loadbalancers" in message

    # A well-behaved pod is admitted, with the LimitRange's defaults filled in.
    ok = core.create_namespaced_pod(ns, pod("ok"), dry_run="All")
    assert ok.spec.containers[0].resources.limits == {"cpu": "1", "memory": "512Mi"}

    egress = client.NetworkingV1Api(api_client).read_namespaced_network_policy("kaizen-egress", ns)
    assert egress.spec.pod_selector.to_dict() == {"match_expressions": None, "match_labels": None}
    assert egress.spec.policy_types == ["Egress"]
    blocks = [p.ip_block for p in egress.spec.egress[0].to]
    assert "169.254.0.0/16" in blocks[0]._except
    assert "10.0.0.0/8" in blocks[0]._except
