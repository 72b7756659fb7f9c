"""Agent -> revisions and status (pure: no client, no clock)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kaizen_api.v1alpha1.agent import AgentSpec
from kaizen_operator import names
from kaizen_operator.conditions import ready_conditions
from kaizen_operator.revisions import (
    RevisionedKind,
    plan_revisions,
)
from kaizen_operator.revisions import with_creation_times as with_creation_times
from kaizen_operator.secrets import SECRET_ACCESS_DENIED

# Fields that are the agent's *content*; lifecycle, gatewayRef and history limit are
# about how it is served and kept, so changing them makes no new revision.
CONTENT_FIELDS = ("model", "systemPrompt", "tools", "context", "runtime")


class SecretState:
    """What the operator learned about a credentials Secret (never its value)."""

    OK = "ok"
    MISSING = "missing"
    MISSING_KEY = "missing-key"


@dataclass(frozen=True)
class AgentInputs:
    """Everything the Agent render needs, read by resolve_agent."""

    agent: dict[str, Any]
    revisions: tuple[dict[str, Any], ...]
    gateway_exists: bool | None  # None: no gatewayRef
    secret_state: str | None  # None: no credentialsSecretRef
    now: datetime
    # Revision -> why it must outlive revisionHistoryLimit ("served by Gateway 'prod'",
    # "target of Promotion 'p1'"): pruning it would make a Gateway drop the agent.
    retained: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    # Why the operator could not read the credentials Secret (403: kaizen_operator.secrets).
    secret_refusal: str | None = None
    # Revisions labelled with this Agent's name that nobody owns: a restore from
    # `kaizen export` re-applies them before (or after) the Agent.
    orphans: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class AgentPlan:
    """What to write: revisions to create and delete, and the status."""

    create: tuple[dict[str, Any], ...] = ()
    adopt: tuple[str, ...] = ()  # orphaned revisions to take ownership of
    delete: tuple[str, ...] = ()
    status: dict[str, Any] = field(default_factory=dict)
    latest_revision: int | None = None


AGENT_REVISIONS = RevisionedKind(
    kind="Agent",
    label=names.AGENT_LABEL,
    content_fields=CONTENT_FIELDS,
    revision_name=names.agent_revision,
    labels=names.agent_labels,
)


def content_of(spec: dict[str, Any]) -> dict[str, Any]:
    """The revisioned part of a wire-form AgentSpec."""
    return AGENT_REVISIONS.content_of(spec)


def content_hash(spec: dict[str, Any]) -> str:
    """Stable hash of an agent's content (canonical JSON)."""
    return AGENT_REVISIONS.content_hash(spec)


def render_agent(inputs: AgentInputs) -> AgentPlan:
    """Revisions to create/adopt/prune and the Agent's status."""
    agent = inputs.agent
    spec = AgentSpec.model_validate(agent["spec"]).to_wire()
    revs = plan_revisions(
        AGENT_REVISIONS,
        agent,
        spec,
        inputs.revisions,
        inputs.orphans,
        inputs.retained,
        inputs.now,
    )

    generation = agent["metadata"].get("generation")
    ready, reason, message = (
        True,
        "RevisionReady",
        f"revision {revs.latest} is current",
    )
    ref = spec["model"].get("credentialsSecretRef")
    if inputs.secret_refusal:
        ready, reason, message = False, SECRET_ACCESS_DENIED, inputs.secret_refusal
    elif inputs.secret_state == SecretState.MISSING:
        ready, reason = False, "SecretNotFound"
        message = f"Secret {ref['name']!r} (spec.model.credentialsSecretRef) does not exist"
    elif inputs.secret_state == SecretState.MISSING_KEY:
        ready, reason = False, "SecretKeyNotFound"
        message = f"Secret {ref['name']!r} has no key {ref.get('key', 'apiKey')!r}"
    elif inputs.gateway_exists is False:
        ready, reason = False, "GatewayNotFound"
        message = f"Gateway {spec['gatewayRef']['name']!r} (spec.gatewayRef) does not exist"
    conditions = ready_conditions(
        (agent.get("status") or {}).get("conditions") or [],
        ready=ready,
        reason=reason,
        message=message,
        generation=generation,
        now=inputs.now,
        stalled=not ready,
    )
    status = {
        "observedGeneration": generation,
        "latestRevision": revs.latest,
        "revisions": list(revs.records),
        "conditions": conditions,
    }
    return AgentPlan(
        create=revs.create,
        adopt=revs.adopt,
        delete=revs.delete,
        status=status,
        latest_revision=revs.latest,
    )
