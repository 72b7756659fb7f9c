"""M2: the operator's external metrics API answers only the apiserver's aggregation
layer, for callers RBAC allows, and cannot be steered to other objects.

Attacks: (1) any pod calls the operator's HTTPS port directly for another tenant's
gateway metrics; (2) a label selector value with ``../`` and ``?`` made the operator
GET an arbitrary path (a Secret in kube-system) with its own token, answering 404 vs
503 (an existence oracle)."""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from tests.support.kube import eventually, kubectl
from tests.support.processes import LocalProcess, free_port, start_operator

METRIC = "kaizen_gateway_requests_per_second"
BASE = "/apis/external.metrics.k8s.io/v1beta1"


@pytest.fixture
def metrics_operator(
    crds: Path, api_client: client.ApiClient, tmp_path: Path
) -> Iterator[tuple[str, str]]:
    """An operator serving the external metrics API (it registers the cluster-wide
    APIService): (its HTTPS URL, the namespace it watches)."""
    ns = f"t-m2-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    port = free_port()
    operator: LocalProcess
    operator, _ = start_operator(
        crds,
        ns,
        tmp_path / "operator.log",
        f"kaizen.studio/test-worker={ns}",  # no namespace has the label: no Promotions
        extra_args=["--external-metrics", "--webhook-listen", f"127.0.0.1:{port}"],
    )
    try:
        registration = client.ApiregistrationV1Api(api_client)
        eventually(
            lambda: any(
                c.type == "Available" and c.status == "True"
                for c in registration.read_api_service(
                    "v1beta1.external.metrics.k8s.io"
                ).status.conditions
                or []
            ),
            timeout=60,
            what="the external metrics APIService to be Available",
        )
        yield f"https://127.0.0.1:{port}", ns
    finally:
        operator.stop()
        core.delete_namespace(ns, propagation_policy="Background")


def front_proxy(kubeconfig: Path) -> tuple[str, str]:
    pki = kubeconfig.parent / "pki"
    if not (pki / "front-proxy-client.crt").exists():
        pytest.skip("needs the local control plane's front-proxy client certificate")
    return str(pki / "front-proxy-client.crt"), str(pki / "front-proxy-client.key")


def direct(url: str, path: str, cert: tuple[str, str] | None = None, **headers: str) -> Any:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if cert:
        context.load_cert_chain(*cert)
    return httpx.get(url + path, headers=headers, verify=context, timeout=30)


def query(ns: str, selector: str) -> str:
    return f"{BASE}/namespaces/{ns}/{METRIC}?labelSelector={selector}"


def test_a_pod_cannot_read_metrics_directly(metrics_operator: tuple[str, str]) -> None:
    url, ns = metrics_operator
    r = direct(url, query(ns, "kaizen.studio/gateway%3Dprod"), **{"X-Remote-User": "admin"})
    assert r.status_code == 401
    assert r.json()["reason"] == "Unauthorized"
    assert "aggregation layer" in r.json()["message"]
    assert direct(url, BASE).status_code == 401


def test_a_certificate_from_another_ca_is_refused(
    metrics_operator: tuple[str, str], kubeconfig: Path
) -> None:
    url, ns = metrics_operator
    pki = kubeconfig.parent / "pki"
    if not (pki / "admin.crt").exists():
        pytest.skip("needs the local control plane's admin certificate")
    # A valid cluster client certificate, but not the front proxy's: the handshake fails.
    with pytest.raises(httpx.HTTPError):
        direct(
            url,
            query(ns, "kaizen.studio/gateway%3Dprod"),
            (str(pki / "admin.crt"), str(pki / "admin.key")),
        )


def test_forwarded_users_are_checked_with_rbac(
    metrics_operator: tuple[str, str], kubeconfig: Path
) -> None:
    url, ns = metrics_operator
    proxy = front_proxy(kubeconfig)
    path = query(ns, "kaizen.studio/gateway%3Dprod")
    nobody = direct(url, path, proxy, **{"X-Remote-User": "kaizen:mallory@example.com"})
    assert nobody.status_code == 403
    assert (
        f"may not get {METRIC}.external.metrics.k8s.io in namespace {ns}"
        in nobody.json()["message"]
    )
    admin = direct(
        url, path, proxy, **{"X-Remote-User": "admin", "X-Remote-Group": "system:masters"}
    )
    assert admin.status_code == 404  # allowed; no such Gateway


def test_the_label_selector_cannot_steer_the_operators_requests(
    metrics_operator: tuple[str, str], api_client: client.ApiClient, kubeconfig: Path
) -> None:
    _, ns = metrics_operator
    core = client.CoreV1Api(api_client)
    core.create_namespaced_secret(
        ns, client.V1Secret(metadata=client.V1ObjectMeta(name="present"), string_data={"k": "v"})
    )
    answers = []
    for secret in ("present", "absent"):
        target = f"../../../../../../api/v1/namespaces/{ns}/secrets/{secret}?x"
        selector = "kaizen.studio/gateway%3D" + target.replace("?", "%3F").replace("/", "%2F")
        # Through the aggregation layer, as a cluster admin (allowed to read metrics).
        result = kubectl(kubeconfig, "get", "--raw", query(ns, selector), check=False)
        answers.append((result.returncode, result.stderr.strip()))
    assert answers[0] == answers[1]  # no existence oracle
    status, message = answers[0]
    assert status != 0
    assert "BadRequest" in message and "must be plain Kubernetes names" in message, message
