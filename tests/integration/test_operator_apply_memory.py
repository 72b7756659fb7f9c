"""The operator's skip-write memory against the real apiserver: the echo of its own
apply, a controller's status update and the deployment controller's revision annotation
leave a child alone (no re-apply); an edit of its spec or of the labels and annotations it sets, or of
a ConfigMap's data, makes the next apply go out and put the child back."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from kubernetes import client

from kaizen_operator.kube import Kube
from tests.support.kube import eventually

LABELS = {"app.kubernetes.io/managed-by": "kaizen-studio", "kaizen.studio/gateway": "g"}


def deployment(namespace: str, image: str = "kaizen:1") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "g-gateway",
            "namespace": namespace,
            "labels": LABELS,
            "annotations": {"kaizen.studio/bundle-hash": "abc"},
        },
        "spec": {
            "selector": {"matchLabels": {"app": "g"}},
            "template": {
                "metadata": {"labels": {"app": "g"}},
                "spec": {"containers": [{"name": "gateway", "image": image}]},
            },
        },
    }


def test_status_updates_keep_the_write_skipped_and_edits_undo_it(
    kubeconfig: Path, api_client: client.ApiClient, own_namespace: str
) -> None:
    namespace = own_namespace
    apps, core = client.AppsV1Api(api_client), client.CoreV1Api(api_client)

    def live_deployment() -> dict[str, Any]:
        read = apps.read_namespaced_deployment("g-gateway", namespace)
        return dict(api_client.sanitize_for_serialization(read))

    def taken_in() -> dict[str, Any] | None:
        live = live_deployment()
        annotated = "deployment.kubernetes.io/revision" in live["metadata"].get("annotations", {})
        observed = live.get("status", {}).get("observedGeneration")
        return live if annotated and observed == live["metadata"]["generation"] else None

    async def scenario() -> None:
        kube = await Kube.connect(str(kubeconfig))
        try:
            desired = deployment(namespace)
            applied = await kube.apply(desired)
            assert applied is not None
            assert kube.observe(applied) is False  # our own write's echo
            assert await kube.apply(desired) is None

            # The deployment controller annotates a new Deployment (its revision): its
            # key, not ours, so news for the parent but nothing to write back.
            settled = eventually(
                taken_in, what="the deployment controller to take the Deployment in"
            )
            assert kube.observe(settled) is True
            assert await kube.apply(desired) is None

            # A controller reports status: news for the parent, not drift.
            apps.patch_namespaced_deployment_status(
                "g-gateway", namespace, {"status": {"replicas": 3, "unavailableReplicas": 3}}
            )
            assert kube.observe(live_deployment()) is True
            assert await kube.apply(desired) is None  # no write

            # Someone edits the spec: the next apply goes out and undoes it.
            apps.patch_namespaced_deployment(
                "g-gateway",
                namespace,
                {
                    "spec": {
                        "template": {"spec": {"containers": [{"name": "gateway", "image": "x"}]}}
                    }
                },
            )
            assert kube.observe(live_deployment()) is True
            assert await kube.apply(desired) is not None
            image = live_deployment()["spec"]["template"]["spec"]["containers"][0]["image"]
            assert image == "kaizen:1"

            # ... or a label we set: no generation bump, still undone.
            apps.patch_namespaced_deployment(
                "g-gateway", namespace, {"metadata": {"labels": {"kaizen.studio/gateway": "h"}}}
            )
            assert kube.observe(live_deployment()) is True
            assert await kube.apply(desired) is not None
            assert live_deployment()["metadata"]["labels"]["kaizen.studio/gateway"] == "g"

            # ... or an annotation we set (beside one of someone else's, which stays).
            apps.patch_namespaced_deployment(
                "g-gateway",
                namespace,
                {"metadata": {"annotations": {"kaizen.studio/bundle-hash": "zzz", "team": "ml"}}},
            )
            assert kube.observe(live_deployment()) is True
            assert await kube.apply(desired) is not None
            annotations = live_deployment()["metadata"]["annotations"]
            assert annotations["kaizen.studio/bundle-hash"] == "abc"
            assert annotations["team"] == "ml"  # not ours: left as it was

            # A ConfigMap has no generation: any change counts as an edit.
            config_map = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "g-bundle", "namespace": namespace, "labels": LABELS},
                "data": {"bundle.json": "{}"},
            }
            assert await kube.apply(config_map) is not None
            core.patch_namespaced_config_map(
                "g-bundle", namespace, {"data": {"bundle.json": '{"x": 1}'}}
            )
            edited = core.read_namespaced_config_map("g-bundle", namespace)
            assert kube.observe(dict(api_client.sanitize_for_serialization(edited))) is True
            assert await kube.apply(config_map) is not None
            restored = core.read_namespaced_config_map("g-bundle", namespace)
            assert restored.data == {"bundle.json": "{}"}
        finally:
            await kube.close()

    asyncio.run(scenario())


def test_a_missing_optional_child_is_looked_up_again_only_after_news_of_it(
    kubeconfig: Path, api_client: client.ApiClient, own_namespace: str
) -> None:
    """prune looks for optional children (a PDB, an Ingress) on every reconcile; a miss is
    remembered until a watch event shows the object (or the operator applies it)."""
    namespace = own_namespace
    policy = client.PolicyV1Api(api_client)
    ref = ("policy/v1", "PodDisruptionBudget", namespace, "g-gateway")
    pdb = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "g-gateway", "namespace": namespace, "labels": LABELS},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "g"}}},
    }

    async def scenario() -> None:
        kube = await Kube.connect(str(kubeconfig))
        try:
            assert await kube.find(*ref) is None
            made = policy.create_namespaced_pod_disruption_budget(namespace, pdb)
            assert await kube.find(*ref) is None  # remembered: no new GET
            assert await kube.get(*ref) is not None  # (it does exist)
            # Its watch event arrives: the next look finds it.
            assert kube.observe(dict(api_client.sanitize_for_serialization(made))) is True
            found = await kube.find(*ref)
            assert found is not None and found["spec"]["maxUnavailable"] == 1
            # Deleted (its DELETED event): the next look asks, and finds it missing.
            policy.delete_namespaced_pod_disruption_budget("g-gateway", namespace)
            kube.forget(*ref)
            assert await kube.find(*ref) is None
            # A delete of ours that failed must not pass for done: find() asks again.
            made = policy.create_namespaced_pod_disruption_budget(namespace, pdb)
            kube.observe(dict(api_client.sanitize_for_serialization(made)))
            kube.forget(*ref)  # what delete() does before its DELETE goes out
            assert await kube.find(*ref) is not None
            # Applied by the operator itself: known to exist again.
            assert await kube.apply(pdb) is not None
            assert await kube.find(*ref) is not None
        finally:
            await kube.close()

    asyncio.run(scenario())
