"""ScalingPolicy: autoscaling for one Gateway, reconciled into one owned HPA."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from kaizen_api.v1alpha1.common import (
    Duration,
    KaizenModel,
    ObjectMeta,
    Quantity,
    ResourceName,
    ResourceStatus,
    cel,
    k8s_extra,
    parse_duration,
)

MAX_STABILIZATION_SECONDS = 3600
MAX_PERIOD_SECONDS = 1800


class ScaleTargetRef(KaizenModel):
    """The Gateway to scale (same namespace)."""

    kind: Literal["Gateway"] = Field(default="Gateway", description="Gateway.")
    name: ResourceName = Field(description="Name of the Gateway.")


class MetricType(StrEnum):
    """What the policy scales on."""

    CPU = "cpu"
    MEMORY = "memory"
    REQUESTS_PER_SECOND = "requestsPerSecond"
    LATENCY_P95 = "latencyP95"
    ERROR_RATE = "errorRate"


RESOURCE_METRICS = ("cpu", "memory")


class MetricTarget(KaizenModel):
    """One metric and its target.

    cpu and memory take ``averageUtilization`` (percent of the container's request);
    requestsPerSecond (per pod), latencyP95 (milliseconds, gateway-wide) and errorRate
    (percent of 5xx responses, gateway-wide) take ``averageValue``; those three reach
    the HPA as External metrics the operator serves (``--external-metrics``).
    """

    model_config = ConfigDict(
        json_schema_extra=k8s_extra(
            validations=[
                cel(
                    "self.type in ['cpu', 'memory'] ? (has(self.averageUtilization) && !has(self.averageValue)) : (has(self.averageValue) && !has(self.averageUtilization))",
                    "cpu and memory metrics take averageUtilization; requestsPerSecond, "
                    "latencyP95 and errorRate take averageValue",
                )
            ]
        )
    )

    type: MetricType = Field(description="cpu, memory, requestsPerSecond, latencyP95 or errorRate.")
    average_utilization: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="Target percent of the requested cpu/memory, averaged over pods.",
    )
    average_value: Quantity | None = Field(
        default=None,
        description="Target: requests/second per pod, or the gateway's p95 latency in ms, "
        "or its percent of 5xx responses, over the last minute.",
    )

    @model_validator(mode="after")
    def _target_matches_type(self) -> MetricTarget:
        resource = self.type in RESOURCE_METRICS
        ok = (
            (self.average_utilization is not None and self.average_value is None)
            if resource
            else (self.average_value is not None and self.average_utilization is None)
        )
        if not ok:
            raise ValueError(
                "cpu and memory metrics take averageUtilization; requestsPerSecond, "
                "latencyP95 and errorRate take averageValue"
            )
        return self


class ScalingRules(KaizenModel):
    """How fast one direction of scaling may go."""

    model_config = ConfigDict(
        json_schema_extra=k8s_extra(
            validations=[
                cel(
                    "!has(self.stabilizationWindow) || duration(self.stabilizationWindow) <= duration('1h')",
                    "stabilizationWindow must be at most 1h",
                    fieldPath=".stabilizationWindow",
                ),
                cel(
                    "duration(self.period) >= duration('1s') && duration(self.period) <= duration('30m')",
                    "period must be between 1s and 30m",
                    fieldPath=".period",
                ),
            ]
        )
    )

    stabilization_window: Duration | None = Field(
        default=None,
        description="Cooldown: recommendations over this window are considered (max 1h).",
    )
    max_replicas_change: int | None = Field(
        default=None, ge=1, le=1000, description="At most this many pods per period."
    )
    max_percent_change: int | None = Field(
        default=None, ge=1, le=1000, description="At most this percent of pods per period."
    )
    period: Duration = Field(
        default="15s", description="Window the max changes apply to (1s to 30m)."
    )

    @model_validator(mode="after")
    def _bounds(self) -> ScalingRules:
        if (
            self.stabilization_window is not None
            and parse_duration(self.stabilization_window) > MAX_STABILIZATION_SECONDS
        ):
            raise ValueError("stabilizationWindow must be at most 1h")
        if not 1 <= parse_duration(self.period) <= MAX_PERIOD_SECONDS:
            raise ValueError("period must be between 1s and 30m")
        return self


class ScalingBehavior(KaizenModel):
    """Scale-up and scale-down speed limits and cooldowns."""

    scale_up: ScalingRules | None = Field(default=None, description="Limits on scaling up.")
    scale_down: ScalingRules | None = Field(default=None, description="Limits on scaling down.")


class OverrideMode(StrEnum):
    """Manual control over the autoscaler."""

    PIN = "Pin"
    FREEZE_SCALE_DOWN = "FreezeScaleDown"
    FREEZE_SCALE_UP = "FreezeScaleUp"


class ScalingOverride(KaizenModel):
    """A manual override: pin the replica count, or stop scaling in one direction."""

    model_config = ConfigDict(
        json_schema_extra=k8s_extra(
            validations=[
                cel(
                    "self.mode != 'Pin' || has(self.replicas)",
                    "override.replicas is required when mode is Pin",
                    fieldPath=".replicas",
                    reason="FieldValueRequired",
                )
            ]
        )
    )

    mode: OverrideMode = Field(description="Pin, FreezeScaleDown or FreezeScaleUp.")
    replicas: int | None = Field(
        default=None,
        ge=0,
        le=1000,
        description="Replica count for Pin (within minReplicas..maxReplicas).",
    )
    expires_at: datetime | None = Field(
        default=None, description="When the override lifts by itself (RFC 3339 date-time)."
    )
    reason: str = Field(default="", max_length=1024, description="Why; recorded in Events.")

    @model_validator(mode="after")
    def _pin_needs_replicas(self) -> ScalingOverride:
        if self.mode == OverrideMode.PIN and self.replicas is None:
            raise ValueError("override.replicas is required when mode is Pin")
        return self


class ScalingPolicySpec(KaizenModel):
    """Desired autoscaling of one Gateway."""

    model_config = ConfigDict(
        json_schema_extra=k8s_extra(
            validations=[
                cel(
                    "self.minReplicas <= self.maxReplicas",
                    "minReplicas must be less than or equal to maxReplicas",
                    fieldPath=".minReplicas",
                ),
                cel(
                    "!has(self.override) || !has(self.override.replicas) || (self.override.replicas >= self.minReplicas && self.override.replicas <= self.maxReplicas)",
                    "override.replicas must be within minReplicas..maxReplicas",
                    fieldPath=".override.replicas",
                ),
            ]
        )
    )

    target_ref: ScaleTargetRef = Field(description="The Gateway to scale.")
    min_replicas: int = Field(default=1, ge=1, le=1000, description="Fewest pods.")
    max_replicas: int = Field(ge=1, le=1000, description="Most pods.")
    metrics: list[MetricTarget] = Field(
        min_length=1,
        max_length=5,
        description="Metrics to scale on, at most one per type; the highest recommendation wins.",
        json_schema_extra=k8s_extra(list_type="map", list_map_keys=["type"]),
    )
    behavior: ScalingBehavior | None = Field(
        default=None, description="Speed limits and cooldowns."
    )
    override: ScalingOverride | None = Field(default=None, description="Manual override.")

    @model_validator(mode="after")
    def _bounds(self) -> ScalingPolicySpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas must be less than or equal to maxReplicas")
        if (
            self.override is not None
            and self.override.replicas is not None
            and not self.min_replicas <= self.override.replicas <= self.max_replicas
        ):
            raise ValueError("override.replicas must be within minReplicas..maxReplicas")
        return self


class ActiveOverride(KaizenModel):
    """The override in force."""

    mode: OverrideMode = Field(description="Pin, FreezeScaleDown or FreezeScaleUp.")
    replicas: int | None = Field(default=None, ge=0, description="Pinned or frozen count.")
    expires_at: datetime | None = Field(default=None, description="When it lifts.")
    reason: str = Field(default="", max_length=1024, description="Why it was set.")


class ScalingPolicyStatus(ResourceStatus):
    """Observed state of a ScalingPolicy (mirrors its HPA)."""

    current_replicas: int | None = Field(default=None, ge=0, description="Pods now.")
    desired_replicas: int | None = Field(default=None, ge=0, description="Pods wanted.")
    last_scale_time: datetime | None = Field(default=None, description="Last time it scaled.")
    active_override: ActiveOverride | None = Field(
        default=None, description="The override in force, if any."
    )
    hpa_name: str | None = Field(
        default=None, max_length=253, description="The HorizontalPodAutoscaler it owns."
    )


class ScalingPolicy(KaizenModel):
    """Autoscaling for one Gateway: bounds, metrics, behaviour and manual overrides."""

    api_version: Literal["kaizen.studio/v1alpha1"] = Field(
        default="kaizen.studio/v1alpha1", description="kaizen.studio/v1alpha1"
    )
    kind: Literal["ScalingPolicy"] = Field(default="ScalingPolicy", description="ScalingPolicy")
    metadata: ObjectMeta = Field(default_factory=dict, description="Standard object metadata.")
    spec: ScalingPolicySpec = Field(description="Desired state.")
    status: ScalingPolicyStatus | None = Field(default=None, description="Observed state.")
