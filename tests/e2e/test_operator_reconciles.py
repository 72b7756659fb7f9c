"""The operator on the real control plane: examples become Ready, revisions roll only
the dev gateway, drift is repaired, overrides pin and expire, conflicts are refused."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.support.kube import event_reasons, events_of, eventually, kubectl
from tests.support.manifests import example_files

GROUP, VERSION = "kaizen.studio", "v1alpha1"


def custom(api_client: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client)


def get(api_client: client.ApiClient, ns: str, plural: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = custom(api_client).get_namespaced_custom_object(
        GROUP, VERSION, ns, plural, name
    )
    return obj


def apply_yaml(kubeconfig: Path, ns: str, docs: list[dict[str, Any]]) -> None:
    kubectl(kubeconfig, "apply", "-n", ns, "-f", "-", stdin=yaml.safe_dump_all(docs))


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next(
        (c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), None
    )


def mock_agent(name: str, prompt: str = "Hi.") -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Agent",
        "metadata": {"name": name},
        "spec": {"model": {"provider": "mock", "name": "echo"}, "systemPrompt": prompt},
    }


def gateway(name: str, environment: str, agents: list[str], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Gateway",
        "metadata": {"name": name},
        "spec": {"environment": environment, "agents": {"names": agents}, **spec},
    }


def scaling_policy(name: str, target: str, **spec: Any) -> dict[str, Any]:
    base = {
        "targetRef": {"name": target},
        "minReplicas": 1,
        "maxReplicas": 5,
        "metrics": [{"type": "cpu", "averageUtilization": 50}],
    }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ScalingPolicy",
        "metadata": {"name": name},
        "spec": {**base, **spec},
    }


def bundle(core: client.CoreV1Api, ns: str, gw: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        core.read_namespaced_config_map(f"{gw}-gateway-bundle", ns).data["bundle.json"]
    )
    return data


def test_examples_become_ready_with_pods_on_kwok_nodes(
    operator: Any, crds: Path, api_client: client.ApiClient, namespace: str
) -> None:
    files = [arg for f in example_files() for arg in ("-f", str(f))]
    kubectl(crds, "apply", "-n", namespace, *files)
    for kind in ("agents", "gateways", "scalingpolicies"):
        kubectl(
            crds,
            "wait",
            "-n",
            namespace,
            f"{kind}.kaizen.studio",
            "--all",
            "--for=condition=Ready",
            "--timeout=120s",
        )
    core = client.CoreV1Api(api_client)

    def all_pods() -> list[Any] | None:
        pods = core.list_namespaced_pod(
            namespace, label_selector="app.kubernetes.io/name=kaizen-gateway"
        ).items
        running = [p for p in pods if p.status.phase == "Running"]
        return running if len(running) == 1 + 2 + 3 else None

    pods = eventually(all_pods, timeout=90, what="1 dev + 2 staging + 3 production pods Running")
    nodes = {n.metadata.name for n in core.list_node(label_selector="type=kwok").items}
    assert len(pods) >= 1 + 2 + 3
    assert all(p.spec.node_name in nodes and p.status.phase == "Running" for p in pods)
    dev = get(api_client, namespace, "gateways", "dev")
    assert {s["agent"] for s in dev["status"]["servedRevisions"]} == {
        "support-assistant",
        "hello-agent",
        "order-desk",
        # the agents of the example pipelines (26-pipelines.yaml)
        *("researcher", "writer", "editor", "optimist", "skeptic", "team-lead"),
        *("billing-desk", "tech-desk", "front-desk", "judge-a", "judge-b", "judge-c"),
    }
    # No secret value ever lands in a ConfigMap or status.
    for cm in core.list_namespaced_config_map(namespace).items:
        assert "replace-with-your" not in json.dumps(cm.data or {})
    assert "replace-with-your" not in json.dumps(
        custom(api_client).list_namespaced_custom_object(GROUP, VERSION, namespace, "agents")
    )


def test_prompt_change_makes_a_revision_and_rolls_only_the_dev_gateway(
    operator: Any, crds: Path, api_client: client.ApiClient, namespace: str
) -> None:
    apply_yaml(
        crds,
        namespace,
        [
            mock_agent("hello"),
            gateway("dev", "dev", ["hello"]),
            gateway("staging", "staging", ["hello"]),
        ],
    )
    kubectl(
        crds,
        "wait",
        "-n",
        namespace,
        "gateways.kaizen.studio",
        "--all",
        "--for=condition=Ready",
        "--timeout=90s",
    )
    core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
    eventually(lambda: bundle(core, namespace, "dev")["agents"], what="dev to serve hello")
    template_hash = apps.read_namespaced_deployment(
        "dev-gateway", namespace
    ).spec.template.metadata.annotations
    staging_before = bundle(core, namespace, "staging")
    assert staging_before["agents"] == []  # staging serves only what Promotions put there

    custom(api_client).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "agents", "hello", {"spec": {"systemPrompt": "Be brief."}}
    )
    eventually(
        lambda: (
            get(api_client, namespace, "agents", "hello").get("status", {}).get("latestRevision")
            == 2
        ),
        what="revision 2",
    )
    served = eventually(
        lambda: [a for a in bundle(core, namespace, "dev")["agents"] if a["revision"] == 2],
        what="dev to serve revision 2",
    )
    assert served[0]["spec"]["systemPrompt"] == "Be brief."
    new_hash = apps.read_namespaced_deployment(
        "dev-gateway", namespace
    ).spec.template.metadata.annotations
    assert new_hash != template_hash
    assert bundle(core, namespace, "staging") == staging_before
    revisions = client.AppsV1Api(api_client).list_namespaced_controller_revision(
        namespace, label_selector="kaizen.studio/agent=hello"
    )
    assert sorted(r.revision for r in revisions.items) == [1, 2]
    eventually(
        lambda: "RevisionCreated" in event_reasons(api_client, namespace, "hello"), what="Event"
    )


def _exists(read: Any) -> bool:
    try:
        read()
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def test_deleted_or_edited_children_are_repaired(
    operator: Any, crds: Path, api_client: client.ApiClient, namespace: str
) -> None:
    apply_yaml(crds, namespace, [mock_agent("hello"), gateway("dev", "dev", ["hello"], replicas=2)])
    kubectl(
        crds,
        "wait",
        "-n",
        namespace,
        "gateways.kaizen.studio/dev",
        "--for=condition=Ready",
        "--timeout=90s",
    )
    core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
    apps.delete_namespaced_deployment("dev-gateway", namespace)
    core.delete_namespaced_service("dev-gateway", namespace)
    core.delete_namespaced_config_map("dev-gateway-bundle", namespace)
    eventually(
        lambda: _exists(lambda: apps.read_namespaced_deployment("dev-gateway", namespace)),
        timeout=30,
        what="Deployment back",
    )
    eventually(
        lambda: _exists(lambda: core.read_namespaced_service("dev-gateway", namespace)),
        timeout=30,
        what="Service back",
    )
    eventually(
        lambda: _exists(lambda: core.read_namespaced_config_map("dev-gateway-bundle", namespace)),
        timeout=30,
        what="ConfigMap back",
    )
    core.patch_namespaced_service(
        "dev-gateway", namespace, [{"op": "replace", "path": "/spec/ports/0/port", "value": 9999}]
    )
    eventually(
        lambda: core.read_namespaced_service("dev-gateway", namespace).spec.ports[0].port == 80,
        timeout=30,
        what="port repaired",
    )
    apps.patch_namespaced_deployment("dev-gateway", namespace, {"spec": {"replicas": 5}})
    eventually(
        lambda: apps.read_namespaced_deployment("dev-gateway", namespace).spec.replicas == 2,
        timeout=30,
        what="replicas repaired",
    )


def test_pdb_is_pruned_when_the_gateway_scales_to_one_and_children_are_collected(
    operator: Any, crds: Path, api_client: client.ApiClient, namespace: str
) -> None:
    apply_yaml(crds, namespace, [mock_agent("hello"), gateway("dev", "dev", ["hello"], replicas=3)])
    policy = client.PolicyV1Api(api_client)
    eventually(
        lambda: _exists(
            lambda: policy.read_namespaced_pod_disruption_budget("dev-gateway", namespace)
        ),
        timeout=60,
        what="PDB",
    )
    custom(api_client).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "gateways", "dev", {"spec": {"replicas": 1}}
    )
    eventually(
        lambda: (
            not _exists(
                lambda: policy.read_namespaced_pod_disruption_budget("dev-gateway", namespace)
            )
        ),
        timeout=30,
        what="PDB pruned",
    )
    custom(api_client).delete_namespaced_custom_object(GROUP, VERSION, namespace, "gateways", "dev")
    apps = client.AppsV1Api(api_client)
    eventually(
        lambda: not _exists(lambda: apps.read_namespaced_deployment("dev-gateway", namespace)),
        timeout=60,
        what="garbage collection",
    )


def test_missing_secret_is_reported_on_the_agent(
    operator: Any, crds: Path, api_client: client.ApiClient, namespace: str
) -> None:
    body = mock_agent("paid")
    body["spec"]["model"] = {
        "provider": "openai",
        "name": "gpt-4o-mini",
        "credentialsSecretRef": {"name": "nope"},
    }
    apply_yaml(crds, namespace, [body])
    ready = eventually(
        lambda: condition(get(api_client, namespace, "agents", "paid"), "Ready"),
        what="Ready condition",
    )
    assert (ready["status"], ready["reason"]) == ("False", "SecretNotFound")
    assert "'nope'" in ready["message"]
    eventually(
        lambda: any(
            e.reason == "SecretNotFound" and e.type == "Warning"
            for e in events_of(api_client, namespace, "paid")
        ),
        timeout=20,
        what="a Warning event",
    )


def hpa_bounds(api_client: client.ApiClient, ns: str, name: str) -> tuple[int, int] | None:
    try:
        hpa = client.AutoscalingV2Api(api_client).read_namespaced_horizontal_pod_autoscaler(
            name, ns
        )
    except ApiException:
        return None
    return hpa.spec.min_replicas, hpa.spec.max_replicas


def wait_hpa_bounds(
    api_client: client.ApiClient, ns: str, bounds: tuple[int, int], timeout: float, what: str
) -> None:
    """Wait until the Gateway prod's HPA scales between ``bounds``."""
    eventually(
        lambda: hpa_bounds(api_client, ns, "prod-gateway") == bounds, timeout=timeout, what=what
    )


def scaled_gateway(policy: str = "prod", **policy_spec: Any) -> list[dict[str, Any]]:
    """The hello agent, Gateway prod (production) and a ScalingPolicy on it."""
    return [
        mock_agent("hello"),
        gateway("prod", "production", ["hello"]),
        scaling_policy(policy, "prod", **policy_spec),
    ]


def test_pin_override_holds_the_count_then_expires_on_its_own(
    operator: Any, crds: Path, api_client: client.ApiClient, namespace: str
) -> None:
    expires = (datetime.now(UTC) + timedelta(seconds=20)).strftime("%Y-%m-%dT%H:%M:%SZ")
    apply_yaml(
        crds,
        namespace,
        [
            mock_agent("hello"),
            gateway("prod", "production", ["hello"], replicas=1),
            scaling_policy(
                "prod",
                "prod",
                minReplicas=1,
                maxReplicas=4,
                override={
                    "mode": "Pin",
                    "replicas": 3,
                    "expiresAt": expires,
                    "reason": "load test",
                },
            ),
        ],
    )
    eventually(
        lambda: hpa_bounds(api_client, namespace, "prod-gateway") == (3, 3),
        timeout=60,
        what="pinned HPA",
    )
    apps = client.AppsV1Api(api_client)
    eventually(
        lambda: apps.read_namespaced_deployment("prod-gateway", namespace).spec.replicas == 3,
        timeout=60,
        what="3 replicas",
    )
    # The operator never writes replicas while the HPA owns them: a Gateway change keeps 3.
    custom(api_client).patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "gateways",
        "prod",
        {"spec": {"resources": {"requests": {"cpu": "150m"}}}},
    )
    eventually(
        lambda: (
            apps.read_namespaced_deployment("prod-gateway", namespace)
            .spec.template.spec.containers[0]
            .resources.requests.get("cpu")
            == "150m"
        ),
        timeout=30,
        what="the Gateway change to roll out",
    )
    assert apps.read_namespaced_deployment("prod-gateway", namespace).spec.replicas == 3
    status = get(api_client, namespace, "scalingpolicies", "prod")["status"]
    assert status["activeOverride"]["mode"] == "Pin"
    eventually(
        lambda: hpa_bounds(api_client, namespace, "prod-gateway") == (1, 4),
        timeout=60,
        what="override expiry",
    )
    eventually(
        lambda: (
            "activeOverride" not in get(api_client, namespace, "scalingpolicies", "prod")["status"]
        ),
        timeout=15,
        what="status cleared",
    )

    eventually(
        lambda: (
            {"OverrideActive", "OverrideCleared"} <= event_reasons(api_client, namespace, "prod")
        ),
        timeout=20,
        what="override Events",
    )


def test_hpa_drift_is_repaired(
    operator: Any, crds: Path, api_client: client.ApiClient, namespace: str
) -> None:
    apply_yaml(crds, namespace, scaled_gateway())
    wait_hpa_bounds(api_client, namespace, (1, 5), 60, "HPA")
    hpas = client.AutoscalingV2Api(api_client)
    hpas.patch_namespaced_horizontal_pod_autoscaler(
        "prod-gateway", namespace, {"spec": {"maxReplicas": 50}}
    )
    wait_hpa_bounds(api_client, namespace, (1, 5), 30, "edit reverted")
    hpas.delete_namespaced_horizontal_pod_autoscaler("prod-gateway", namespace)
    wait_hpa_bounds(api_client, namespace, (1, 5), 30, "HPA recreated")


def test_second_policy_and_foreign_hpa_are_refused(
    operator: Any, crds: Path, api_client: client.ApiClient, namespace: str
) -> None:
    apply_yaml(crds, namespace, scaled_gateway("first"))
    eventually(lambda: hpa_bounds(api_client, namespace, "prod-gateway"), timeout=60, what="HPA")
    apply_yaml(crds, namespace, [scaling_policy("second", "prod", maxReplicas=9)])
    conflict = eventually(
        lambda: condition(get(api_client, namespace, "scalingpolicies", "second"), "Conflict"),
        what="Conflict",
    )
    assert conflict["status"] == "True"
    assert "ScalingPolicy 'first' already scales Gateway 'prod'" in conflict["message"]
    assert hpa_bounds(api_client, namespace, "prod-gateway") == (1, 5)

    apply_yaml(crds, namespace, [gateway("other", "staging", ["hello"])])
    apps = client.AppsV1Api(api_client)
    eventually(
        lambda: _exists(lambda: apps.read_namespaced_deployment("other-gateway", namespace)),
        timeout=30,
        what="Deployment",
    )
    kubectl(
        crds,
        "autoscale",
        "-n",
        namespace,
        "deployment/other-gateway",
        "--min=1",
        "--max=2",
        "--cpu=80",
        "--name=hand-made",
    )
    apply_yaml(crds, namespace, [scaling_policy("third", "other")])
    ready = eventually(
        lambda: condition(get(api_client, namespace, "scalingpolicies", "third"), "Conflict"),
        what="Conflict",
    )
    assert "HorizontalPodAutoscaler 'hand-made'" in ready["message"]


def test_operator_exports_prometheus_metrics(
    operator: Any, crds: Path, api_client: client.ApiClient, namespace: str
) -> None:
    import urllib.request

    apply_yaml(crds, namespace, [mock_agent("hello"), gateway("dev", "dev", ["hello"])])
    kubectl(
        crds,
        "wait",
        "-n",
        namespace,
        "gateways.kaizen.studio/dev",
        "--for=condition=Ready",
        "--timeout=90s",
    )
    with urllib.request.urlopen(
        f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5
    ) as resp:
        text = resp.read().decode()
    assert 'kaizen_operator_reconciles_total{kind="Gateway",result="success"}' in text
    assert 'kaizen_operator_reconcile_duration_seconds_bucket{kind="Agent"' in text
    assert "kaizen_operator_queue_depth" in text
