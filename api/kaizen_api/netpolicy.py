"""Egress NetworkPolicy rules for tenant pods (pure): the internet, DNS, and the
platform endpoints an administrator lists; never link-local (cloud metadata, the
kubelet's node-local services) nor cluster-internal addresses.

Used by the operator (each Gateway's NetworkPolicy) and by the facade (the workspace
namespace's default NetworkPolicy), so both allow exactly the same.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

# Private, shared (CGNAT), loopback and link-local ranges: where pod, service and node
# addresses live, 169.254.169.254 (instance metadata) and Azure's WireServer (tenant pods
# reach DNS through kube-dns, never it directly). Extra cluster ranges that
# are public addresses are added by the administrator (``extra_denied``).
DENIED_V4 = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "127.0.0.0/8",
    "0.0.0.0/8",
    "168.63.129.16/32",
)
DENIED_V6 = ("fc00::/7", "fe80::/10", "::1/128", "fd00:ec2::/32")
DNS_PORTS = [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
DNS_PEER = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
}


def _ports(entry: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    ports = entry.get("ports")
    if not ports:
        return None
    return [{"port": int(p), "protocol": "TCP"} for p in ports]


def allow_rule(entry: Mapping[str, Any]) -> dict[str, Any]:
    """One administrator-listed destination: ``{cidr: 10.0.3.7/32, ports: [6379]}`` or
    ``{namespace: observability, ports: [4317]}`` (optionally ``podLabels``)."""
    if "cidr" in entry:
        peer: dict[str, Any] = {"ipBlock": {"cidr": str(ipaddress.ip_network(entry["cidr"]))}}
    elif "namespace" in entry:
        peer = {
            "namespaceSelector": {
                "matchLabels": {"kubernetes.io/metadata.name": str(entry["namespace"])}
            }
        }
        if entry.get("podLabels"):
            peer["podSelector"] = {"matchLabels": dict(entry["podLabels"])}
    else:
        raise ValueError(f"an egress allow entry needs cidr or namespace: {dict(entry)}")
    rule: dict[str, Any] = {"to": [peer]}
    if (ports := _ports(entry)) is not None:
        rule["ports"] = ports
    return rule


def egress_rules(
    allow: Iterable[Mapping[str, Any]] = (), extra_denied: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """Egress rules: public addresses (any port), DNS to kube-dns, and ``allow``."""
    extra = [ipaddress.ip_network(c) for c in extra_denied]
    v4 = [*DENIED_V4, *(str(n) for n in extra if n.version == 4)]
    v6 = [*DENIED_V6, *(str(n) for n in extra if n.version == 6)]
    return [
        {
            "to": [
                {"ipBlock": {"cidr": "0.0.0.0/0", "except": v4}},
                {"ipBlock": {"cidr": "::/0", "except": v6}},
            ]
        },
        {"to": [DNS_PEER], "ports": DNS_PORTS},
        *(allow_rule(entry) for entry in allow),
    ]
