"""H2 / M8: a workspace developer cannot choose what runs in gateway pods beyond what
the platform allows (image, compute, replicas, Service type, Ingress host and class),
and what is rendered runs under Pod Security ``restricted`` with egress kept off
link-local and cluster-internal addresses."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kaizen_api.server.guards import WorkspacePolicy, pod_security_labels
from kaizen_operator.gateway.render import GatewayInputs, render_gateway
from tests.support.kube import eventually, kubectl
from tests.support.objects import gateway

GROUP, VERSION = "kaizen.studio", "v1alpha1"


def create_gateway(api_client: client.ApiClient, ns: str, body: dict[str, Any]) -> None:
    body = {**body, "metadata": {"name": body["metadata"]["name"]}}
    body.pop("status", None)
    client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        GROUP, VERSION, ns, "gateways", body
    )


def ready(api_client: client.ApiClient, ns: str, name: str) -> dict[str, Any] | None:
    obj = client.CustomObjectsApi(api_client).get_namespaced_custom_object(
        GROUP, VERSION, ns, "gateways", name
    )
    if (obj.get("status") or {}).get("observedGeneration") != obj["metadata"]["generation"]:
        return None
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Ready"), None)


def refused(api_client: client.ApiClient, ns: str, name: str) -> dict[str, Any]:
    return eventually(
        lambda: (c := ready(api_client, ns, name)) and c["reason"] == "NotAllowed" and c,
        timeout=60,
        what=f"Gateway {name} refused NotAllowed",
    )


def deployment(api_client: client.ApiClient, ns: str, name: str) -> Any | None:
    try:
        return client.AppsV1Api(api_client).read_namespaced_deployment(f"{name}-gateway", ns)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def test_a_developer_cannot_run_their_own_image(
    operator: Any, api_client: client.ApiClient, namespace: str
) -> None:
    create_gateway(api_client, namespace, gateway("evil", image="attacker/img:latest"))
    condition = refused(api_client, namespace, "evil")
    assert condition["status"] == "False"
    assert "spec.image 'attacker/img:latest' is not an allowed image" in condition["message"]
    assert "gatewayPolicy.allowedImages" in condition["message"]
    assert deployment(api_client, namespace, "evil") is None


def test_an_allowed_gateway_keeps_its_pods_when_edited_to_a_foreign_image(
    operator: Any, api_client: client.ApiClient, namespace: str
) -> None:
    create_gateway(api_client, namespace, gateway("dev"))
    good = eventually(lambda: deployment(api_client, namespace, "dev"), what="Deployment")
    image = good.spec.template.spec.containers[0].image
    client.CustomObjectsApi(api_client).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "gateways", "dev", {"spec": {"image": "attacker/img:2"}}
    )
    refused(api_client, namespace, "dev")
    assert deployment(api_client, namespace, "dev").spec.template.spec.containers[0].image == image


def test_compute_replicas_and_exposure_are_bounded(
    operator: Any, api_client: client.ApiClient, namespace: str
) -> None:
    create_gateway(
        api_client,
        namespace,
        gateway(
            "hog",
            replicas=1000,
            resources={"limits": {"nvidia.com/gpu": 8, "memory": "512Gi"}},
            exposure={
                "serviceType": "LoadBalancer",
                "ingress": {"host": "*.example.com", "className": "internal"},
            },
        ),
    )
    message = refused(api_client, namespace, "hog")["message"]
    for rule in (
        "spec.replicas 1000 exceeds gatewayPolicy.maxReplicas 20",
        "spec.resources.limits.nvidia.com/gpu is not an allowed resource",
        "spec.resources.limits.memory 512Gi exceeds gatewayPolicy.maxResources.memory 8Gi",
        "spec.exposure.serviceType LoadBalancer is not allowed",
        "spec.exposure.ingress.className 'internal' is not allowed",
    ):
        assert rule in message
    assert deployment(api_client, namespace, "hog") is None
    services = client.CoreV1Api(api_client).list_namespaced_service(namespace).items
    assert not [s for s in services if s.spec.type != "ClusterIP"]


@pytest.fixture
def restricted_namespace(api_client: client.ApiClient) -> Iterator[str]:
    """A namespace labelled as the facade labels workspace namespaces."""
    name = f"psa-{uuid.uuid4().hex[:8]}"
    labels = pod_security_labels(WorkspacePolicy())
    core = client.CoreV1Api(api_client)
    core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels))
    )
    yield name
    core.delete_namespace(name, propagation_policy="Background")


def pod_of(template: dict[str, Any], name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": template["spec"]}


def test_rendered_gateway_pods_satisfy_pod_security_restricted(
    api_client: client.ApiClient, restricted_namespace: str
) -> None:
    gw = gateway("dev")
    gw["metadata"]["namespace"] = restricted_namespace
    plan = render_gateway(
        GatewayInputs(gw, (), {}, False, None, None, "example.test/kaizen:1", datetime.now(UTC))
    )
    template = next(c for c in plan.children if c["kind"] == "Deployment")["spec"]["template"]
    core = client.CoreV1Api(api_client)
    account = next(c for c in plan.children if c["kind"] == "ServiceAccount")
    account["metadata"].pop("ownerReferences")  # no Gateway object here to own it
    core.create_namespaced_service_account(restricted_namespace, account)
    # Accepted as rendered (server-side dry run: admission runs, nothing is stored) ...
    core.create_namespaced_pod(restricted_namespace, pod_of(template, "gw"), dry_run="All")
    # ... while a pod that keeps root and capabilities is refused by Pod Security.
    loose = pod_of(template, "loose")
    loose["spec"] = {**loose["spec"], "securityContext": {}}
    loose["spec"]["containers"] = [
        {k: v for k, v in c.items() if k != "securityContext"} for c in loose["spec"]["containers"]
    ]
    with pytest.raises(ApiException) as refusal:
        core.create_namespaced_pod(restricted_namespace, loose, dry_run="All")
    assert refusal.value.status == 403
    assert 'violates PodSecurity "restricted:latest"' in json.loads(refusal.value.body)["message"]


def test_gateway_egress_is_kept_off_metadata_and_cluster_addresses(
    operator: Any, api_client: client.ApiClient, namespace: str
) -> None:
    create_gateway(api_client, namespace, gateway("dev"))
    policy = eventually(
        lambda: client.NetworkingV1Api(api_client).read_namespaced_network_policy(
            "dev-gateway", namespace
        ),
        what="the gateway's NetworkPolicy",
    ).to_dict()["spec"]
    assert set(policy["policy_types"]) == {"Ingress", "Egress"}
    public = policy["egress"][0]["to"]
    v4 = next(p["ip_block"] for p in public if p["ip_block"]["cidr"] == "0.0.0.0/0")
    assert {"169.254.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"} <= set(v4["_except"])
    v6 = next(p["ip_block"] for p in public if p["ip_block"]["cidr"] == "::/0")
    assert {"fe80::/10", "fc00::/7"} <= set(v6["_except"])
    dns = policy["egress"][1]
    assert {p["port"] for p in dns["ports"]} == {53}
    assert dns["to"][0]["pod_selector"]["match_labels"] == {"k8s-app": "kube-dns"}
    # Ingress only from the gateway's own namespace (and the operator's / ingress
    # controllers' when configured), not from every namespace.
    assert policy["ingress"][0]["_from"][0] == {
        "pod_selector": {"match_expressions": None, "match_labels": None},
        "namespace_selector": None,
        "ip_block": None,
    }


@pytest.fixture
def admission_policy(crds: Path, api_client: client.ApiClient, namespace: str) -> Iterator[str]:
    """The chart's ValidatingAdmissionPolicy for Gateways, bound to this test's namespace
    only (the cluster is shared with other tests)."""
    from tests.integration.test_helm_chart import render

    docs = [
        d for d in yaml.safe_load_all(render("--show-only", "templates/gateway-policy.yaml")) if d
    ]
    name = f"kaizen-gateways-{uuid.uuid4().hex[:6]}"
    for doc in docs:
        doc["metadata"]["name"] = name
    binding = next(d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding")
    binding["spec"]["policyName"] = name
    binding["spec"]["matchResources"] = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    }
    kubectl(
        crds,
        "apply",
        "-f",
        "-",
        stdin=json.dumps({"kind": "List", "apiVersion": "v1", "items": docs}),
    )
    yield namespace
    for doc in docs:
        kubectl(crds, "delete", doc["kind"], name, "--ignore-not-found", check=False)


def test_the_chart_refuses_foreign_images_and_exposure_at_admission(
    admission_policy: str, api_client: client.ApiClient
) -> None:
    ns = admission_policy
    objects = client.CustomObjectsApi(api_client)

    def refused_at_admission(body: dict[str, Any]) -> str | None:
        body = {**body, "metadata": {"name": body["metadata"]["name"]}}
        body.pop("status", None)
        try:
            objects.create_namespaced_custom_object(
                GROUP, VERSION, ns, "gateways", body, dry_run="All"
            )
        except ApiException as exc:
            assert exc.status in (403, 422), exc.body
            return str(json.loads(exc.body)["message"])
        return None  # admitted (the policy may not be in force yet)

    message = eventually(
        lambda: refused_at_admission(gateway("evil", image="attacker/img:latest")),
        timeout=30,
        what="the admission policy in force",
    )
    assert "spec.image attacker/img:latest is not an allowed image" in message
    for spec, rule in (
        ({"replicas": 1000}, "spec.replicas exceeds gatewayPolicy.maxReplicas 20"),
        ({"resources": {"limits": {"nvidia.com/gpu": 8}}}, "gatewayPolicy.maxResources"),
        ({"exposure": {"serviceType": "NodePort"}}, "gatewayPolicy.serviceTypes"),
        (
            {"exposure": {"ingress": {"host": "a.example.com", "className": "internal"}}},
            "gatewayPolicy.ingressClasses",
        ),
    ):
        assert rule in (refused_at_admission(gateway("hog", **spec)) or ""), spec
    assert refused_at_admission(gateway("fine")) is None
