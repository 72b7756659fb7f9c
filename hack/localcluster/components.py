"""Command lines of the control-plane processes (pure: paths and ports in, argv out)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.1/16"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
FRONT_PROXY_CLIENT = "front-proxy-client"


@dataclass(frozen=True)
class Layout:
    """Where one running cluster keeps its files, and the ports it listens on."""

    root: Path
    bin: Path
    kwok_config: Path
    ports: dict[str, int]

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['etcd']}"

    @property
    def apiserver_url(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    @property
    def encryption_config(self) -> Path:
        return self.root / "encryption.yaml"

    def pem(self, name: str, ext: str = "crt") -> str:
        return str(self.pki / f"{name}.{ext}")


def etcd(lay: Layout) -> list[str]:
    peer = f"http://127.0.0.1:{lay.ports['etcd-peer']}"
    return [
        str(lay.bin / "etcd"),
        "--name=local",
        f"--data-dir={lay.root / 'etcd'}",
        f"--listen-client-urls={lay.etcd_url}",
        f"--advertise-client-urls={lay.etcd_url}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=local={peer}",
        "--auto-compaction-retention=1",
        "--quota-backend-bytes=4294967296",
        # A throwaway dev/test store: fsync buys nothing here and costs seconds per test.
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


def kube_apiserver(lay: Layout) -> list[str]:
    return [
        str(lay.bin / "kube-apiserver"),
        f"--etcd-servers={lay.etcd_url}",
        "--bind-address=127.0.0.1",
        f"--secure-port={lay.ports['apiserver']}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--authorization-mode=RBAC",
        "--allow-privileged=true",
        f"--client-ca-file={lay.pem('ca')}",
        f"--tls-cert-file={lay.pem('apiserver')}",
        f"--tls-private-key-file={lay.pem('apiserver', 'key')}",
        f"--service-account-key-file={lay.pem('sa', 'pub')}",
        f"--service-account-signing-key-file={lay.pem('sa', 'key')}",
        f"--service-account-issuer={SA_ISSUER}",
        # Secrets encrypted at rest (the config is written by cluster.up).
        f"--encryption-provider-config={lay.encryption_config}",
        # Aggregation layer (metrics-server, later the operator's external metrics).
        f"--requestheader-client-ca-file={lay.pem('front-proxy-ca')}",
        f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={lay.pem(FRONT_PROXY_CLIENT)}",
        f"--proxy-client-key-file={lay.pem(FRONT_PROXY_CLIENT, 'key')}",
        "--enable-priority-and-fairness=false",
        "--profiling=false",
        "--v=0",
    ]


def _component_auth(lay: Layout, port_name: str) -> list[str]:
    kubeconfig = str(lay.kubeconfig)
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={lay.ports[port_name]}",
        f"--cert-dir={lay.root / port_name}",
        "--leader-elect=false",
        "--kube-api-qps=200",
        "--kube-api-burst=400",
    ]


def kube_controller_manager(lay: Layout) -> list[str]:
    return [
        str(lay.bin / "kube-controller-manager"),
        *_component_auth(lay, "kube-controller-manager"),
        "--controllers=*",
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={lay.pem('sa', 'key')}",
        f"--root-ca-file={lay.pem('ca')}",
        f"--cluster-signing-cert-file={lay.pem('ca')}",
        f"--cluster-signing-key-file={lay.pem('ca', 'key')}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        # Faster feedback for autoscaling tests than the 15s default.
        "--horizontal-pod-autoscaler-sync-period=5s",
        "--v=0",
    ]


def kube_scheduler(lay: Layout) -> list[str]:
    return [str(lay.bin / "kube-scheduler"), *_component_auth(lay, "kube-scheduler"), "--v=0"]


def kwok(lay: Layout) -> list[str]:
    return [
        str(lay.bin / "kwok"),
        f"--kubeconfig={lay.kubeconfig}",
        f"--config={lay.root / 'kwok.yaml'}",
        "--manage-all-nodes=false",
        "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
        "--node-ip=127.0.0.1",
        f"--node-port={lay.ports['kwok']}",
        f"--server-address=127.0.0.1:{lay.ports['kwok']}",
        f"--tls-cert-file={lay.pem('kwok')}",
        f"--tls-private-key-file={lay.pem('kwok', 'key')}",
        f"--cidr={POD_CIDR}",
        "--node-lease-duration-seconds=40",
    ]


def metrics_server(lay: Layout) -> list[str]:
    kubeconfig = str(lay.kubeconfig)
    return [
        str(lay.bin / "metrics-server"),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={lay.ports['metrics-server']}",
        f"--tls-cert-file={lay.pem('metrics-server')}",
        f"--tls-private-key-file={lay.pem('metrics-server', 'key')}",
        "--kubelet-preferred-address-types=InternalIP",
        "--kubelet-use-node-status-port",
        # kwok's fake kubelets serve a certificate for 127.0.0.1, not per node name.
        "--kubelet-insecure-tls",
        "--metric-resolution=10s",
        "--kubelet-request-timeout=5s",
    ]


# Start order; `down` stops them in reverse.
PROCESSES = {
    "etcd": etcd,
    "kube-apiserver": kube_apiserver,
    "kube-controller-manager": kube_controller_manager,
    "kube-scheduler": kube_scheduler,
    "kwok": kwok,
    "metrics-server": metrics_server,
}
