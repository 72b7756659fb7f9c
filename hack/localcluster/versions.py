"""Pinned component versions and where their binaries and state live."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

KUBERNETES_VERSION = "v1.37.2"
ETCD_VERSION = "v3.7.3"
KWOK_VERSION = "v0.8.0"
METRICS_SERVER_VERSION = "v0.9.0"
HELM_VERSION = "v3.22.0"  # not part of the cluster: the chart's tests install with it
CLI_UTILS_VERSION = "v0.37.2"  # kstatus, Flux's status library, for the GitOps tests
# The Gateway API's standard CRDs (HTTPRoute, ...), taken from its Go module's config/.
GATEWAY_API_VERSION = "v1.4.1"
GATEWAY_API_CRDS = (
    "gateway.networking.k8s.io_gatewayclasses.yaml",
    "gateway.networking.k8s.io_gateways.yaml",
    "gateway.networking.k8s.io_httproutes.yaml",
    "gateway.networking.k8s.io_referencegrants.yaml",
)

HACK_DIR = Path(__file__).resolve().parent.parent
GOMOD_DIR = HACK_DIR / "cluster" / "gomod"


@dataclass(frozen=True)
class Component:
    """One binary: the Go module folder that builds it and the package to build."""

    name: str
    gomod: str
    package: str
    version: str


COMPONENTS: tuple[Component, ...] = (
    Component(
        "kube-apiserver", "kubernetes", "k8s.io/kubernetes/cmd/kube-apiserver", KUBERNETES_VERSION
    ),
    Component(
        "kube-controller-manager",
        "kubernetes",
        "k8s.io/kubernetes/cmd/kube-controller-manager",
        KUBERNETES_VERSION,
    ),
    Component(
        "kube-scheduler", "kubernetes", "k8s.io/kubernetes/cmd/kube-scheduler", KUBERNETES_VERSION
    ),
    Component("etcd", "etcd", "go.etcd.io/etcd/server/v3", ETCD_VERSION),
    Component("kwok", "kwok", "sigs.k8s.io/kwok/cmd/kwok", KWOK_VERSION),
    Component(
        "metrics-server",
        "metrics-server",
        "sigs.k8s.io/metrics-server/cmd/metrics-server",
        METRICS_SERVER_VERSION,
    ),
    Component("helm", "helm", "helm.sh/helm/v3/cmd/helm", HELM_VERSION),
    Component("kstatus", "kstatus", "kaizen.studio/hack/kstatus", CLI_UTILS_VERSION),
)


def cache_root() -> Path:
    """The user's cache folder for Kaizen Studio (``$XDG_CACHE_HOME`` aware)."""
    override = os.environ.get("KAIZEN_CACHE_DIR")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kaizen-studio"


def bin_dir() -> Path:
    """Folder holding the binaries of the pinned Kubernetes version."""
    return cache_root() / "k8s" / KUBERNETES_VERSION / "bin"


def gateway_api_crd_dir() -> Path:
    """Folder with the Gateway API's standard CRDs, copied out of its Go module."""
    return cache_root() / "gateway-api" / GATEWAY_API_VERSION


def state_dir() -> Path:
    """Folder holding the running cluster's certificates, data, logs and pids."""
    override = os.environ.get("KAIZEN_CLUSTER_DIR")
    return Path(override) if override else cache_root() / "cluster"
