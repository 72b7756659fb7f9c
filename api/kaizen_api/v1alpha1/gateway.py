"""Gateway: a serving environment (dev, staging, production, ...) for agents.

The operator renders it into a ServiceAccount, a ConfigMap agent bundle, a
Deployment, a Service, a PodDisruptionBudget and a NetworkPolicy.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from kaizen_api.v1alpha1.common import (
    NAME_PATTERN,
    KaizenModel,
    LabelSelector,
    LocalObjectReference,
    ObjectMeta,
    ResourceName,
    ResourceRequirements,
    ResourceStatus,
    cel,
    k8s_extra,
)
from kaizen_api.v1alpha1.promotion import Approvers

ENVIRONMENT_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
HOSTNAME_PATTERN = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class RevisionPolicy(StrEnum):
    """Which revision of each agent a gateway serves."""

    LATEST = "Latest"
    PROMOTED = "Promoted"


class AgentSelection(KaizenModel):
    """Which Agents (in the Gateway's namespace) the gateway serves."""

    model_config = ConfigDict(
        json_schema_extra=k8s_extra(
            validations=[
                cel(
                    "has(self.selector) != has(self.names)",
                    "set exactly one of agents.selector or agents.names",
                )
            ]
        )
    )

    selector: LabelSelector | None = Field(
        default=None, description="Serve every Agent whose labels match."
    )
    names: list[ResourceName] | None = Field(
        default=None,
        max_length=256,
        description="Serve exactly these Agents.",
        json_schema_extra=k8s_extra(list_type="set"),
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> AgentSelection:
        if (self.selector is None) == (self.names is None):
            raise ValueError("set exactly one of agents.selector or agents.names")
        return self


class PipelineSelection(KaizenModel):
    """Which Pipelines (in the Gateway's namespace) the gateway serves; same semantics
    as :class:`AgentSelection`."""

    model_config = ConfigDict(
        json_schema_extra=k8s_extra(
            validations=[
                cel(
                    "has(self.selector) != has(self.names)",
                    "set exactly one of pipelines.selector or pipelines.names",
                )
            ]
        )
    )

    selector: LabelSelector | None = Field(
        default=None, description="Serve every Pipeline whose labels match."
    )
    names: list[ResourceName] | None = Field(
        default=None,
        max_length=256,
        description="Serve exactly these Pipelines.",
        json_schema_extra=k8s_extra(list_type="set"),
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> PipelineSelection:
        if (self.selector is None) == (self.names is None):
            raise ValueError("set exactly one of pipelines.selector or pipelines.names")
        return self


class ServiceType(StrEnum):
    """Kubernetes Service type of the gateway."""

    CLUSTER_IP = "ClusterIP"
    NODE_PORT = "NodePort"
    LOAD_BALANCER = "LoadBalancer"


class IngressSpec(KaizenModel):
    """An Ingress in front of the gateway's Service."""

    host: str = Field(max_length=253, pattern=HOSTNAME_PATTERN, description="Host name served.")
    class_name: str | None = Field(
        default=None, max_length=253, description="IngressClass to use (cluster default if unset)."
    )
    tls_secret_name: str | None = Field(
        default=None,
        max_length=253,
        pattern=NAME_PATTERN,
        description="Secret with the TLS certificate for host; plain HTTP if unset.",
    )


class ParentReference(KaizenModel):
    """A Gateway API Gateway the HTTPRoute attaches to."""

    name: ResourceName = Field(description="Name of the Gateway API Gateway.")
    namespace: str | None = Field(
        default=None,
        max_length=63,
        pattern=NAME_PATTERN,
        description="Its namespace (the route's own if unset).",
    )
    section_name: str | None = Field(
        default=None, max_length=253, description="Listener name on that Gateway."
    )


class HTTPRouteSpec(KaizenModel):
    """A Gateway API HTTPRoute to the gateway's Service."""

    parent_refs: list[ParentReference] = Field(
        min_length=1, max_length=16, description="Gateways the route attaches to."
    )
    hostnames: list[Annotated[str, Field(max_length=253, pattern=HOSTNAME_PATTERN)]] | None = Field(
        default=None, max_length=16, description="Host names the route matches."
    )


class ExposureSpec(KaizenModel):
    """How clients reach the gateway."""

    service_type: ServiceType = Field(
        default=ServiceType.CLUSTER_IP, description="ClusterIP, NodePort or LoadBalancer."
    )
    port: int = Field(default=80, ge=1, le=65535, description="Service port.")
    ingress: IngressSpec | None = Field(default=None, description="Optional Ingress.")
    http_route: HTTPRouteSpec | None = Field(
        default=None, description="Optional Gateway API HTTPRoute."
    )


class RateLimit(KaizenModel):
    """A token bucket: sustained rate and burst."""

    model_config = ConfigDict(
        json_schema_extra=k8s_extra(
            validations=[
                cel(
                    "!has(self.burst) || self.burst >= self.requestsPerSecond",
                    "burst must be at least requestsPerSecond",
                    fieldPath=".burst",
                )
            ]
        )
    )

    requests_per_second: int = Field(ge=1, le=1_000_000, description="Sustained requests/second.")
    burst: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        description="Requests allowed at once (defaults to requestsPerSecond).",
    )

    @model_validator(mode="after")
    def _burst_covers_rate(self) -> RateLimit:
        if self.burst is not None and self.burst < self.requests_per_second:
            raise ValueError("burst must be at least requestsPerSecond")
        return self


class RateLimits(KaizenModel):
    """Rate limits (429 with Retry-After beyond them). With Redis configured for the
    gateway they hold across all its replicas together; without Redis, or while Redis is
    unreachable, each pod enforces them on its own."""

    total: RateLimit | None = Field(default=None, description="For all callers together.")
    per_api_key: RateLimit | None = Field(default=None, description="For each API key.")


class AuthMode(StrEnum):
    """How callers authenticate to the gateway."""

    NONE = "None"
    API_KEY = "APIKey"


class GatewayAuth(KaizenModel):
    """Caller authentication."""

    model_config = ConfigDict(
        json_schema_extra=k8s_extra(
            validations=[
                cel(
                    "!has(self.mode) || self.mode != 'APIKey' || has(self.apiKeysSecretRef)",
                    "apiKeysSecretRef is required when mode is APIKey",
                    fieldPath=".apiKeysSecretRef",
                    reason="FieldValueRequired",
                )
            ]
        )
    )

    mode: AuthMode | None = Field(
        default=None,
        description="None or APIKey. Default: APIKey, except for environment dev (None).",
    )
    api_keys_secret_ref: LocalObjectReference | None = Field(
        default=None,
        description="Secret whose data values are the accepted API keys (the keys name them).",
    )

    @model_validator(mode="after")
    def _secret_for_keys(self) -> GatewayAuth:
        if self.mode == AuthMode.API_KEY and self.api_keys_secret_ref is None:
            raise ValueError("apiKeysSecretRef is required when mode is APIKey")
        return self


class PromotedRevision(KaizenModel):
    """The revision of one agent that succeeded Promotions made this Gateway serve."""

    agent: ResourceName = Field(description="Agent name.")
    revision: int = Field(ge=1, description="Revision number to serve.")
    hash: str | None = Field(
        default=None,
        max_length=64,
        description="Content hash of that revision; a revision whose content differs "
        "(another history restored under the same number) is not served.",
    )
    promotion: str | None = Field(
        default=None, max_length=253, description="The Promotion that set it."
    )


class PromotedPipelineRevision(KaizenModel):
    """The revision of one pipeline that succeeded Promotions made this Gateway serve."""

    pipeline: ResourceName = Field(description="Pipeline name.")
    revision: int = Field(ge=1, description="Revision number to serve.")
    hash: str | None = Field(
        default=None,
        max_length=64,
        description="Content hash of that revision; a revision whose content differs "
        "(another history restored under the same number) is not served.",
    )
    promotion: str | None = Field(
        default=None, max_length=253, description="The Promotion that set it."
    )


# Who writes spec.promotedRevisions (the promotion controller's own field manager).
PROMOTION_FIELD_MANAGER = "kaizen-promotion"


class PromotionPolicy(KaizenModel):
    """What every Promotion to this Gateway must ask for: approvals by named people,
    never by the Promotion's own creator (unless allowed here). Owned by
    administrators: changing it needs the custom RBAC verb ``set-promotion-policy`` on
    gateways (a ValidatingAdmissionPolicy of the chart checks it; docs/security.md)."""

    model_config = ConfigDict(
        json_schema_extra=k8s_extra(
            validations=[
                cel(
                    "(has(self.approvers.users) && size(self.approvers.users) > 0) || "
                    "(has(self.approvers.groups) && size(self.approvers.groups) > 0)",
                    "promotionPolicy.approvers needs at least one user or group",
                    fieldPath=".approvers",
                )
            ]
        )
    )

    required_approvals: int = Field(
        default=1,
        ge=1,
        le=10,
        description="Distinct approvers a Promotion to this Gateway needs at least.",
    )
    approvers: Approvers = Field(
        description="Who may approve; a Promotion's spec.approval.approvers must be among them."
    )
    allow_self_approval: bool = Field(
        default=False,
        description="Whether a Promotion's creator may count as one of its approvers.",
    )

    @model_validator(mode="after")
    def _some_approver(self) -> PromotionPolicy:
        if not (self.approvers.users or self.approvers.groups):
            raise ValueError("promotionPolicy.approvers needs at least one user or group")
        return self


class GatewaySpec(KaizenModel):
    """Desired state of a Gateway."""

    environment: str = Field(
        max_length=63,
        pattern=ENVIRONMENT_PATTERN,
        description="dev, staging, production, or another lower-case label.",
    )
    revision_policy: RevisionPolicy | None = Field(
        default=None,
        description="Latest: serve each agent's newest revision. Promoted: serve only "
        "revisions that Promotions set. Default: Latest for environment dev, else Promoted.",
    )
    replicas: int = Field(
        default=1, ge=0, le=1000, description="Pods to run (a ScalingPolicy may manage this)."
    )
    image: str | None = Field(
        default=None,
        max_length=512,
        description="Gateway container image (the operator's default if unset).",
    )
    resources: ResourceRequirements | None = Field(
        default=None, description="Resources of the gateway container."
    )
    agents: AgentSelection = Field(description="Which Agents this gateway serves.")
    pipelines: PipelineSelection | None = Field(
        default=None,
        description="Which Pipelines this gateway serves (as models, like agents). Unset: none.",
    )
    exposure: ExposureSpec | None = Field(default=None, description="Service, Ingress, route.")
    rate_limits: RateLimits | None = Field(
        default=None,
        description="Request rate limits. With Redis configured for gateways they hold across "
        "all replicas together; without Redis, or while it is unreachable, per pod.",
    )
    auth: GatewayAuth | None = Field(default=None, description="Caller authentication.")
    promoted_revisions: list[PromotedRevision] | None = Field(
        default=None,
        max_length=256,
        description="Agent revisions this Gateway serves under revisionPolicy Promoted. "
        "Written by the operator (field manager kaizen-promotion) when a Promotion succeeds "
        "or reverts; kept in spec so that `kaizen export` and a re-apply restore what a "
        "production Gateway serves. Leave it out of manifests in Git (docs/gitops.md).",
        json_schema_extra=k8s_extra(list_type="map", list_map_keys=["agent"]),
    )
    promoted_pipeline_revisions: list[PromotedPipelineRevision] | None = Field(
        default=None,
        max_length=256,
        description="Pipeline revisions this Gateway serves under revisionPolicy Promoted; "
        "like promotedRevisions (written by the operator, field manager kaizen-promotion).",
        json_schema_extra=k8s_extra(list_type="map", list_map_keys=["pipeline"]),
    )
    promotion_policy: PromotionPolicy | None = Field(
        default=None,
        description="Approvals every Promotion to this Gateway must require (set by "
        "administrators; Promotions that ask for less fail with reason PromotionPolicyNotMet).",
    )

    def effective_revision_policy(self) -> RevisionPolicy:
        """The revision policy, with the environment's default applied."""
        if self.revision_policy is not None:
            return RevisionPolicy(self.revision_policy)
        return RevisionPolicy.LATEST if self.environment == "dev" else RevisionPolicy.PROMOTED


class ServedRevision(KaizenModel):
    """The revision of one agent that the gateway serves."""

    agent: str = Field(max_length=253, description="Agent name.")
    revision: int = Field(ge=1, description="Revision number served.")


class ServedPipelineRevision(KaizenModel):
    """The revision of one pipeline that the gateway serves."""

    pipeline: str = Field(max_length=253, description="Pipeline name.")
    revision: int = Field(ge=1, description="Revision number served.")


class PinnedRevision(KaizenModel):
    """An agent revision a served pipeline pins (kept while it is served)."""

    agent: str = Field(max_length=253, description="Agent name.")
    revision: int = Field(ge=1, description="Pinned revision number.")
    pipeline: str = Field(max_length=253, description="The served Pipeline that pins it.")


class GatewayStatus(ResourceStatus):
    """Observed state of a Gateway."""

    replicas: int | None = Field(default=None, ge=0, description="Pods that exist.")
    ready_replicas: int | None = Field(default=None, ge=0, description="Pods that are Ready.")
    selector: str | None = Field(
        default=None, max_length=1024, description="Label selector of the pods (scale subresource)."
    )
    served_revisions: list[ServedRevision] | None = Field(
        default=None,
        max_length=256,
        description="Agent revisions served, by agent.",
        json_schema_extra=k8s_extra(list_type="map", list_map_keys=["agent"]),
    )
    served_pipeline_revisions: list[ServedPipelineRevision] | None = Field(
        default=None,
        max_length=256,
        description="Pipeline revisions served, by pipeline.",
        json_schema_extra=k8s_extra(list_type="map", list_map_keys=["pipeline"]),
    )
    pinned_revisions: list[PinnedRevision] | None = Field(
        default=None,
        max_length=1024,
        description="Agent revisions the served pipelines pin (each kept while served).",
    )
    endpoint: str | None = Field(
        default=None, max_length=2048, description="In-cluster URL of the gateway."
    )


class Gateway(KaizenModel):
    """A serving environment for agents: pods that serve selected agents at set revisions."""

    api_version: Literal["kaizen.studio/v1alpha1"] = Field(
        default="kaizen.studio/v1alpha1", description="kaizen.studio/v1alpha1"
    )
    kind: Literal["Gateway"] = Field(default="Gateway", description="Gateway")
    metadata: ObjectMeta = Field(default_factory=dict, description="Standard object metadata.")
    spec: GatewaySpec = Field(description="Desired state.")
    status: GatewayStatus | None = Field(default=None, description="Observed state.")


def requires_api_key(auth: GatewayAuth | None, environment: str) -> bool:
    """Whether callers need an API key: auth.mode APIKey, or no mode set outside the dev
    environment (gateways are closed by default; only dev is open unless told)."""
    mode = auth.mode if auth is not None else None
    if mode is None:
        return environment != "dev"
    return AuthMode(mode) == AuthMode.API_KEY


def promoted_revisions(gateway: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Agent -> its promoted entry ({agent, revision, hash?, promotion?}) of a Gateway
    object: ``spec.promotedRevisions``; for a Gateway promoted before that field existed
    (it is unset), what its status served."""
    recorded = (gateway.get("spec") or {}).get("promotedRevisions")
    if recorded is None:
        recorded = (gateway.get("status") or {}).get("servedRevisions") or []
    return {str(e["agent"]): dict(e) for e in recorded if e.get("agent")}


def promoted_pipeline_revisions(gateway: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Pipeline -> its promoted entry ({pipeline, revision, hash?, promotion?}) of a
    Gateway object (``spec.promotedPipelineRevisions``)."""
    recorded = (gateway.get("spec") or {}).get("promotedPipelineRevisions") or []
    return {str(e["pipeline"]): dict(e) for e in recorded if e.get("pipeline")}
