"""ScalingPolicy reconcile: resolve -> render -> apply the HPA -> mirror its status."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kaizen_operator import names
from kaizen_operator.conditions import READY, get_condition
from kaizen_operator.events import record
from kaizen_operator.gateway.reconcile import controlling_policy
from kaizen_operator.kube import ApiException, Kube, refusal
from kaizen_operator.runtime import Runtime, owned_by, report_rejected, write_status
from kaizen_operator.scaling.render import ScalingInputs, render_scaling_policy

API = "kaizen.studio/v1alpha1"
HPA = ("autoscaling/v2", "HorizontalPodAutoscaler")


async def resolve_scaling_policy(
    kube: Kube, policy: dict[str, Any], now: datetime, max_replicas: int | None = None
) -> ScalingInputs:
    """Read the target Gateway, rival policies and any HPA already on the Deployment."""
    meta = policy["metadata"]
    ns = meta["namespace"]
    target = policy["spec"]["targetRef"]["name"]
    gateway = await kube.get(API, "Gateway", ns, target)
    owner = controlling_policy(await kube.list(API, "ScalingPolicy", ns), target)
    rival = owner["metadata"]["name"] if owner and owner["metadata"]["uid"] != meta["uid"] else None
    workload = names.gateway_workload(target)
    ours, foreign = None, None
    for hpa in await kube.list(*HPA, ns):
        if hpa["spec"].get("scaleTargetRef", {}).get("name") != workload:
            continue
        if owned_by(hpa, meta["uid"]):
            ours = hpa
        else:
            foreign = hpa["metadata"]["name"]
    return ScalingInputs(
        policy=policy,
        gateway=gateway,
        hpa=ours,
        rival_policy=rival,
        foreign_hpa=foreign,
        now=now,
        max_replicas=max_replicas,
    )


async def reconcile_scaling_policy(rt: Runtime, namespace: str, name: str) -> None:
    """Make the policy's HPA and status match its spec (and the clock, for overrides)."""
    async with rt.reconciling("ScalingPolicy", namespace, name):
        policy = await rt.kube.get(API, "ScalingPolicy", namespace, name)
        if policy is None or policy["metadata"].get("deletionTimestamp"):
            return
        inputs = await resolve_scaling_policy(
            rt.kube, policy, datetime.now(UTC), rt.config.gateway_policy.max_replicas
        )
        plan = render_scaling_policy(inputs)
        previous = (policy.get("status") or {}).get("activeOverride")
        if plan.hpa is not None:
            try:
                await rt.kube.apply(plan.hpa)
            except ApiException as exc:
                if (message := refusal(exc)) is None:
                    raise
                await report_rejected(rt.kube, policy, "the HPA was refused", message, inputs.now)
                return
        elif inputs.hpa is not None:
            await rt.kube.delete(*HPA, namespace, inputs.hpa["metadata"]["name"])
        await write_status(rt.kube, policy, plan.status)
        if previous != plan.active_override:
            if plan.active_override:
                mode = plan.active_override["mode"]
                await record(
                    rt.kube,
                    policy,
                    "OverrideActive",
                    f"override {mode} in force: {plan.active_override.get('reason', '')}",
                )
            elif previous:
                await record(
                    rt.kube,
                    policy,
                    "OverrideCleared",
                    f"override {previous.get('mode')} lifted",
                )
        before = get_condition((policy.get("status") or {}).get("conditions"), READY)
        after = get_condition(plan.status["conditions"], READY)
        if after and after["status"] == "False" and (before or {}).get("reason") != after["reason"]:
            await record(rt.kube, policy, after["reason"], after["message"], warning=True)
