"""What the platform lets a Gateway ask for (pure): images, compute, replicas, Service
types, Ingress hosts and classes, HTTPRoute host names. A Gateway asking for more is
not rendered: its Ready condition is False with reason ``NotAllowed`` and a message
naming each rule it breaks, and the pods it had keep running unchanged.

The operator's flags (chart ``gatewayPolicy``) set it; the chart also installs the
same rules as a ValidatingAdmissionPolicy, so a refused spec is usually refused at
admission already."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kaizen_api.v1alpha1.common import quantity_value
from kaizen_api.v1alpha1.gateway import GatewaySpec

NOT_ALLOWED = "NotAllowed"


@dataclass(frozen=True)
class GatewayPolicy:
    """Limits on Gateway specs; the defaults are the chart's."""

    # Image prefixes (e.g. "ghcr.io/kaizen-studio/") a Gateway's spec.image may start
    # with; the operator's own gateway image is always allowed.
    allowed_images: tuple[str, ...] = ()
    max_replicas: int = 20
    # Resource names a Gateway may request, and the most per container (requests and
    # limits alike).
    max_resources: Mapping[str, str] = field(
        default_factory=lambda: {"cpu": "4", "memory": "8Gi", "ephemeral-storage": "1Gi"}
    )
    service_types: tuple[str, ...] = ("ClusterIP",)
    # Host patterns for Ingress hosts and HTTPRoute host names ("*" any, "*.example.com"
    # its subdomains; "{namespace}" is the Gateway's namespace). None: no Ingress host
    # and no route host name is allowed.
    ingress_hosts: tuple[str, ...] = ()
    # IngressClass names an Ingress may name ("*" any); an Ingress naming none (the
    # cluster default) is always allowed.
    ingress_classes: tuple[str, ...] = ()
    # Namespaces whose pods may reach gateway pods besides the gateway's own namespace
    # (the ingress controller's; the operator's own is added by the operator).
    ingress_namespaces: tuple[str, ...] = ()
    # Egress destinations beyond the internet and DNS (Redis, OTLP collector), as in
    # kaizen_api.netpolicy.allow_rule, and extra cluster ranges to deny.
    egress_allow: tuple[Mapping[str, Any], ...] = ()
    egress_denied: tuple[str, ...] = ()


def _host_allowed(host: str, patterns: tuple[str, ...], namespace: str) -> bool:
    for pattern in patterns:
        pattern = pattern.replace("{namespace}", namespace)
        if pattern == "*" or host == pattern:
            return True
        # "*.example.com" allows a.example.com and *.example.com, not example.com or
        # a.b.example.com's parent domains.
        if pattern.startswith("*.") and host.endswith(pattern[1:]) and host != pattern[2:]:
            return True
    return False


def violations(
    spec: GatewaySpec, namespace: str, policy: GatewayPolicy, default_image: str
) -> list[str]:
    """Each rule ``spec`` breaks, as a sentence naming the field and the limit."""
    found: list[str] = []
    image = spec.image or ""
    if (
        image
        and image != default_image
        and not any(image.startswith(p) for p in policy.allowed_images)
    ):
        allowed = ", ".join(policy.allowed_images) or f"only the operator's ({default_image})"
        found.append(
            f"spec.image {image!r} is not an allowed image (gatewayPolicy.allowedImages: {allowed})"
        )
    if spec.replicas > policy.max_replicas:
        found.append(
            f"spec.replicas {spec.replicas} exceeds gatewayPolicy.maxReplicas {policy.max_replicas}"
        )
    for kind in ("requests", "limits"):
        for name, value in sorted((getattr(spec.resources, kind, None) or {}).items()):
            most = policy.max_resources.get(name)
            if most is None:
                found.append(
                    f"spec.resources.{kind}.{name} is not an allowed resource "
                    f"(gatewayPolicy.maxResources: {', '.join(sorted(policy.max_resources))})"
                )
            elif quantity_value(value) > quantity_value(most):
                found.append(
                    f"spec.resources.{kind}.{name} {value} exceeds gatewayPolicy.maxResources."
                    f"{name} {most}"
                )
    exposure = spec.exposure
    if exposure is not None:
        if str(exposure.service_type) not in policy.service_types:
            found.append(
                f"spec.exposure.serviceType {exposure.service_type} is not allowed "
                f"(gatewayPolicy.serviceTypes: {', '.join(policy.service_types)})"
            )
        hosts = ", ".join(policy.ingress_hosts) or "none"
        if exposure.ingress is not None:
            ing = exposure.ingress
            if not _host_allowed(ing.host, policy.ingress_hosts, namespace):
                found.append(
                    f"spec.exposure.ingress.host {ing.host!r} is not allowed "
                    f"(gatewayPolicy.ingressHosts: {hosts})"
                )
            if ing.class_name and not any(
                fnmatch.fnmatchcase(ing.class_name, c) for c in policy.ingress_classes
            ):
                classes = ", ".join(policy.ingress_classes) or "only the cluster default"
                found.append(
                    f"spec.exposure.ingress.className {ing.class_name!r} is not allowed "
                    f"(gatewayPolicy.ingressClasses: {classes})"
                )
        if exposure.http_route is not None:
            for host in exposure.http_route.hostnames or []:
                if not _host_allowed(host, policy.ingress_hosts, namespace):
                    found.append(
                        f"spec.exposure.httpRoute.hostnames {host!r} is not allowed "
                        f"(gatewayPolicy.ingressHosts: {hosts})"
                    )
    return found
