"""Agent -> revisions and status (pure: no client, no clock)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kaizen_api.v1alpha1.agent import AgentSpec
from kaizen_operator import names
from kaizen_operator.conditions import ready_conditions, timestamp
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


def content_of(spec: dict[str, Any]) -> dict[str, Any]:
    """The revisioned part of a wire-form AgentSpec."""
    return {k: spec[k] for k in CONTENT_FIELDS if k in spec}


def content_hash(spec: dict[str, Any]) -> str:
    """Stable hash of an agent's content (canonical JSON)."""
    canonical = json.dumps(content_of(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def revision_number(rev: dict[str, Any]) -> int:
    """The revision number of a ControllerRevision."""
    return int(rev.get("revision", 0))


def render_revision(agent: dict[str, Any], spec: dict[str, Any], number: int) -> dict[str, Any]:
    """The ControllerRevision that freezes ``spec``'s content as revision ``number``."""
    meta = agent["metadata"]
    return {
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": {
            "name": names.agent_revision(meta["name"], number),
            "namespace": meta["namespace"],
            "labels": {
                **names.agent_labels(meta["name"]),
                names.REVISION_HASH_LABEL: content_hash(spec),
            },
            "ownerReferences": [names.owner_reference(agent)],
        },
        "data": {"spec": content_of(spec)},
        "revision": number,
    }


def _record(rev: dict[str, Any], now: datetime, retained_by: tuple[str, ...]) -> dict[str, Any]:
    record = {
        "revision": revision_number(rev),
        "name": rev["metadata"]["name"],
        "hash": rev["metadata"].get("labels", {}).get(names.REVISION_HASH_LABEL, ""),
        "createdAt": rev["metadata"].get("creationTimestamp") or timestamp(now),
    }
    if retained_by:
        record["retainedBy"] = list(retained_by)
    return record


def split_history(
    revisions: list[dict[str, Any]], limit: int, retained: Mapping[int, tuple[str, ...]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], set[int]]:
    """(kept, pruned, kept beyond the limit): the newest ``limit`` revisions are kept,
    and so is every older one that ``retained`` names (a Gateway serves it or an
    unfinished Promotion targets it)."""
    old = revisions[:-limit] if len(revisions) > limit else []
    beyond = {revision_number(r) for r in old if retained.get(revision_number(r))}
    pruned = [r for r in old if revision_number(r) not in beyond]
    kept = [r for r in revisions if r not in pruned]
    return kept, pruned, beyond


def with_creation_times(status: dict[str, Any], created: dict[str, str]) -> dict[str, Any]:
    """``status`` with the apiserver's creationTimestamp (``created``: revision name ->
    time) for the revisions just created. The plan can only guess "now" for them, and a
    guess a second off made the next reconcile (every Agent, after a restart) rewrite
    the status for nothing."""
    revisions = [
        {**r, "createdAt": created.get(r["name"], r["createdAt"])} for r in status["revisions"]
    ]
    return {**status, "revisions": revisions}


def adoptable(revision: dict[str, Any]) -> bool:
    """Whether an orphaned revision holds what its hash label says (a restored one does;
    one edited by hand since its export does not, and is left alone)."""
    labels = revision["metadata"].get("labels") or {}
    content = (revision.get("data") or {}).get("spec") or {}
    return bool(labels.get(names.REVISION_HASH_LABEL)) and labels[
        names.REVISION_HASH_LABEL
    ] == content_hash(content)


def render_agent(inputs: AgentInputs) -> AgentPlan:
    """Revisions to create/adopt/prune and the Agent's status."""
    agent = inputs.agent
    spec = AgentSpec.model_validate(agent["spec"]).to_wire()
    digest = content_hash(spec)
    adopted = [r for r in inputs.orphans if adoptable(r)]
    existing = sorted((*inputs.revisions, *adopted), key=revision_number)
    latest = existing[-1] if existing else None
    create: list[dict[str, Any]] = []
    kept = list(existing)
    new = (
        latest is None
        or latest["metadata"].get("labels", {}).get(names.REVISION_HASH_LABEL) != digest
    )
    if new:
        # Past every name in use, unadoptable orphans included (their names are taken).
        number = max((revision_number(r) for r in (*existing, *inputs.orphans)), default=0) + 1
        revision = render_revision(agent, spec, number)
        create.append(revision)
        kept.append(revision)
    limit = int(spec.get("revisionHistoryLimit", 10))
    kept, pruned, beyond = split_history(kept, limit, inputs.retained)

    generation = agent["metadata"].get("generation")
    ready, reason, message = (
        True,
        "RevisionReady",
        f"revision {revision_number(kept[-1])} is current",
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
        "latestRevision": revision_number(kept[-1]),
        "revisions": [
            _record(
                r,
                inputs.now,
                inputs.retained.get(revision_number(r), ()) if revision_number(r) in beyond else (),
            )
            for r in kept
        ],
        "conditions": conditions,
    }
    return AgentPlan(
        create=tuple(create),
        adopt=tuple(r["metadata"]["name"] for r in adopted if r not in pruned),
        delete=tuple(r["metadata"]["name"] for r in pruned),
        status=status,
        latest_revision=revision_number(kept[-1]),
    )
