"""Objects the local cluster creates once its apiserver answers (pure builders)."""

from __future__ import annotations

import base64
from typing import Any

NODE_COUNT = 2


def kwok_node(name: str) -> dict[str, Any]:
    """A fake Node that kwok keeps Ready and whose pods it marks Running."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {
                "kwok.x-k8s.io/node": "fake",
                "node.alpha.kubernetes.io/ttl": "0",
                # kwok serves every node's kubelet metrics on one port, keyed by path.
                "metrics.k8s.io/resource-metrics-path": f"/metrics/nodes/{name}/metrics/resource",
            },
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/role": "agent",
                "node-role.kubernetes.io/agent": "",
                "type": "kwok",
            },
        },
        "spec": {},
        # Fake nodes cost nothing per pod: room for the load tests' thousand gateways
        # (a real node's default of 110 pods would leave them Pending).
        "status": {
            "allocatable": {"cpu": "256", "memory": "2Ti", "pods": "2500"},
            "capacity": {"cpu": "256", "memory": "2Ti", "pods": "2500"},
        },
    }


def metrics_server_registration(port: int, ca_bundle: bytes) -> list[dict[str, Any]]:
    """Service + APIService that route ``metrics.k8s.io`` to the local metrics-server.

    An ExternalName Service lets the aggregator reach a process on loopback, which
    Endpoints may not name.
    """
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "metrics-server", "namespace": "kube-system"},
            "spec": {
                "type": "ExternalName",
                "externalName": "localhost",
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
            },
        },
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": "v1beta1.metrics.k8s.io"},
            "spec": {
                "group": "metrics.k8s.io",
                "version": "v1beta1",
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
                "caBundle": base64.b64encode(ca_bundle).decode(),
                "service": {"name": "metrics-server", "namespace": "kube-system", "port": port},
            },
        },
    ]


def kubeconfig(
    server: str, ca: str, cert: str, key: str, name: str = "kaizen-local"
) -> dict[str, Any]:
    """A kubeconfig for one user authenticated by client certificate."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority": ca}}],
        "users": [
            {"name": f"{name}-admin", "user": {"client-certificate": cert, "client-key": key}}
        ],
        "contexts": [
            {"name": name, "context": {"cluster": name, "user": f"{name}-admin"}},
        ],
        "current-context": name,
    }
