"""kopf registrations for ScalingPolicies and drift on their HPAs."""

from __future__ import annotations

from typing import Any

import kopf

from kaizen_operator import names
from kaizen_operator.cache_feed import forget_deleted
from kaizen_operator.gateway.reconcile import reconcile_gateway
from kaizen_operator.runtime import runtime_of
from kaizen_operator.scaling.reconcile import reconcile_scaling_policy

POLICIES = ("kaizen.studio", "v1alpha1", "scalingpolicies")


@kopf.on.resume(*POLICIES)
@kopf.on.create(*POLICIES)
@kopf.on.update(*POLICIES, field="spec")
async def policy_changed(
    spec: kopf.Spec, namespace: str | None, name: str, memo: Any, **_: Any
) -> None:
    """The HPA, then the target Gateway (which stops writing replicas while scaled)."""
    rt = runtime_of(memo)
    await reconcile_scaling_policy(rt, str(namespace), name)
    await reconcile_gateway(rt, str(namespace), spec["targetRef"]["name"])


@kopf.on.event(*POLICIES)
async def policy_deleted(
    type: str, body: kopf.Body, namespace: str | None, memo: Any, **_: Any
) -> None:
    """Track policies for resyncs; when one goes, a rival may take over and the Gateway
    owns replicas again."""
    rt = runtime_of(memo)
    forget_deleted(memo, "ScalingPolicy", type, body)
    rt.track("ScalingPolicy", type, str(namespace), body["metadata"]["name"])
    if type != "DELETED":
        return
    target = body["spec"]["targetRef"]["name"]
    for other in await rt.kube.list("kaizen.studio/v1alpha1", "ScalingPolicy", str(namespace)):
        if other["spec"]["targetRef"]["name"] == target:
            await reconcile_scaling_policy(rt, str(namespace), other["metadata"]["name"])
    await reconcile_gateway(rt, str(namespace), target)


@kopf.on.event(
    "autoscaling",
    "v2",
    "horizontalpodautoscalers",
    labels={
        "app.kubernetes.io/managed-by": names.MANAGED_BY,
        "kaizen.studio/scaling-policy": kopf.PRESENT,
    },
)
async def hpa_event(
    type: str, body: kopf.Body, namespace: str | None, labels: kopf.Labels, memo: Any, **_: Any
) -> None:
    """Someone edited or deleted an HPA we own: put it back."""
    if type is None:
        return
    rt = runtime_of(memo)
    obj = dict(body)
    if type == "DELETED":
        rt.kube.forget(obj["apiVersion"], obj["kind"], str(namespace), obj["metadata"]["name"])
    elif not rt.kube.observe(obj):
        return  # the echo of our own apply
    await reconcile_scaling_policy(rt, str(namespace), str(labels["kaizen.studio/scaling-policy"]))
