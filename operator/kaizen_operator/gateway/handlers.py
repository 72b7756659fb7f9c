"""kopf registrations for Gateways and for drift on their children."""

from __future__ import annotations

from typing import Any

import kopf

from kaizen_operator import names
from kaizen_operator.cache_feed import forget_deleted
from kaizen_operator.gateway.reconcile import reconcile_gateway
from kaizen_operator.runtime import runtime_of

GATEWAYS = ("kaizen.studio", "v1alpha1", "gateways")
MANAGED: Any = {
    "app.kubernetes.io/managed-by": names.MANAGED_BY,
    names.GATEWAY_LABEL: kopf.PRESENT,
}
CHILDREN = (
    ("apps", "v1", "deployments"),
    ("", "v1", "services"),
    ("", "v1", "configmaps"),
    ("", "v1", "serviceaccounts"),
    ("policy", "v1", "poddisruptionbudgets"),
    ("networking.k8s.io", "v1", "networkpolicies"),
    ("networking.k8s.io", "v1", "ingresses"),
    # Served only where the Gateway API CRDs are installed; kopf starts this watch
    # when the CRD appears.
    ("gateway.networking.k8s.io", "v1", "httproutes"),
)


@kopf.on.resume(*GATEWAYS)
@kopf.on.create(*GATEWAYS)
@kopf.on.update(*GATEWAYS, field="spec")
async def gateway_changed(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    """Children and status of a Gateway."""
    await reconcile_gateway(runtime_of(memo), str(namespace), name)


@kopf.on.event(*GATEWAYS)
async def gateway_seen(
    type: str, body: kopf.Body, namespace: str | None, memo: Any, **_: Any
) -> None:
    """Track Gateways for the periodic resync and for Agent events (the index)."""
    rt = runtime_of(memo)
    forget_deleted(memo, "Gateway", type, body)
    rt.track("Gateway", type, str(namespace), body["metadata"]["name"])
    rt.gateways.observe(type, dict(body))


def _register_child_watch(group: str, version: str, plural: str) -> None:
    @kopf.on.event(group, version, plural, labels=MANAGED, id=f"{plural}-drift")
    async def child_event(
        type: str,
        body: kopf.Body,
        namespace: str | None,
        labels: kopf.Labels,
        memo: Any,
        **_: Any,
    ) -> None:
        """A child changed or vanished: repair drift and refresh the parent's status.

        The reconcile is requested, not awaited: a Gateway's children change in bursts
        (a Deployment's status alone several times while it rolls out), and awaiting
        would hold every event's whole object in kopf's per-object queue meanwhile.
        """
        if type is None:  # the initial listing: resume handlers already cover it
            return
        rt = runtime_of(memo)
        obj = dict(body)
        meta = obj.get("metadata", {})
        if type == "DELETED":
            rt.kube.forget(obj["apiVersion"], obj["kind"], str(namespace), meta["name"])
            forget_deleted(memo, obj["kind"], type, body)
        elif not rt.kube.observe(obj):
            return  # the echo of our own apply: nothing new to see
        gateway = labels.get(names.GATEWAY_LABEL)
        if gateway:
            rt.request("Gateway", str(namespace), str(gateway), reconcile_gateway)


for _group, _version, _plural in CHILDREN:
    _register_child_watch(_group, _version, _plural)
