"""The agent bundle: what a gateway pod serves, as the operator writes it into the
gateway's ConfigMap and the gateway process reads it (pure, no I/O)."""

from __future__ import annotations

import hashlib

from pydantic import Field

from kaizen_api.v1alpha1.agent import AgentSpec
from kaizen_api.v1alpha1.common import KaizenModel, SecretKeySelector
from kaizen_api.v1alpha1.gateway import GatewayAuth, RateLimits
from kaizen_api.v1alpha1.pipeline import PipelineSpec

BUNDLE_FILE = "bundle.json"
BUNDLE_MOUNT = "/etc/kaizen/bundle"
SECRETS_MOUNT = "/var/run/kaizen/secrets"
KNOWLEDGE_MOUNT = "/etc/kaizen/knowledge"
GATEWAY_PORT = 8080


class BundledAgent(KaizenModel):
    """One agent at the revision this gateway serves."""

    name: str = Field(description="Agent name; the `model` clients ask for.")
    revision: int = Field(ge=1, description="Revision number served.")
    hash: str = Field(description="Content hash of the revision.")
    spec: AgentSpec = Field(description="The revision's spec.")


class BundledPipeline(KaizenModel):
    """One pipeline at the revision this gateway serves."""

    name: str = Field(description="Pipeline name; the `model` clients ask for.")
    revision: int = Field(ge=1, description="Revision number served.")
    hash: str = Field(description="Content hash of the revision.")
    spec: PipelineSpec = Field(description="The revision's spec.")


class AgentBundle(KaizenModel):
    """Everything one gateway serves."""

    gateway: str = Field(description="Gateway name.")
    namespace: str = Field(description="Gateway namespace.")
    environment: str = Field(description="Gateway environment.")
    agents: list[BundledAgent] = Field(default_factory=list, description="Served agents.")
    pipelines: list[BundledPipeline] = Field(default_factory=list, description="Served pipelines.")
    pinned_agents: list[BundledAgent] = Field(
        default_factory=list,
        description="Agent revisions that served pipelines pin and the gateway does not "
        "serve as models itself; reachable only as pipeline steps.",
    )
    rate_limits: RateLimits | None = Field(default=None, description="Rate limits.")
    auth: GatewayAuth | None = Field(default=None, description="Caller authentication.")
    knowledge_mounts: dict[str, str] | None = Field(
        default=None,
        description="Where each ConfigMap named by a knowledge source is mounted: "
        "ConfigMap name -> directory holding one file per data key.",
    )


def secret_volume_name(secret_name: str) -> str:
    """Pod volume name of a mounted Secret (the Secret name is a valid DNS subdomain)."""
    return "secret-" + secret_name.replace(".", "-")[:56]


def secret_file(ref: SecretKeySelector) -> str:
    """Where a gateway pod finds the value of a Secret key (mounted read-only)."""
    return f"{SECRETS_MOUNT}/{ref.name}/{ref.key}"


def knowledge_volume_name(config_map: str) -> str:
    """Pod volume name of a mounted knowledge ConfigMap: readable, and unique even when
    two names differ only in a dot or past the 63-character limit."""
    digest = hashlib.sha256(config_map.encode()).hexdigest()[:8]
    return f"knowledge-{config_map.replace('.', '-')[:44]}-{digest}"


def knowledge_mount(config_map: str) -> str:
    """Where a gateway pod finds the data keys of a knowledge ConfigMap (read-only)."""
    return f"{KNOWLEDGE_MOUNT}/{config_map}"
