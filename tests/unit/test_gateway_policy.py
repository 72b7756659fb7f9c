"""The gateway policy, the shared egress rules and the workspace guards (pure)."""

from __future__ import annotations

import pytest

from kaizen_api.netpolicy import allow_rule, egress_rules
from kaizen_api.server.guards import (
    WorkspacePolicy,
    render_workspace_guards,
    with_pod_security,
)
from kaizen_api.v1alpha1.gateway import GatewayAuth, GatewaySpec, requires_api_key
from kaizen_operator.gateway.policy import GatewayPolicy, violations

IMAGE = "ghcr.io/kaizen-studio/kaizen-studio:1"


def spec(**fields: object) -> GatewaySpec:
    return GatewaySpec.model_validate({"environment": "dev", "agents": {"names": ["a"]}, **fields})


def test_the_default_policy_allows_a_plain_gateway_and_the_operators_image() -> None:
    assert violations(spec(), "ns", GatewayPolicy(), IMAGE) == []
    assert violations(spec(image=IMAGE), "ns", GatewayPolicy(), IMAGE) == []


@pytest.mark.parametrize(
    ("fields", "rule"),
    [
        ({"image": "ghcr.io/kaizen-studio/kaizen-studio-evil:1"}, "spec.image"),
        ({"replicas": 21}, "spec.replicas 21 exceeds gatewayPolicy.maxReplicas 20"),
        ({"resources": {"requests": {"cpu": "4500m"}}}, "spec.resources.requests.cpu 4500m"),
        ({"resources": {"limits": {"hugepages-2Mi": "1Gi"}}}, "not an allowed resource"),
        ({"exposure": {"serviceType": "NodePort"}}, "serviceType NodePort is not allowed"),
        ({"exposure": {"ingress": {"host": "a.example.com"}}}, "ingressHosts: none"),
        (
            {"exposure": {"httpRoute": {"parentRefs": [{"name": "p"}], "hostnames": ["x.io"]}}},
            "spec.exposure.httpRoute.hostnames 'x.io' is not allowed",
        ),
    ],
)
def test_each_rule_is_named(fields: dict[str, object], rule: str) -> None:
    found = violations(spec(**fields), "ns", GatewayPolicy(), IMAGE)
    assert len(found) == 1 and rule in found[0], found


def test_host_patterns_and_classes() -> None:
    policy = GatewayPolicy(
        ingress_hosts=("*.{namespace}.apps.example.com", "api.example.com"),
        ingress_classes=("nginx",),
    )

    def ok(host: str, cls: str | None = None) -> bool:
        ingress = {"host": host, **({"className": cls} if cls else {})}
        return not violations(spec(exposure={"ingress": ingress}), "team", policy, IMAGE)

    assert ok("a.team.apps.example.com") and ok("api.example.com", "nginx")
    assert not ok("team.apps.example.com")  # the pattern's parent
    assert not ok("a.other.apps.example.com")  # another namespace's hosts
    assert not ok("*.apps.example.com")
    assert not ok("a.team.apps.example.com", "internal")


def test_allowed_image_prefixes() -> None:
    policy = GatewayPolicy(allowed_images=("registry.acme.io/kaizen/",))
    assert not violations(spec(image="registry.acme.io/kaizen/gw:2"), "n", policy, IMAGE)
    assert violations(spec(image="registry.acme.io/other:1"), "n", policy, IMAGE)


def test_egress_rules_exclude_link_local_and_private_ranges() -> None:
    rules = egress_rules([{"cidr": "10.0.3.7/32", "ports": [6379]}], ["203.0.113.0/24"])
    v4 = rules[0]["to"][0]["ipBlock"]
    assert v4["cidr"] == "0.0.0.0/0"
    assert {"169.254.0.0/16", "10.0.0.0/8", "203.0.113.0/24"} <= set(v4["except"])
    assert "168.63.129.16/32" in v4["except"]  # Azure's WireServer
    assert "fd00:ec2::/32" in rules[0]["to"][1]["ipBlock"]["except"]  # AWS instance services
    assert rules[1]["ports"][0]["port"] == 53
    assert rules[2] == {
        "to": [{"ipBlock": {"cidr": "10.0.3.7/32"}}],
        "ports": [{"port": 6379, "protocol": "TCP"}],
    }
    assert allow_rule({"namespace": "otel", "podLabels": {"app": "c"}})["to"][0]["podSelector"]
    with pytest.raises(ValueError, match="cidr or namespace"):
        allow_rule({"ports": [1]})


def test_workspace_guards_follow_the_policy() -> None:
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kz-a-b", "labels": {}}}
    labels = with_pod_security(ns, WorkspacePolicy())["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    apply, remove = render_workspace_guards("kz-a-b", WorkspacePolicy())
    assert [o["kind"] for o in apply] == ["ResourceQuota", "LimitRange", "NetworkPolicy"]
    assert remove == []
    quota = apply[0]["spec"]["hard"]
    assert quota["services.loadbalancers"] == "0" and quota["requests.nvidia.com/gpu"] == "0"
    off = WorkspacePolicy.from_json('{"quota": {}, "egress": {"enabled": false}}')
    apply, remove = render_workspace_guards("kz-a-b", off)
    assert [o["kind"] for o in apply] == ["LimitRange"]
    assert remove == [("ResourceQuota", "kaizen-compute"), ("NetworkPolicy", "kaizen-egress")]
    with pytest.raises(ValueError, match="podSecurity"):
        WorkspacePolicy.from_json('{"podSecurity": "lax"}')


def test_gateways_need_keys_outside_dev_unless_told() -> None:
    assert requires_api_key(None, "production")
    assert not requires_api_key(None, "dev")
    assert requires_api_key(GatewayAuth(), "staging")
    assert not requires_api_key(GatewayAuth(mode="None"), "production")
    assert requires_api_key(GatewayAuth(mode="APIKey", apiKeysSecretRef={"name": "k"}), "dev")
