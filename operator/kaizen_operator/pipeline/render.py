"""Pipeline -> revisions and status (pure: no client, no clock).

Revisions come from the shared core (:mod:`kaizen_operator.revisions`), exactly as an
Agent's; the conditions say what keeps the Pipeline from running where it is served:
a referenced Agent or Pipeline that does not exist, a pinned revision that does not,
an unpinned step whose Agent the serving Gateway does not serve, a cycle through
pipelineRef or nesting deeper than MAX_PIPELINE_DEPTH.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kaizen_api.v1alpha1.pipeline import MAX_PIPELINE_DEPTH, PipelineSpec
from kaizen_operator import names
from kaizen_operator.conditions import ready_conditions
from kaizen_operator.revisions import RevisionedKind, plan_revisions

# The pipeline's *content*: how it is served and kept (gatewayRef, lifecycle, history
# limit) makes no new revision. Pinned agent revisions are inside steps, so pinning
# another revision makes a new pipeline revision.
CONTENT_FIELDS = ("pattern", "steps", "parallel", "router", "supervisor", "ensemble", "timeout")

PIPELINE_REVISIONS = RevisionedKind(
    kind="Pipeline",
    label=names.PIPELINE_LABEL,
    content_fields=CONTENT_FIELDS,
    revision_name=names.pipeline_revision,
    labels=names.pipeline_labels,
)


@dataclass(frozen=True)
class ServingGateway:
    """A Gateway that selects the pipeline, and what it serves."""

    name: str
    agents: frozenset[str]  # agents it serves as models
    pipelines: frozenset[str]  # pipelines it selects


@dataclass(frozen=True)
class PipelineInputs:
    """Everything the Pipeline render needs, read by resolve_pipeline."""

    pipeline: dict[str, Any]
    revisions: tuple[dict[str, Any], ...]
    now: datetime
    # Agent name -> its existing revision numbers; an Agent missing here does not exist.
    agents: Mapping[str, frozenset[int]] = field(default_factory=dict)
    # Pipeline name -> names of the Pipelines its steps call (every Pipeline of the
    # namespace that this one reaches); one missing here does not exist.
    pipeline_refs: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    gateways: tuple[ServingGateway, ...] = ()
    gateway_exists: bool | None = None  # None: no gatewayRef
    retained: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    orphans: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class PipelinePlan:
    """What to write: revisions to create, adopt and delete, and the status."""

    create: tuple[dict[str, Any], ...] = ()
    adopt: tuple[str, ...] = ()
    delete: tuple[str, ...] = ()
    status: dict[str, Any] = field(default_factory=dict)
    latest_revision: int | None = None


def pipeline_refs(spec: PipelineSpec) -> tuple[str, ...]:
    """Names of the Pipelines a spec's steps call (aggregators etc. included)."""
    return tuple(
        dict.fromkeys(s.pipeline_ref.name for s in spec.targets() if s.pipeline_ref is not None)
    )


def find_cycle(start: str, refs: Mapping[str, tuple[str, ...]]) -> list[str] | None:
    """The first cycle through pipelineRef reachable from ``start``, as the path that
    closes it (["a", "b", "a"]), or None."""
    path: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> list[str] | None:
        if name in path:
            return [*path[path.index(name) :], name]
        if name in done:
            return None
        path.append(name)
        for callee in refs.get(name, ()):
            found = visit(callee)
            if found is not None:
                return found
        path.pop()
        done.add(name)
        return None

    return visit(start)


def nesting_depth(start: str, refs: Mapping[str, tuple[str, ...]]) -> tuple[int, list[str]]:
    """How many Pipelines deep ``start`` nests (1: no pipelineRef), with the deepest
    path; call only on a graph without cycles."""
    best: tuple[int, list[str]] = (1, [start])
    for callee in refs.get(start, ()):
        depth, path = nesting_depth(callee, refs)
        if depth + 1 > best[0]:
            best = (depth + 1, [start, *path])
    return best


def _step_field(spec: PipelineSpec, step_name: str) -> str:
    for index, step in enumerate(spec.steps):
        if step.name == step_name:
            return f"spec.steps[{index}]"
    return "spec"


def problems_of(inputs: PipelineInputs, spec: PipelineSpec) -> list[tuple[str, str]]:
    """(reason, message) for each thing that keeps the Pipeline from running,
    most fundamental first."""
    name = inputs.pipeline["metadata"]["name"]
    found: list[tuple[str, str]] = []
    refs = {**inputs.pipeline_refs, name: pipeline_refs(spec)}
    cycle = find_cycle(name, refs)
    if cycle is not None:
        found.append(
            (
                "PipelineCycle",
                "pipelineRef cycle " + " -> ".join(cycle) + ": a pipeline cannot call itself",
            )
        )
    else:
        depth, path = nesting_depth(name, refs)
        if depth > MAX_PIPELINE_DEPTH:
            found.append(
                (
                    "PipelineTooDeep",
                    f"pipelines nest {depth} deep (" + " -> ".join(path) + f"), more than "
                    f"the {MAX_PIPELINE_DEPTH} allowed",
                )
            )
    for step in spec.targets():
        where = _step_field(spec, step.name)
        if step.agent_ref is not None:
            agent = step.agent_ref.name
            revisions = inputs.agents.get(agent)
            if revisions is None:
                found.append(
                    (
                        "AgentNotFound",
                        f"step {step.name!r}: Agent {agent!r} ({where}.agentRef) does not exist",
                    )
                )
            elif step.agent_ref.revision is not None:
                if step.agent_ref.revision not in revisions:
                    found.append(
                        (
                            "RevisionNotFound",
                            f"step {step.name!r}: Agent {agent!r} has no revision "
                            f"{step.agent_ref.revision} ({where}.agentRef.revision)",
                        )
                    )
            else:
                for gw in inputs.gateways:
                    if agent not in gw.agents:
                        found.append(
                            (
                                "AgentNotServed",
                                f"step {step.name!r}: Agent {agent!r} is not served by "
                                f"Gateway {gw.name!r}, which serves this pipeline; pin a "
                                f"revision ({where}.agentRef.revision) or have the Gateway "
                                "select the Agent",
                            )
                        )
        elif step.pipeline_ref is not None:
            callee = step.pipeline_ref.name
            if callee not in inputs.pipeline_refs:
                found.append(
                    (
                        "PipelineNotFound",
                        f"step {step.name!r}: Pipeline {callee!r} ({where}.pipelineRef) "
                        "does not exist",
                    )
                )
                continue
            for gw in inputs.gateways:
                if callee not in gw.pipelines:
                    found.append(
                        (
                            "PipelineNotServed",
                            f"step {step.name!r}: Pipeline {callee!r} is not served by "
                            f"Gateway {gw.name!r}, which serves this pipeline",
                        )
                    )
    if inputs.gateway_exists is False and spec.gateway_ref is not None:
        found.append(
            (
                "GatewayNotFound",
                f"Gateway {spec.gateway_ref.name!r} (spec.gatewayRef) does not exist",
            )
        )
    return found


def render_pipeline(inputs: PipelineInputs) -> PipelinePlan:
    """Revisions to create/adopt/prune and the Pipeline's status."""
    pipeline = inputs.pipeline
    spec_model = PipelineSpec.model_validate(pipeline["spec"])
    spec = spec_model.to_wire()
    revs = plan_revisions(
        PIPELINE_REVISIONS,
        pipeline,
        spec,
        inputs.revisions,
        inputs.orphans,
        inputs.retained,
        inputs.now,
    )
    generation = pipeline["metadata"].get("generation")
    problems = problems_of(inputs, spec_model)
    if problems:
        reason = problems[0][0]
        message = "; ".join(m for _, m in problems)[:4000]
        # Like an Agent's: nothing the operator retries fixes these; a user must.
        ready, stalled = False, True
    else:
        reason, message = "RevisionReady", f"revision {revs.latest} is current"
        ready, stalled = True, False
    conditions = ready_conditions(
        (pipeline.get("status") or {}).get("conditions") or [],
        ready=ready,
        reason=reason,
        message=message,
        generation=generation,
        now=inputs.now,
        stalled=stalled,
    )
    status = {
        "observedGeneration": generation,
        "latestRevision": revs.latest,
        "revisions": list(revs.records),
        "conditions": conditions,
    }
    return PipelinePlan(
        create=revs.create,
        adopt=revs.adopt,
        delete=revs.delete,
        status=status,
        latest_revision=revs.latest,
    )
