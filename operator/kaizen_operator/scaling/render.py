"""ScalingPolicy -> one autoscaling/v2 HorizontalPodAutoscaler and the policy's status
(pure: no client, no clock — ``now`` decides whether an override has expired)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kaizen_api.v1alpha1.common import parse_duration
from kaizen_api.v1alpha1.scaling import (
    RESOURCE_METRICS,
    MetricTarget,
    MetricType,
    OverrideMode,
    ScalingOverride,
    ScalingPolicySpec,
    ScalingRules,
)
from kaizen_operator import names
from kaizen_operator.conditions import ready_conditions, set_condition, timestamp

HPA_CONDITIONS = ("AbleToScale", "ScalingActive", "ScalingLimited")
CONFLICT = "Conflict"
METRICS_DEGRADED = "MetricsDegraded"


@dataclass(frozen=True)
class ScalingInputs:
    """Everything the ScalingPolicy render needs, read by resolve_scaling_policy."""

    policy: dict[str, Any]
    gateway: dict[str, Any] | None
    hpa: dict[str, Any] | None  # the live HPA with our name, if any
    rival_policy: str | None  # an older ScalingPolicy already targeting the Gateway
    foreign_hpa: str | None  # an HPA on the same Deployment that this policy does not own
    now: datetime
    # The gateway policy's most replicas (None: unbounded): the HPA never goes past it.
    max_replicas: int | None = None


@dataclass(frozen=True)
class ScalingPlan:
    """The HPA to apply (None: delete ours / apply nothing) and the policy's status."""

    hpa: dict[str, Any] | None
    status: dict[str, Any]
    active_override: dict[str, Any] | None
    conflict: bool


def active_override(spec: ScalingPolicySpec, now: datetime) -> ScalingOverride | None:
    """The override in force at ``now`` (an expired one is ignored)."""
    override = spec.override
    if override is None:
        return None
    if override.expires_at is not None and override.expires_at <= now:
        return None
    return override


def _rules(rules: ScalingRules | None, disabled: bool) -> dict[str, Any] | None:
    if disabled:
        return {"selectPolicy": "Disabled"}
    if rules is None:
        return None
    out: dict[str, Any] = {}
    if rules.stabilization_window is not None:
        out["stabilizationWindowSeconds"] = int(parse_duration(rules.stabilization_window))
    period = int(parse_duration(rules.period))
    policies = []
    if rules.max_replicas_change is not None:
        policies.append(
            {"type": "Pods", "value": rules.max_replicas_change, "periodSeconds": period}
        )
    if rules.max_percent_change is not None:
        policies.append(
            {"type": "Percent", "value": rules.max_percent_change, "periodSeconds": period}
        )
    if policies:
        out["policies"] = policies
        out["selectPolicy"] = "Max"
    return out or None


def render_hpa_metric(metric: MetricTarget, gateway: str) -> dict[str, Any]:
    """One HPA metric: cpu/memory as Resource utilization; the gateway's own metrics as
    External metrics served by the operator (requestsPerSecond averaged per pod,
    latencyP95 and errorRate compared gateway-wide)."""
    if metric.type in RESOURCE_METRICS:
        return {
            "type": "Resource",
            "resource": {
                "name": metric.type,
                "target": {"type": "Utilization", "averageUtilization": metric.average_utilization},
            },
        }
    per_pod = metric.type == MetricType.REQUESTS_PER_SECOND
    target = (
        {"type": "AverageValue", "averageValue": str(metric.average_value)}
        if per_pod
        else {"type": "Value", "value": str(metric.average_value)}
    )
    return {
        "type": "External",
        "external": {
            "metric": {
                "name": names.EXTERNAL_METRICS[metric.type],
                "selector": {"matchLabels": {names.GATEWAY_LABEL: gateway}},
            },
            "target": target,
        },
    }


def render_hpa(policy: dict[str, Any], spec: ScalingPolicySpec, now: datetime) -> dict[str, Any]:
    """The HPA for a policy (its metrics, bounds, behaviour and any active override)."""
    meta = policy["metadata"]
    metrics = [render_hpa_metric(m, spec.target_ref.name) for m in spec.metrics]
    override = active_override(spec, now)
    low, high = spec.min_replicas, spec.max_replicas
    if override is not None and override.mode == OverrideMode.PIN and override.replicas is not None:
        low = high = max(1, override.replicas)
    behavior = spec.behavior
    up = _rules(
        behavior.scale_up if behavior else None,
        bool(override and override.mode == OverrideMode.FREEZE_SCALE_UP),
    )
    down = _rules(
        behavior.scale_down if behavior else None,
        bool(override and override.mode == OverrideMode.FREEZE_SCALE_DOWN),
    )
    hpa_spec: dict[str, Any] = {
        "scaleTargetRef": {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": names.gateway_workload(spec.target_ref.name),
        },
        "minReplicas": low,
        "maxReplicas": high,
        "metrics": metrics,
    }
    if up or down:
        hpa_spec["behavior"] = {k: v for k, v in (("scaleUp", up), ("scaleDown", down)) if v}
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": names.gateway_workload(spec.target_ref.name),
            "namespace": meta["namespace"],
            "labels": {
                **names.gateway_labels(spec.target_ref.name, "autoscaler"),
                "kaizen.studio/scaling-policy": meta["name"],
            },
            "ownerReferences": [names.owner_reference(policy)],
        },
        "spec": hpa_spec,
    }
    return hpa


def render_scaling_policy(inputs: ScalingInputs) -> ScalingPlan:
    """The HPA and status of a ScalingPolicy."""
    policy = inputs.policy
    meta = policy["metadata"]
    generation = meta.get("generation")
    spec = ScalingPolicySpec.model_validate(policy["spec"])
    previous = (policy.get("status") or {}).get("conditions") or []
    status: dict[str, Any] = {"observedGeneration": generation}
    conflict = None
    if inputs.rival_policy:
        conflict = (
            f"ScalingPolicy {inputs.rival_policy!r} already scales Gateway {spec.target_ref.name!r}"
        )
    elif inputs.foreign_hpa:
        conflict = (
            f"HorizontalPodAutoscaler {inputs.foreign_hpa!r} already scales "
            f"Deployment {names.gateway_workload(spec.target_ref.name)!r}; delete it or this policy"
        )

    def refused(conds: list[dict[str, Any]], reason: str, message: str) -> ScalingPlan:
        """No HPA: Ready=False and Stalled with ``reason`` (the user must act)."""
        status["conditions"] = ready_conditions(
            conds,
            ready=False,
            reason=reason,
            message=message,
            generation=generation,
            now=inputs.now,
            stalled=True,
        )
        return ScalingPlan(
            hpa=None, status=status, active_override=None, conflict=reason == CONFLICT
        )

    if conflict:
        conds = set_condition(previous, CONFLICT, True, CONFLICT, conflict, generation, inputs.now)
        return refused(conds, CONFLICT, conflict)
    conds = set_condition(previous, CONFLICT, False, "NoConflict", "", generation, inputs.now)
    if inputs.gateway is None:
        message = f"Gateway {spec.target_ref.name!r} (spec.targetRef) does not exist"
        return refused(conds, "TargetNotFound", message)

    hpa = render_hpa(policy, spec, inputs.now)
    if inputs.max_replicas is not None:  # the platform's gateway policy bounds the HPA
        bounds = hpa["spec"]
        bounds["maxReplicas"] = min(bounds["maxReplicas"], inputs.max_replicas)
        bounds["minReplicas"] = min(bounds["minReplicas"], bounds["maxReplicas"])
    live = (inputs.hpa or {}).get("status") or {}
    failing = next(
        (
            c
            for c in live.get("conditions") or []
            if c.get("type") == "ScalingActive"
            and c.get("status") == "False"
            and str(c.get("reason", "")).startswith("FailedGet")
        ),
        None,
    )
    if failing is not None:
        conds = set_condition(
            conds,
            METRICS_DEGRADED,
            True,
            str(failing["reason"]),
            str(failing.get("message", ""))[:1024],
            generation,
            inputs.now,
        )
    else:
        conds = set_condition(
            conds, METRICS_DEGRADED, False, "AllMetricsServed", "", generation, inputs.now
        )
    override = active_override(spec, inputs.now)
    active = None
    if override is not None:
        active = {k: v for k, v in override.to_wire().items() if v not in (None, "")}
        status["activeOverride"] = active
    else:
        status["activeOverride"] = None
    for cond in live.get("conditions") or []:
        if cond.get("type") in HPA_CONDITIONS:
            conds = set_condition(
                conds,
                cond["type"],
                cond.get("status", "Unknown"),
                cond.get("reason", "Unknown"),
                cond.get("message", ""),
                generation,
                inputs.now,
            )
    status["currentReplicas"] = live.get("currentReplicas")
    status["desiredReplicas"] = live.get("desiredReplicas")
    status["lastScaleTime"] = live.get("lastScaleTime")
    status["hpaName"] = hpa["metadata"]["name"]
    bounds = f"{hpa['spec']['minReplicas']} and {hpa['spec']['maxReplicas']}"
    message = f"HorizontalPodAutoscaler {hpa['metadata']['name']} scales between {bounds}"
    if override is not None:
        message += f"; override {override.mode} active"
        if override.expires_at:
            message += f" until {timestamp(override.expires_at)}"
    status["conditions"] = ready_conditions(
        conds,
        ready=True,
        reason="HorizontalPodAutoscalerReady",
        message=message,
        generation=generation,
        now=inputs.now,
    )
    return ScalingPlan(hpa=hpa, status=status, active_override=active, conflict=False)
