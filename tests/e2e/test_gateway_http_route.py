"""spec.exposure.httpRoute on the real control plane (with the Gateway API CRDs the local
cluster installs): the HTTPRoute is created, follows spec changes, is repaired after an
edit, and is pruned when the field is removed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.e2e.test_operator_reconciles import apply_yaml, condition, custom, gateway, get
from tests.e2e.test_operator_reconciles import mock_agent as agent
from tests.support.kube import eventually, kubectl

ROUTES = ("gateway.networking.k8s.io", "v1")


def route(api_client: client.ApiClient, ns: str) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = custom(api_client).get_namespaced_custom_object(
            *ROUTES, ns, "httproutes", "prod-gateway"
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return found


def exposure(*hostnames: str) -> dict[str, Any]:
    return {
        "port": 8080,
        "httpRoute": {"parentRefs": [{"name": "public"}], "hostnames": list(hostnames)},
    }


def test_http_route_is_created_updated_repaired_and_pruned(
    operator: Any, crds: Path, api_client: client.ApiClient, namespace: str
) -> None:
    apply_yaml(
        crds,
        namespace,
        [agent("hello"), gateway("prod", "dev", ["hello"], exposure=exposure("a.example.com"))],
    )
    made = eventually(lambda: route(api_client, namespace), timeout=60, what="HTTPRoute")
    assert made["spec"]["hostnames"] == ["a.example.com"]
    assert made["spec"]["parentRefs"][0]["name"] == "public"
    assert made["spec"]["rules"][0]["backendRefs"][0]["name"] == "prod-gateway"
    assert made["spec"]["rules"][0]["backendRefs"][0]["port"] == 8080
    assert made["metadata"]["ownerReferences"][0]["name"] == "prod"
    applied = eventually(
        lambda: condition(get(api_client, namespace, "gateways", "prod"), "RouteApplied"),
        what="RouteApplied condition",
    )
    assert (applied["status"], applied["reason"]) == ("True", "Applied")

    objects = custom(api_client)
    objects.patch_namespaced_custom_object(
        "kaizen.studio",
        "v1alpha1",
        namespace,
        "gateways",
        "prod",
        {"spec": {"exposure": exposure("b.example.com")}},
    )
    eventually(
        lambda: (
            (route(api_client, namespace) or {}).get("spec", {}).get("hostnames")
            == ["b.example.com"]
        ),
        timeout=30,
        what="hostname updated",
    )

    objects.patch_namespaced_custom_object(
        *ROUTES, namespace, "httproutes", "prod-gateway", {"spec": {"hostnames": ["evil.test"]}}
    )
    eventually(
        lambda: (
            (route(api_client, namespace) or {}).get("spec", {}).get("hostnames")
            == ["b.example.com"]
        ),
        timeout=30,
        what="edit repaired",
    )

    kubectl(
        crds,
        "patch",
        "gateway.kaizen.studio/prod",
        "-n",
        namespace,
        "--type=json",
        '-p=[{"op": "remove", "path": "/spec/exposure/httpRoute"}]',
    )
    eventually(lambda: route(api_client, namespace) is None, timeout=30, what="HTTPRoute pruned")
    eventually(
        lambda: condition(get(api_client, namespace, "gateways", "prod"), "RouteApplied") is None,
        what="RouteApplied condition removed",
    )
