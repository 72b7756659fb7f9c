"""Names and labels of every child object: the one place they are decided."""

from __future__ import annotations

from typing import Any

GATEWAY_LABEL = "kaizen.studio/gateway"
AGENT_LABEL = "kaizen.studio/agent"
PIPELINE_LABEL = "kaizen.studio/pipeline"
REVISION_HASH_LABEL = "kaizen.studio/revision-hash"
BUNDLE_HASH_ANNOTATION = "kaizen.studio/bundle-hash"
MANAGED_BY = "kaizen-operator"

# ScalingPolicy metric type -> the external metric (external.metrics.k8s.io) an HPA reads.
EXTERNAL_METRICS: dict[str, str] = {
    "requestsPerSecond": "kaizen_gateway_requests_per_second",
    "latencyP95": "kaizen_gateway_latency_p95_milliseconds",
    "errorRate": "kaizen_gateway_error_rate_percent",
}


def gateway_workload(gateway: str) -> str:
    """Deployment, Service, ServiceAccount, PDB, NetworkPolicy, Ingress and HPA of a Gateway."""
    return f"{gateway}-gateway"


def gateway_bundle(gateway: str) -> str:
    """The ConfigMap holding a Gateway's agent bundle."""
    return f"{gateway}-gateway-bundle"


def agent_revision(agent: str, revision: int) -> str:
    """The ControllerRevision holding revision ``revision`` of an Agent."""
    return f"{agent}-r{revision}"


def pipeline_revision(pipeline: str, revision: int) -> str:
    """The ControllerRevision holding revision ``revision`` of a Pipeline."""
    return f"{pipeline}-pr{revision}"


def gateway_selector_labels(gateway: str) -> dict[str, str]:
    """Labels that select a Gateway's pods (stable for the Deployment's lifetime)."""
    return {"app.kubernetes.io/name": "kaizen-gateway", GATEWAY_LABEL: gateway}


def gateway_labels(gateway: str, component: str = "gateway") -> dict[str, str]:
    """Recommended app.kubernetes.io labels of a Gateway's children."""
    return {
        **gateway_selector_labels(gateway),
        "app.kubernetes.io/instance": gateway,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "kaizen-studio",
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def agent_labels(agent: str) -> dict[str, str]:
    """Labels of an Agent's ControllerRevisions."""
    return {
        AGENT_LABEL: agent,
        "app.kubernetes.io/part-of": "kaizen-studio",
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def pipeline_labels(pipeline: str) -> dict[str, str]:
    """Labels of a Pipeline's ControllerRevisions."""
    return {
        PIPELINE_LABEL: pipeline,
        "app.kubernetes.io/part-of": "kaizen-studio",
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def owner_reference(parent: dict[str, Any]) -> dict[str, Any]:
    """A controller ownerReference to ``parent`` (garbage collection deletes the child)."""
    return {
        "apiVersion": parent["apiVersion"],
        "kind": parent["kind"],
        "name": parent["metadata"]["name"],
        "uid": parent["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
