"""render_scaling_policy: HPA mapping, overrides and their expiry, conflicts."""

from __future__ import annotations

from datetime import UTC, datetime

from kaizen_operator.scaling.render import ScalingInputs, render_scaling_policy
from tests.support.objects import gateway, obj

NOW = datetime(2026, 5, 1, 12, tzinfo=UTC)


def policy(**spec):
    base = {
        "targetRef": {"name": "prod"},
        "minReplicas": 2,
        "maxReplicas": 10,
        "metrics": [{"type": "cpu", "averageUtilization": 70}],
    }
    return obj("ScalingPolicy", "prod", {**base, **spec})


def render(body, *, hpa=None, rival=None, foreign=None, gw=True, now=NOW):
    return render_scaling_policy(
        ScalingInputs(body, gateway("prod", "production") if gw else None, hpa, rival, foreign, now)
    )


def cond(plan, type_):
    return next(c for c in plan.status["conditions"] if c["type"] == type_)


def test_hpa_maps_target_bounds_and_resource_metrics() -> None:
    plan = render(
        policy(
            metrics=[
                {"type": "cpu", "averageUtilization": 70},
                {"type": "memory", "averageUtilization": 80},
            ]
        )
    )
    hpa = plan.hpa
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["metadata"]["name"] == "prod-gateway"
    assert hpa["metadata"]["ownerReferences"][0]["kind"] == "ScalingPolicy"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "prod-gateway",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)
    assert hpa["spec"]["metrics"] == [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 70},
            },
        },
        {
            "type": "Resource",
            "resource": {
                "name": "memory",
                "target": {"type": "Utilization", "averageUtilization": 80},
            },
        },
    ]
    assert "behavior" not in hpa["spec"]
    assert cond(plan, "Ready")["status"] == "True"


def test_behavior_maps_cooldowns_and_change_limits() -> None:
    plan = render(
        policy(
            behavior={
                "scaleUp": {
                    "stabilizationWindow": "0s",
                    "maxPercentChange": 100,
                    "maxReplicasChange": 4,
                    "period": "15s",
                },
                "scaleDown": {"stabilizationWindow": "5m", "maxReplicasChange": 1, "period": "1m"},
            }
        )
    )
    behavior = plan.hpa["spec"]["behavior"]
    assert behavior["scaleUp"] == {
        "stabilizationWindowSeconds": 0,
        "policies": [
            {"type": "Pods", "value": 4, "periodSeconds": 15},
            {"type": "Percent", "value": 100, "periodSeconds": 15},
        ],
        "selectPolicy": "Max",
    }
    assert behavior["scaleDown"] == {
        "stabilizationWindowSeconds": 300,
        "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
        "selectPolicy": "Max",
    }


def test_gateway_metrics_become_external_metrics_per_pod_or_gateway_wide() -> None:
    plan = render(
        policy(
            metrics=[
                {"type": "requestsPerSecond", "averageValue": 50},
                {"type": "latencyP95", "averageValue": "800"},
                {"type": "errorRate", "averageValue": "2500m"},
            ]
        )
    )
    selector = {"matchLabels": {"kaizen.studio/gateway": "prod"}}
    assert plan.hpa["spec"]["metrics"] == [
        {
            "type": "External",
            "external": {
                "metric": {"name": "kaizen_gateway_requests_per_second", "selector": selector},
                "target": {"type": "AverageValue", "averageValue": "50"},
            },
        },
        {
            "type": "External",
            "external": {
                "metric": {"name": "kaizen_gateway_latency_p95_milliseconds", "selector": selector},
                "target": {"type": "Value", "value": "800"},
            },
        },
        {
            "type": "External",
            "external": {
                "metric": {"name": "kaizen_gateway_error_rate_percent", "selector": selector},
                "target": {"type": "Value", "value": "2500m"},
            },
        },
    ]
    assert cond(plan, "MetricsDegraded")["status"] == "False"


def test_metrics_the_hpa_cannot_read_are_reported() -> None:
    failing = {
        "status": {
            "conditions": [
                {
                    "type": "ScalingActive",
                    "status": "False",
                    "reason": "FailedGetExternalMetric",
                    "message": "the HPA was unable to compute the replica count: unable to get "
                    "external metric t/kaizen_gateway_requests_per_second",
                }
            ]
        }
    }
    plan = render(policy(metrics=[{"type": "requestsPerSecond", "averageValue": 50}]), hpa=failing)
    degraded = cond(plan, "MetricsDegraded")
    assert degraded["status"] == "True" and degraded["reason"] == "FailedGetExternalMetric"
    assert "kaizen_gateway_requests_per_second" in degraded["message"]
    assert cond(plan, "ScalingActive")["status"] == "False"


def test_pin_holds_min_and_max_until_it_expires() -> None:
    body = policy(
        override={
            "mode": "Pin",
            "replicas": 5,
            "expiresAt": "2026-05-01T13:00:00Z",
            "reason": "load test",
        }
    )
    pinned = render(body)
    assert (pinned.hpa["spec"]["minReplicas"], pinned.hpa["spec"]["maxReplicas"]) == (5, 5)
    assert pinned.status["activeOverride"]["mode"] == "Pin"
    released = render(body, now=datetime(2026, 5, 1, 13, 0, 1, tzinfo=UTC))
    assert (released.hpa["spec"]["minReplicas"], released.hpa["spec"]["maxReplicas"]) == (2, 10)
    assert released.status["activeOverride"] is None


def test_freezes_disable_one_direction() -> None:
    down = render(policy(override={"mode": "FreezeScaleDown"})).hpa["spec"]["behavior"]
    assert down == {"scaleDown": {"selectPolicy": "Disabled"}}
    up = render(
        policy(override={"mode": "FreezeScaleUp"}, behavior={"scaleDown": {"maxReplicasChange": 1}})
    ).hpa["spec"]["behavior"]
    assert up["scaleUp"] == {"selectPolicy": "Disabled"}
    assert up["scaleDown"]["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 15}]


def test_conflicts_refuse_with_a_clear_condition() -> None:
    rival = render(policy(), rival="older")
    assert rival.hpa is None and rival.conflict
    assert (
        "ScalingPolicy 'older' already scales Gateway 'prod'" in cond(rival, "Conflict")["message"]
    )
    assert cond(rival, "Ready")["status"] == "False"
    foreign = render(policy(), foreign="hand-made")
    assert "HorizontalPodAutoscaler 'hand-made'" in cond(foreign, "Ready")["message"]


def test_missing_target_and_hpa_status_mirroring() -> None:
    assert cond(render(policy(), gw=False), "Ready")["reason"] == "TargetNotFound"
    hpa = {
        "status": {
            "currentReplicas": 3,
            "desiredReplicas": 4,
            "lastScaleTime": "2026-05-01T11:59:00Z",
            "conditions": [
                {
                    "type": "AbleToScale",
                    "status": "True",
                    "reason": "SucceededRescale",
                    "message": "ok",
                },
                {
                    "type": "ScalingLimited",
                    "status": "False",
                    "reason": "DesiredWithinRange",
                    "message": "",
                },
            ],
        }
    }
    plan = render(policy(), hpa=hpa)
    assert (plan.status["currentReplicas"], plan.status["desiredReplicas"]) == (3, 4)
    assert plan.status["lastScaleTime"] == "2026-05-01T11:59:00Z"
    assert cond(plan, "AbleToScale")["reason"] == "SucceededRescale"
    assert cond(plan, "ScalingLimited")["status"] == "False"


def test_the_gateway_policy_bounds_the_hpa() -> None:
    body = policy(minReplicas=30, maxReplicas=1000)
    plan = render_scaling_policy(
        ScalingInputs(body, gateway("prod", "production"), None, None, None, NOW, max_replicas=20)
    )
    assert (plan.hpa["spec"]["minReplicas"], plan.hpa["spec"]["maxReplicas"]) == (20, 20)
