"""L3 / H4 / M2: the chart gives the facade and the operator default-deny
NetworkPolicies (only their ports reachable; egress never to link-local addresses, the
cloud metadata service), and the apiserver accepts them as rendered."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tests.integration.test_helm_chart import render
from tests.support.kube import kubectl


def policies(*values: str) -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(render(*values)) if d]
    return {
        d["metadata"]["labels"]["app.kubernetes.io/component"]: d
        for d in docs
        if d["kind"] == "NetworkPolicy"
        and d["metadata"]["labels"].get("app.kubernetes.io/component") in ("api", "operator")
    }


def excepted(policy: dict[str, Any]) -> set[str]:
    return {
        cidr
        for rule in policy["spec"]["egress"]
        for peer in rule.get("to", [])
        for cidr in peer.get("ipBlock", {}).get("except", [])
    }


def test_facade_and_operator_are_default_deny(crds: Path, own_namespace: str) -> None:
    found = policies()
    assert set(found) == {"api", "operator"}
    for policy in found.values():
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
        # cloud metadata: link-local, AWS's instance services, Azure's WireServer
        assert {"169.254.0.0/16", "fd00:ec2::/32", "168.63.129.16/32"} <= excepted(policy)
        assert {} not in policy["spec"]["egress"]  # no allow-all rule
    api_ports = [p["port"] for rule in found["api"]["spec"]["ingress"] for p in rule["ports"]]
    assert api_ports == [8000]
    operator = found["operator"]["spec"]["ingress"]
    assert [p["port"] for p in operator[0]["ports"]] == [9443]  # the apiserver's callbacks
    metrics = operator[1]
    assert [p["port"] for p in metrics["ports"]] == [9090]
    assert metrics["from"] == [{"podSelector": {}}]  # the release namespace only
    for policy in found.values():
        policy["metadata"]["namespace"] = own_namespace
        kubectl(crds, "apply", "--dry-run=server", "-f", "-", stdin=json.dumps(policy))


def test_listed_namespaces_and_api_server_addresses_narrow_them() -> None:
    found = policies(
        "--set",
        "networkPolicy.apiFrom={ingress-nginx}",
        "--set",
        "networkPolicy.apiEgressCIDRs={10.96.0.1/32,10.0.5.0/24}",
    )
    api = found["api"]["spec"]
    assert api["ingress"][0]["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    ]
    cidrs = [peer["ipBlock"]["cidr"] for peer in api["egress"][0]["to"]]
    assert cidrs == ["10.96.0.1/32", "10.0.5.0/24"]
    assert not [
        peer
        for rule in api["egress"]
        for peer in rule.get("to", [])
        if peer.get("ipBlock", {}).get("cidr") == "0.0.0.0/0"
    ]
