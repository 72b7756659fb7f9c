"""Knowledge through the whole stack: an Agent on the real control plane names a
ConfigMap, the operator mounts it into the gateway's pod template and records it in the
bundle, a real gateway process (given the ConfigMap's files as the kubelet would) answers
with the document that holds the fact, and an edit of the ConfigMap is served without a
restart or a rollout."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from tests.e2e.test_gateway_knowledge import ROOT, context_of
from tests.e2e.test_operator_reconciles import apply_yaml, bundle, gateway
from tests.support.kube import eventually
from tests.support.processes import LocalProcess, free_port, start, start_devrunner, wait_http_ok

pytestmark = pytest.mark.e2e


@pytest.fixture
def stub(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    process: LocalProcess = start(
        [sys.executable, "-m", "upstream_stub.server", "--port", str(port)],
        tmp_path / "stub.log",
        env={"PYTHONPATH": str(ROOT / "hack")},
    )
    url = f"http://127.0.0.1:{port}"
    wait_http_ok(f"{url}/_control", process)
    yield url
    process.stop()


def shop_agent(stub: str) -> dict[str, Any]:
    return {
        "apiVersion": "kaizen.studio/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": "shop"},
        "spec": {
            "model": {
                "provider": "openai-compatible",
                "name": "gpt-4o-mini",
                "endpoint": f"{stub}/v1",
            },
            "systemPrompt": "You answer shop questions.",
            "context": {"knowledge": [{"name": "policies", "configMapRef": {"name": "policies"}}]},
        },
    }


def policies(refund_days: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "policies"},
        "data": {
            "refunds.md": f"# Refunds\n\nAny item may be returned within {refund_days} days for a full refund.",
            "shipping.md": "# Shipping\n\nOrders ship from the Porto warehouse within two business days.",
        },
    }


def served_requests(url: str) -> float:
    """The gateway process's count of answered requests for the agent."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("kaizen_gateway_requests_total{") and 'status="200"' in line
    )


def test_the_answer_names_the_config_map_and_an_edit_is_served_without_restart(
    crds: Path,
    api_client: client.ApiClient,
    operator: Any,
    namespace: str,
    stub: str,
    tmp_path: Path,
) -> None:
    ns = namespace
    apply_yaml(crds, ns, [policies(45), shop_agent(stub), gateway("web", "dev", ["shop"])])
    core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
    served = eventually(lambda: bundle(core, ns, "web").get("knowledgeMounts"), what="the mount")
    assert served == {"policies": "/etc/kaizen/knowledge/policies"}
    pod = apps.read_namespaced_deployment("web-gateway", ns).spec.template.spec
    (volume,) = [v for v in pod.volumes if v.config_map and v.config_map.name == "policies"]
    mount = next(m for m in pod.containers[0].volume_mounts if m.name == volume.name)
    assert mount.mount_path == "/etc/kaizen/knowledge/policies" and mount.read_only

    endpoints = operator.endpoints / f"{ns}.json"
    runner = start_devrunner(crds, ns, tmp_path / "gateways", endpoints)
    try:
        url = eventually(
            lambda: endpoints.exists() and json.loads(endpoints.read_text()).get(f"{ns}/web"),
            what="the gateway process",
        )

        def ask() -> tuple[dict[str, Any], str] | None:
            try:
                response = httpx.post(
                    f"{url}/agents/shop/invoke",
                    json={"input": "How many days do I have to return an item for a refund?"},
                    timeout=10,
                )
            except httpx.TransportError:
                return None
            if response.status_code != 200:
                return None
            sent = httpx.get(f"{stub}/_control", timeout=5).json()["requests"][-1]["body"]
            return response.json(), context_of(sent["messages"])

        answer, context = eventually(lambda: (found := ask()) and found[0]["sources"] and found)
        assert answer["sources"][0]["name"] == "policies"
        assert answer["sources"][0]["document"] == "refunds.md"
        assert "within 45 days for a full refund" in context
        generation = apps.read_namespaced_deployment("web-gateway", ns).metadata.generation
        answered = served_requests(url)
        assert answered >= 1

        core.patch_namespaced_config_map("policies", ns, policies(60))
        eventually(
            lambda: (found := ask()) and "within 60 days" in found[1],
            timeout=30,
            what="the edited ConfigMap to be served",
        )
        # No rollout (the pod template did not change) and no restart (the process's
        # request counter kept counting).
        assert apps.read_namespaced_deployment("web-gateway", ns).metadata.generation == generation
        assert served_requests(url) > answered
    finally:
        runner.stop()
