"""The local control plane is a real Kubernetes: scheduling, kwok nodes, GC, RBAC, metrics."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.conftest import impersonating
from tests.support.kube import eventually
from tests.support.kube import kubectl as run_kubectl


def kubectl(kubeconfig: Path, *args: str) -> str:
    return run_kubectl(kubeconfig, *args).stdout


def deployment(
    name: str, replicas: int, annotations: dict[str, str] | None = None
) -> client.V1Deployment:
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels, annotations=annotations),
                spec=client.V1PodSpec(
                    containers=[
                        client.V1Container(
                            name="app",
                            image="registry.invalid/app:1",
                            resources=client.V1ResourceRequirements(
                                requests={"cpu": "100m", "memory": "64Mi"}
                            ),
                        )
                    ]
                ),
            ),
        ),
    )


def test_kwok_nodes_are_ready(api_client: client.ApiClient) -> None:
    nodes = client.CoreV1Api(api_client).list_node().items
    ready = [
        n.metadata.name
        for n in nodes
        if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
    ]
    assert len(ready) >= 2, f"expected at least two Ready nodes, got {ready}"


def test_kubectl_version_reports_client_and_server(kubeconfig: Path) -> None:
    info = json.loads(kubectl(kubeconfig, "version", "-o", "json"))
    assert info["clientVersion"]["gitVersion"].startswith("v1.")
    assert info["serverVersion"]["gitVersion"].startswith("v1.")
    assert info["serverVersion"]["gitVersion"] != "v0.0.0-master+$Format:%H$"


def test_deployment_pods_are_scheduled_onto_kwok_nodes_and_ready(
    api_client: client.ApiClient, namespace: str
) -> None:
    apps = client.AppsV1Api(api_client)
    core = client.CoreV1Api(api_client)
    apps.create_namespaced_deployment(namespace, deployment("web", 3))

    def available() -> int | None:
        status = apps.read_namespaced_deployment_status("web", namespace).status
        return status.available_replicas if status.available_replicas == 3 else None

    eventually(available, what="3 available replicas")
    pods = core.list_namespaced_pod(namespace, label_selector="app=web").items
    assert len(pods) == 3
    nodes = {n.metadata.name for n in core.list_node(label_selector="type=kwok").items}
    for pod in pods:
        assert pod.spec.node_name in nodes
        assert pod.status.phase == "Running"
        assert any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)


def test_deleting_an_owner_garbage_collects_its_dependents(
    api_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    owner = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    ref = client.V1OwnerReference(
        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid
    )
    core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="dependent", owner_references=[ref])),
    )
    core.delete_namespaced_config_map("owner", namespace)

    def gone() -> bool:
        try:
            core.read_namespaced_config_map("dependent", namespace)
        except ApiException as exc:
            return exc.status == 404
        return False

    eventually(gone, what="the garbage collector to delete the dependent")


def test_user_without_rbac_permission_gets_403(
    api_client: client.ApiClient, namespace: str
) -> None:
    alice = client.CoreV1Api(impersonating(api_client, "alice@example.com"))
    with pytest.raises(ApiException) as denied:
        alice.list_namespaced_config_map(namespace)
    assert denied.value.status == 403
    assert "alice@example.com" in denied.value.body

    rbac = client.RbacAuthorizationV1Api(api_client)
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="alice-view"),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="view"
            ),
            subjects=[
                client.RbacV1Subject(
                    kind="User", name="alice@example.com", api_group="rbac.authorization.k8s.io"
                )
            ],
        ),
    )
    # RBAC is the final word both ways: once bound to `view`, alice can read.
    assert eventually(lambda: _can_list(alice, namespace), timeout=10, what="alice to be allowed")


def _can_list(api: client.CoreV1Api, namespace: str) -> bool:
    try:
        api.list_namespaced_config_map(namespace)
    except ApiException:
        return False
    return True


def test_horizontal_pod_autoscaler_scales_on_cpu_from_metrics_server(
    api_client: client.ApiClient, kubeconfig: Path, namespace: str
) -> None:
    apps = client.AppsV1Api(api_client)
    # kwok reports each pod's CPU usage from this annotation: 90m of a 100m request.
    apps.create_namespaced_deployment(
        namespace, deployment("busy", 1, annotations={"kwok.x-k8s.io/usage-cpu": "90m"})
    )
    client.AutoscalingV2Api(api_client).create_namespaced_horizontal_pod_autoscaler(
        namespace,
        client.V2HorizontalPodAutoscaler(
            metadata=client.V1ObjectMeta(name="busy"),
            spec=client.V2HorizontalPodAutoscalerSpec(
                scale_target_ref=client.V2CrossVersionObjectReference(
                    api_version="apps/v1", kind="Deployment", name="busy"
                ),
                min_replicas=1,
                max_replicas=3,
                metrics=[
                    client.V2MetricSpec(
                        type="Resource",
                        resource=client.V2ResourceMetricSource(
                            name="cpu",
                            target=client.V2MetricTarget(
                                type="Utilization", average_utilization=50
                            ),
                        ),
                    )
                ],
            ),
        ),
    )

    def top_pods() -> str | None:
        try:
            out = kubectl(kubeconfig, "top", "pods", "-n", namespace, "--no-headers")
        except subprocess.CalledProcessError:
            return None
        return out if "busy-" in out else None

    line = eventually(top_pods, timeout=120, what="`kubectl top pods` to report the pod")
    assert "m" in line.split()[1], f"unexpected kubectl top output: {line}"

    def scaled() -> int | None:
        replicas = apps.read_namespaced_deployment("busy", namespace).spec.replicas
        return replicas if replicas and replicas > 1 else None

    eventually(scaled, timeout=180, what="the HPA to scale the Deployment above 1 replica")
