"""Real autoscaling: metrics-server reads kwok's emulated CPU usage of the gateway pods,
the HPA the operator rendered scales the Deployment up within bounds and back down
after the stabilization window."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes import client

from tests.e2e.test_operator_reconciles import apply_yaml, gateway, mock_agent, scaling_policy
from tests.support.kube import eventually

USAGE = "kwok.x-k8s.io/usage-cpu"


def set_usage(apps: client.AppsV1Api, ns: str, cpu: str) -> None:
    """Simulate load: kwok reports this CPU usage for every pod of the gateway."""
    apps.patch_namespaced_deployment(
        "web-gateway",
        ns,
        {"spec": {"template": {"metadata": {"annotations": {USAGE: cpu}}}}},
        field_manager="load-generator",
    )


def test_gateway_scales_up_under_load_and_down_after_cooldown(
    operator: Any, crds: Path, api_client: client.ApiClient, namespace: str
) -> None:
    apply_yaml(
        crds,
        namespace,
        [
            mock_agent("hello"),
            gateway(
                "web",
                "production",
                ["hello"],
                resources={"requests": {"cpu": "100m", "memory": "64Mi"}},
            ),
            scaling_policy(
                "web",
                "web",
                minReplicas=1,
                maxReplicas=3,
                metrics=[{"type": "cpu", "averageUtilization": 50}],
                behavior={
                    "scaleUp": {
                        "stabilizationWindow": "0s",
                        "maxReplicasChange": 2,
                        "period": "5s",
                    },
                    "scaleDown": {
                        "stabilizationWindow": "10s",
                        "maxReplicasChange": 3,
                        "period": "5s",
                    },
                },
            ),
        ],
    )
    apps = client.AppsV1Api(api_client)
    eventually(
        lambda: apps.read_namespaced_deployment("web-gateway", namespace),
        timeout=60,
        what="Deployment",
    )
    set_usage(apps, namespace, "95m")  # 95% of the 100m request, target 50%

    def replicas() -> int:
        return int(apps.read_namespaced_deployment("web-gateway", namespace).spec.replicas)

    scaled_up = eventually(
        lambda: replicas() if replicas() > 1 else None, timeout=180, what="scale up under load"
    )
    assert scaled_up <= 3
    eventually(lambda: replicas() == 3, timeout=180, what="scale up to maxReplicas")
    hpa = client.AutoscalingV2Api(api_client).read_namespaced_horizontal_pod_autoscaler(
        "web-gateway", namespace
    )
    assert hpa.status.current_metrics[0].resource.current.average_utilization >= 50

    set_usage(apps, namespace, "5m")
    eventually(
        lambda: replicas() == 1, timeout=240, what="scale down after the stabilization window"
    )
    status = client.CustomObjectsApi(api_client).get_namespaced_custom_object(
        "kaizen.studio", "v1alpha1", namespace, "scalingpolicies", "web"
    )["status"]
    assert status["lastScaleTime"]
    assert any(c["type"] == "AbleToScale" for c in status["conditions"])
