"""Scaling on the gateway's own traffic: the operator serves external.metrics.k8s.io
through the aggregation layer, computed from a real kaizen-gateway process's /metrics,
and the HPA it rendered scales the Deployment on requests per second."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.e2e.test_operator_reconciles import apply_yaml, gateway, get, mock_agent, scaling_policy
from tests.support.kube import eventually, kubectl
from tests.support.processes import start_devrunner, start_operator

METRIC = "kaizen_gateway_requests_per_second"


def chat(url: str) -> None:
    body = {"model": "hello", "messages": [{"role": "user", "content": "hi"}]}
    request = urllib.request.Request(  # noqa: S310 - loopback test URL
        f"{url}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5):  # noqa: S310
        pass


def read_metric(kubeconfig: Path, ns: str, gw: str) -> float | None:
    """The value an HPA would read, through the apiserver's aggregation layer (None
    while the API answers an error, e.g. 503 before the gateway process serves)."""
    path = (
        f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/{METRIC}"
        f"?labelSelector=kaizen.studio/gateway%3D{gw}"
    )
    result = kubectl(kubeconfig, "get", "--raw", path, check=False)
    if result.returncode != 0:
        return None
    items = json.loads(result.stdout)["items"]
    value = str(items[0]["value"])
    return float(value[:-1]) / 1000 if value.endswith("m") else float(value)


@pytest.fixture
def metrics_namespace(api_client: client.ApiClient) -> Iterator[str]:
    ns = f"t-xm-{uuid.uuid4().hex[:8]}"  # its own operator: the APIService is cluster-wide
    core = client.CoreV1Api(api_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    yield ns
    core.delete_namespace(ns, propagation_policy="Background")


def test_requests_per_second_scale_the_gateway_up_and_down(
    crds: Path, api_client: client.ApiClient, metrics_namespace: str, tmp_path: Path
) -> None:
    ns = metrics_namespace
    endpoints = tmp_path / "endpoints"
    endpoints.mkdir()
    operator, _ = start_operator(
        crds,
        ns,
        tmp_path / "operator.log",
        f"kaizen.studio/test-worker={ns}",  # no namespace has the label: its webhook admits none
        endpoints,
        extra_args=["--external-metrics"],
    )
    runner = None
    stop = threading.Event()
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
        apply_yaml(
            crds,
            ns,
            [
                mock_agent("hello"),
                gateway("web", "dev", ["hello"]),
                scaling_policy(
                    "web",
                    "web",
                    minReplicas=1,
                    maxReplicas=3,
                    metrics=[{"type": "requestsPerSecond", "averageValue": 4}],
                    behavior={
                        "scaleUp": {"stabilizationWindow": "0s", "maxReplicasChange": 3},
                        "scaleDown": {"stabilizationWindow": "5s", "maxReplicasChange": 3},
                    },
                ),
            ],
        )
        runner = start_devrunner(crds, ns, tmp_path / "gateways", endpoints / f"{ns}.json")
        url = eventually(
            lambda: (
                (endpoints / f"{ns}.json").exists()
                and json.loads((endpoints / f"{ns}.json").read_text()).get(f"{ns}/web")
            ),
            what="the gateway process",
        )
        eventually(lambda: read_metric(crds, ns, "web") == 0 or None, what="an idle metric")

        def traffic() -> None:  # ~25 requests/s: 3 pods' worth at 4 per pod
            while not stop.is_set():
                chat(url)
                time.sleep(0.04)

        sender = threading.Thread(target=traffic, daemon=True)
        sender.start()
        apps = client.AppsV1Api(api_client)

        def replicas() -> int:
            return int(apps.read_namespaced_deployment("web-gateway", ns).spec.replicas)

        eventually(lambda: replicas() == 3, timeout=120, what="scale up to maxReplicas")
        assert (read_metric(crds, ns, "web") or 0) > 8
        policy = get(api_client, ns, "scalingpolicies", "web")
        conds = {c["type"]: c for c in policy["status"]["conditions"]}
        assert conds["Ready"]["status"] == "True"
        assert conds["MetricsDegraded"]["status"] == "False"

        stop.set()
        sender.join()
        eventually(lambda: replicas() == 1, timeout=180, what="scale down without traffic")
    finally:
        stop.set()
        if runner is not None:
            runner.stop()
        operator.stop()
    # A clean stop unregisters the API, so nothing is left pointing at a dead process.
    with pytest.raises(client.ApiException) as gone:
        client.ApiregistrationV1Api(api_client).read_api_service("v1beta1.external.metrics.k8s.io")
    assert gone.value.status == 404
