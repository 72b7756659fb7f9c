"""Crash safety: SIGKILL the operator while 100 resources are being created; after a
restart everything converges with no duplicate and no orphaned child."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from pathlib import Path

from kubernetes import client

from tests.support.kube import eventually
from tests.support.processes import start_operator

PAIRS = 50  # 50 Agents + 50 Gateways = 100 resources


def create_all(api: client.CustomObjectsApi, ns: str) -> None:
    for i in range(PAIRS):
        api.create_namespaced_custom_object(
            "kaizen.studio",
            "v1alpha1",
            ns,
            "agents",
            {
                "apiVersion": "kaizen.studio/v1alpha1",
                "kind": "Agent",
                "metadata": {"name": f"a{i}"},
                "spec": {
                    "model": {"provider": "mock", "name": "echo"},
                    "systemPrompt": f"agent {i}",
                },
            },
        )
        api.create_namespaced_custom_object(
            "kaizen.studio",
            "v1alpha1",
            ns,
            "gateways",
            {
                "apiVersion": "kaizen.studio/v1alpha1",
                "kind": "Gateway",
                "metadata": {"name": f"g{i}"},
                "spec": {"environment": "dev", "agents": {"names": [f"a{i}"]}},
            },
        )


def test_sigkill_during_a_burst_converges_without_duplicates_or_orphans(
    crds: Path, api_client: client.ApiClient, tmp_path: Path
) -> None:
    ns = f"t-crash-{uuid.uuid4().hex[:8]}"  # not the session operator's t-<worker>-*
    core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    operator, _ = start_operator(crds, ns, tmp_path / "operator-1.log")
    try:
        writer = threading.Thread(target=create_all, args=(custom, ns))
        writer.start()
        time.sleep(3)  # mid-burst
        operator.kill()
        writer.join()
        operator, _ = start_operator(crds, ns, tmp_path / "operator-2.log")

        def converged() -> bool:
            gws = custom.list_namespaced_custom_object("kaizen.studio", "v1alpha1", ns, "gateways")[
                "items"
            ]
            ready = [
                g
                for g in gws
                if any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in (g.get("status") or {}).get("conditions", [])
                )
            ]
            served = [g for g in gws if (g.get("status") or {}).get("servedRevisions")]
            return len(ready) == PAIRS and len(served) == PAIRS

        eventually(converged, timeout=240, what=f"{PAIRS} Gateways Ready and serving")
        revisions = apps.list_namespaced_controller_revision(ns).items
        per_agent = Counter(r.metadata.labels["kaizen.studio/agent"] for r in revisions)
        assert per_agent == Counter({f"a{i}": 1 for i in range(PAIRS)}), (
            "duplicate or missing revisions"
        )
        agents = {
            a["metadata"]["uid"]
            for a in custom.list_namespaced_custom_object(
                "kaizen.studio", "v1alpha1", ns, "agents"
            )["items"]
        }
        gateways = {
            g["metadata"]["uid"]
            for g in custom.list_namespaced_custom_object(
                "kaizen.studio", "v1alpha1", ns, "gateways"
            )["items"]
        }
        assert all(r.metadata.owner_references[0].uid in agents for r in revisions), (
            "orphaned revision"
        )
        for listing, expected in (
            (apps.list_namespaced_deployment(ns).items, PAIRS),
            (core.list_namespaced_service(ns).items, PAIRS),
            (
                core.list_namespaced_config_map(
                    ns, label_selector="app.kubernetes.io/managed-by=kaizen-operator"
                ).items,
                PAIRS,
            ),
            (
                core.list_namespaced_service_account(
                    ns, label_selector="app.kubernetes.io/managed-by=kaizen-operator"
                ).items,
                PAIRS,
            ),
        ):
            assert len(listing) == expected
            assert all(o.metadata.owner_references[0].uid in gateways for o in listing), (
                "orphaned child"
            )
    finally:
        operator.stop()
        core.delete_namespace(ns)
