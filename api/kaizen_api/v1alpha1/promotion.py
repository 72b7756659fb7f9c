"""Promotion: an immutable request to move one Agent revision from one Gateway to the next."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, model_validator

from kaizen_api.v1alpha1.common import (
    HTTP_URL_PATTERN,
    Duration,
    KaizenModel,
    LocalObjectReference,
    ObjectMeta,
    Quantity,
    ResourceName,
    ResourceStatus,
    SecretKeySelector,
    cel,
    k8s_extra,
)


class SoakGate(KaizenModel):
    """Wait this long with the source gateway healthy before switching."""

    duration: Duration = Field(description="How long to soak, e.g. 10m.")
    require_healthy: bool = Field(
        default=True, description="Fail if the source gateway is not Ready during the soak."
    )


class GateMetric(StrEnum):
    """A source-gateway metric a gate can read."""

    ERROR_RATE = "errorRate"
    LATENCY_P95 = "latencyP95"
    REQUESTS_PER_SECOND = "requestsPerSecond"


class MetricGate(KaizenModel):
    """A threshold on one of the source gateway's metrics for this agent revision."""

    model_config = ConfigDict(
        json_schema_extra=k8s_extra(
            validations=[cel("has(self.max) || has(self.min)", "set max, min, or both")]
        )
    )

    metric: GateMetric = Field(
        description="errorRate (percent), latencyP95 (ms) or requestsPerSecond."
    )
    max: Quantity | None = Field(default=None, description="Highest acceptable value.")
    min: Quantity | None = Field(default=None, description="Lowest acceptable value.")

    @model_validator(mode="after")
    def _some_bound(self) -> MetricGate:
        if self.max is None and self.min is None:
            raise ValueError("set max, min, or both")
        return self


class SmokeGate(KaizenModel):
    """Invoke the agent on the target gateway after the switch; revert on failure."""

    input: str = Field(min_length=1, max_length=8192, description="User message sent.")
    expect_contains: str | None = Field(
        default=None, max_length=8192, description="Text the answer must contain."
    )
    timeout: Duration = Field(default="30s", description="How long to wait for the answer.")


class WebhookTarget(KaizenModel):
    """An HTTP endpoint the operator POSTs JSON to."""

    url: str = Field(max_length=2048, pattern=HTTP_URL_PATTERN, description="URL to POST to.")
    timeout: Duration = Field(default="10s", description="How long to wait.")
    secret_ref: SecretKeySelector | None = Field(
        default=None, description="Secret key sent as a bearer token."
    )


class WebhookGate(WebhookTarget):
    """Ask an external system; a 2xx answer passes."""


class Notifications(KaizenModel):
    """Who to tell when the Promotion does not succeed."""

    webhook: WebhookTarget | None = Field(
        default=None,
        description="Deprecated: subscribe to promotion.* events with a facade webhook "
        "(signed, retried, logged; docs/webhooks.md). Still POSTed once the Promotion ends "
        "Failed, Rejected, Aborted or Errored (JSON with type, phase, reason and message; "
        "retried with backoff, at least once).",
    )


class Gates(KaizenModel):
    """Checks a promotion must pass; all that are set apply."""

    soak: SoakGate | None = Field(default=None, description="Soak time on the source.")
    metrics: list[MetricGate] | None = Field(
        default=None,
        max_length=8,
        description="Thresholds on the source gateway's metrics, keyed by metric.",
        json_schema_extra=k8s_extra(list_type="map", list_map_keys=["metric"]),
    )
    smoke: SmokeGate | None = Field(default=None, description="Smoke invocation after switch.")
    webhook: WebhookGate | None = Field(default=None, description="External approval webhook.")


class Approvers(KaizenModel):
    """Who may approve or reject."""

    users: list[Annotated[str, Field(min_length=1, max_length=256)]] | None = Field(
        default=None,
        max_length=64,
        description="User names as Kubernetes authenticates them.",
        json_schema_extra=k8s_extra(list_type="set"),
    )
    groups: list[Annotated[str, Field(min_length=1, max_length=256)]] | None = Field(
        default=None,
        max_length=64,
        description="Groups whose members may approve.",
        json_schema_extra=k8s_extra(list_type="set"),
    )


class Approval(KaizenModel):
    """Human approval before the switch."""

    model_config = ConfigDict(
        json_schema_extra=k8s_extra(
            validations=[
                cel(
                    "!self.required || (has(self.approvers) && ((has(self.approvers.users) && size(self.approvers.users) > 0) || (has(self.approvers.groups) && size(self.approvers.groups) > 0)))",
                    "approval.required needs at least one approver user or group",
                    fieldPath=".approvers",
                )
            ]
        )
    )

    required: bool = Field(default=False, description="Wait for approvals before switching.")
    approvers: Approvers | None = Field(default=None, description="Who may approve.")
    min_approvals: int = Field(default=1, ge=1, le=10, description="Distinct approvers needed.")
    allow_self_approval: bool = Field(
        default=False, description="Whether the Promotion's creator may approve it."
    )
    timeout: Duration | None = Field(
        default=None,
        description="How long to wait for approvals; after it the Promotion fails "
        "with reason ApprovalExpired.",
    )

    @model_validator(mode="after")
    def _approvers_when_required(self) -> Approval:
        if self.required and not (
            self.approvers and (self.approvers.users or self.approvers.groups)
        ):
            raise ValueError("approval.required needs at least one approver user or group")
        return self


class TargetKind(StrEnum):
    """The kinds a Promotion promotes a revision of."""

    AGENT = "Agent"
    PIPELINE = "Pipeline"


class TargetReference(KaizenModel):
    """The Agent or Pipeline whose revision is promoted."""

    kind: TargetKind = Field(default=TargetKind.AGENT, description="Agent or Pipeline.")
    name: ResourceName = Field(description="Its name.")


class PromotionSpec(KaizenModel):
    """What to promote, from where to where, and the checks on the way. Immutable."""

    model_config = ConfigDict(
        json_schema_extra=k8s_extra(
            validations=[
                cel(
                    "self == oldSelf",
                    "Promotion spec is immutable: create a new Promotion instead",
                ),
                cel("self.from != self.to", "from and to must name different Gateways"),
                cel(
                    "has(self.agentRef) != has(self.targetRef)",
                    "set exactly one of agentRef or targetRef",
                ),
            ]
        )
    )

    agent_ref: LocalObjectReference | None = Field(
        default=None,
        description="The Agent to promote; the same as targetRef {kind: Agent, name}.",
    )
    target_ref: TargetReference | None = Field(
        default=None, description="The Agent or Pipeline to promote (instead of agentRef)."
    )
    revision: int = Field(ge=1, description="Revision number (of the target) to promote.")
    from_: ResourceName = Field(alias="from", description="Source Gateway (e.g. the dev one).")
    to: ResourceName = Field(description="Target Gateway (e.g. staging).")
    gates: Gates | None = Field(default=None, description="Checks before and after the switch.")
    approval: Approval | None = Field(default=None, description="Human approval.")
    notifications: Notifications | None = Field(
        default=None, description="Where to report a Promotion that did not succeed."
    )

    @model_validator(mode="after")
    def _different_gateways(self) -> PromotionSpec:
        if self.from_ == self.to:
            raise ValueError("from and to must name different Gateways")
        if (self.agent_ref is None) == (self.target_ref is None):
            raise ValueError("set exactly one of agentRef or targetRef")
        return self

    @property
    def target(self) -> tuple[TargetKind, str]:
        """(kind, name) of what is promoted, from targetRef or agentRef."""
        if self.target_ref is not None:
            return TargetKind(self.target_ref.kind), self.target_ref.name
        if self.agent_ref is not None:
            return TargetKind.AGENT, self.agent_ref.name
        raise ValueError("set exactly one of agentRef or targetRef")


class Phase(StrEnum):
    """Where a promotion is."""

    PENDING = "Pending"
    WAITING_FOR_APPROVAL = "WaitingForApproval"
    PROGRESSING = "Progressing"
    VERIFYING = "Verifying"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    REJECTED = "Rejected"
    ABORTED = "Aborted"
    ERRORED = "Errored"


TERMINAL_PHASES = frozenset(
    {Phase.SUCCEEDED, Phase.FAILED, Phase.REJECTED, Phase.ABORTED, Phase.ERRORED}
)


class Decision(StrEnum):
    """An approver's decision."""

    APPROVED = "Approved"
    REJECTED = "Rejected"


class ApprovalRecord(KaizenModel):
    """One approval or rejection, with the actor the apiserver or facade authenticated."""

    user: str = Field(max_length=256, description="Authenticated user name.")
    decision: Decision = Field(description="Approved or Rejected.")
    reason: str = Field(default="", max_length=1024, description="Why.")
    time: datetime = Field(description="When.")


class GateStatus(StrEnum):
    """Outcome of a gate."""

    PENDING = "Pending"
    PASSED = "Passed"
    FAILED = "Failed"


class GateResult(KaizenModel):
    """Outcome of one gate."""

    name: str = Field(max_length=64, description="soak, metrics, smoke or webhook.")
    status: GateStatus = Field(description="Pending, Passed or Failed.")
    message: str = Field(default="", max_length=4096, description="Details.")
    time: datetime | None = Field(default=None, description="When it was decided.")


class NotificationStatus(KaizenModel):
    """Delivery of the failure notification."""

    delivered_at: datetime | None = Field(default=None, description="When a 2xx came back.")
    attempts: int = Field(default=0, ge=0, description="POSTs tried so far.")
    last_attempt: datetime | None = Field(default=None, description="When the last POST ran.")
    message: str = Field(default="", max_length=1024, description="Outcome of the last POST.")


class PromotionStatus(ResourceStatus):
    """Observed state of a Promotion."""

    phase: Phase | None = Field(
        default=None,
        description="Pending, WaitingForApproval, Progressing, Verifying, Succeeded, Failed, "
        "Rejected, Aborted or Errored.",
    )
    message: str | None = Field(default=None, max_length=4096, description="Why it is there.")
    approvals: list[ApprovalRecord] | None = Field(
        default=None,
        max_length=64,
        description="Decisions recorded, keyed by user.",
        json_schema_extra=k8s_extra(list_type="map", list_map_keys=["user"]),
    )
    gates: list[GateResult] | None = Field(
        default=None,
        max_length=8,
        description="Gate outcomes, keyed by name.",
        json_schema_extra=k8s_extra(list_type="map", list_map_keys=["name"]),
    )
    previous_revision: int | None = Field(
        default=None, ge=1, description="Revision the target served before (for revert)."
    )
    started_at: datetime | None = Field(default=None, description="When work began.")
    approval_deadline: datetime | None = Field(
        default=None, description="When waiting for approval ends (from approval.timeout)."
    )
    progressing_since: datetime | None = Field(
        default=None, description="When the gates started (soak time counts from here)."
    )
    completed_at: datetime | None = Field(default=None, description="When it ended.")
    notification: NotificationStatus | None = Field(
        default=None, description="Delivery of spec.notifications.webhook, when it ended badly."
    )


class Promotion(KaizenModel):
    """A request to move one Agent revision from one Gateway to another, with gates and approval."""

    api_version: Literal["kaizen.studio/v1alpha1"] = Field(
        default="kaizen.studio/v1alpha1", description="kaizen.studio/v1alpha1"
    )
    kind: Literal["Promotion"] = Field(default="Promotion", description="Promotion")
    metadata: ObjectMeta = Field(default_factory=dict, description="Standard object metadata.")
    spec: PromotionSpec = Field(description="Desired state; immutable after creation.")
    status: PromotionStatus | None = Field(default=None, description="Observed state.")


def promotion_target(spec: dict[str, object]) -> tuple[str, str] | None:
    """(kind, name) a wire-form PromotionSpec promotes, or None when it names nothing."""
    target = spec.get("targetRef")
    if isinstance(target, dict) and target.get("name"):
        return str(target.get("kind") or TargetKind.AGENT), str(target["name"])
    agent = spec.get("agentRef")
    if isinstance(agent, dict) and agent.get("name"):
        return TargetKind.AGENT.value, str(agent["name"])
    return None
