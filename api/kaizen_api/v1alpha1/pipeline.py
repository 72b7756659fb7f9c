"""The Pipeline kind: multi-agent orchestration (Sequential, Parallel, Router, Supervisor,
Ensemble) over steps that call Agents or other Pipelines.

Step inputs are small templates, never evaluated code: ``{{input}}`` (the pipeline's
input), ``{{previous}}`` (the output of the step before, Sequential only),
``{{steps.NAME}}`` (the output of an earlier step) and ``{{outputs}}`` (every finished
step's output, labelled with its name; aggregators only). Anything else between double
braces is refused when the Pipeline is applied.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from kaizen_api.v1alpha1.agent import TOOL_NAME_PATTERN, Lifecycle, RevisionRecord
from kaizen_api.v1alpha1.common import (
    Duration,
    KaizenModel,
    LocalObjectReference,
    ObjectMeta,
    ResourceName,
    ResourceStatus,
    cel,
    k8s_extra,
    parse_duration,
)

MAX_STEPS = 32
MAX_PIPELINE_DEPTH = 4
"""How deep Pipelines may nest (a step calling a Pipeline whose step calls a Pipeline...)."""

TEMPLATE_FIELD = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_STEP_REF = re.compile(r"^steps\.([a-zA-Z0-9_-]{1,64})$")
DEFAULT_SEQUENTIAL_INPUT = "{{previous}}"
DEFAULT_INPUT = "{{input}}"


class TemplateError(ValueError):
    """A step input template names something that does not exist."""


def template_references(template: str) -> list[str]:
    """The names a template uses, in order: ``input``, ``previous``, ``outputs`` or
    ``steps.NAME``. Raises :class:`TemplateError` on anything else."""
    found: list[str] = []
    for match in TEMPLATE_FIELD.finditer(template):
        ref = match.group(1)
        if ref not in ("input", "previous", "outputs") and not _STEP_REF.match(ref):
            raise TemplateError(
                f"unknown template field {{{{{ref}}}}}: use {{{{input}}}}, {{{{previous}}}}, "
                "{{outputs}} or {{steps.NAME}}"
            )
        found.append(ref)
    return found


def render_template(
    template: str,
    *,
    input: str,
    previous: str = "",
    steps: Mapping[str, str] | None = None,
    outputs: str = "",
) -> str:
    """Fill a step input template (pure; values are inserted verbatim, never re-parsed)."""
    step_outputs = steps or {}

    def value(match: re.Match[str]) -> str:
        ref = match.group(1)
        if ref == "input":
            return input
        if ref == "previous":
            return previous
        if ref == "outputs":
            return outputs
        step = _STEP_REF.match(ref)
        if step is not None:
            return step_outputs.get(step.group(1), "")
        raise TemplateError(f"unknown template field {{{{{ref}}}}}")

    return TEMPLATE_FIELD.sub(value, template)


class Pattern(StrEnum):
    """How a Pipeline combines its steps."""

    SEQUENTIAL = "Sequential"
    PARALLEL = "Parallel"
    ROUTER = "Router"
    SUPERVISOR = "Supervisor"
    ENSEMBLE = "Ensemble"


class AgentStepReference(KaizenModel):
    """An Agent a step calls, at the revision its Gateway serves or at a pinned one."""

    name: ResourceName = Field(description="Name of the Agent.")
    revision: int | None = Field(
        default=None,
        ge=1,
        description="Pinned revision. Unset: the revision the Gateway serves the agent at.",
    )


class Step(KaizenModel):
    """One call of an Agent or a Pipeline."""

    model_config = ConfigDict(
        json_schema_extra=k8s_extra(
            validations=[
                cel(
                    "has(self.agentRef) != has(self.pipelineRef)",
                    "a step calls exactly one of agentRef or pipelineRef",
                ),
                cel(
                    "!has(self.input) || self.input.findAll('[{][{][^{}]*[}][}]').all(f, "
                    "f.matches('^[{][{]\\\\s*(input|previous|outputs|steps[.][a-zA-Z0-9_-]{1,64})"
                    "\\\\s*[}][}]$'))",
                    "input templates may only use {{input}}, {{previous}}, {{outputs}} and "
                    "{{steps.NAME}}",
                    fieldPath=".input",
                ),
            ]
        )
    )

    name: str = Field(
        pattern=TOOL_NAME_PATTERN,
        max_length=64,
        description="Step name: used in templates ({{steps.NAME}}), results and metrics, "
        "and as the tool name a Supervisor sees.",
    )
    agent_ref: AgentStepReference | None = Field(default=None, description="Agent to call.")
    pipeline_ref: LocalObjectReference | None = Field(
        default=None, description="Pipeline to call (served by the same Gateway)."
    )
    input: str | None = Field(
        default=None,
        max_length=2048,
        description="Template of the message sent to the step. Unset: {{previous}} in a "
        "Sequential pipeline (the first step gets {{input}}), {{input}} otherwise.",
    )
    description: str = Field(
        default="",
        max_length=4096,
        description="What the step does; a Supervisor's model sees it as the tool description.",
    )
    timeout: Duration | None = Field(
        default=None,
        description="Deadline of this step, e.g. 30s. Unset: the pipeline's timeout.",
    )

    @model_validator(mode="after")
    def _one_target(self) -> Step:
        if (self.agent_ref is None) == (self.pipeline_ref is None):
            raise ValueError("a step calls exactly one of agentRef or pipelineRef")
        if self.input is not None:
            template_references(self.input)
        return self

    @property
    def target_kind(self) -> Literal["Agent", "Pipeline"]:
        return "Agent" if self.agent_ref is not None else "Pipeline"

    @property
    def target_name(self) -> str:
        if self.agent_ref is not None:
            return self.agent_ref.name
        if self.pipeline_ref is not None:
            return self.pipeline_ref.name
        raise ValueError("a step calls exactly one of agentRef or pipelineRef")


class MergeStrategy(StrEnum):
    """How a Parallel pipeline merges its steps' outputs."""

    CONCATENATE = "Concatenate"
    AGGREGATE = "Aggregate"


class ParallelSpec(KaizenModel):
    """How a Parallel pipeline fans out and merges."""

    model_config = ConfigDict(
        json_schema_extra=k8s_extra(
            validations=[
                cel(
                    "self.merge != 'Aggregate' || has(self.aggregator)",
                    "merge Aggregate needs an aggregator step",
                    fieldPath=".aggregator",
                )
            ]
        )
    )

    merge: MergeStrategy = Field(
        default=MergeStrategy.CONCATENATE,
        description="Concatenate: the outputs, each under a '## <step>' heading, in step "
        "order. Aggregate: the aggregator step's answer (its input defaults to {{outputs}}).",
    )
    aggregator: Step | None = Field(default=None, description="Step that merges the outputs.")
    min_successful: int | None = Field(
        default=None,
        ge=1,
        le=MAX_STEPS,
        description="Steps that must succeed for the pipeline to succeed; failed steps are "
        "left out of the merge. Unset: all of them.",
    )

    @model_validator(mode="after")
    def _aggregator_when_aggregating(self) -> ParallelSpec:
        if self.merge == MergeStrategy.AGGREGATE and self.aggregator is None:
            raise ValueError("merge Aggregate needs an aggregator step")
        return self


class RouteMatch(KaizenModel):
    """A condition on the pipeline's input; every field set must hold."""

    model_config = ConfigDict(
        json_schema_extra=k8s_extra(
            validations=[
                cel(
                    "has(self.keywords) || has(self.regex) || has(self.jsonPath)",
                    "a match needs keywords, regex or jsonPath",
                ),
                cel(
                    "!has(self.equals) || has(self.jsonPath)",
                    "equals compares the value at jsonPath: set jsonPath too",
                    fieldPath=".equals",
                ),
            ]
        )
    )

    keywords: list[Annotated[str, Field(min_length=1, max_length=256)]] | None = Field(
        default=None,
        max_length=64,
        description="Holds when the input contains any of these words (case-insensitive, "
        "whole words).",
    )
    regex: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="Holds when this regular expression (Python syntax) matches the input.",
    )
    json_path: str | None = Field(
        default=None,
        max_length=256,
        pattern=r"^\$(\.[a-zA-Z0-9_-]+|\[[0-9]+\])*$",
        description="Path into the input parsed as JSON, e.g. $.ticket.priority or "
        "$.items[0]. Holds when the value exists (and equals `equals` when set); never "
        "holds on an input that is not JSON.",
    )
    equals: str | None = Field(
        default=None,
        max_length=1024,
        description="Value the jsonPath value must equal (compared as text; true/false/"
        "numbers as JSON writes them).",
    )

    @field_validator("regex")
    @classmethod
    def _regex_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"regex does not compile: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _something_to_match(self) -> RouteMatch:
        if self.keywords is None and self.regex is None and self.json_path is None:
            raise ValueError("a match needs keywords, regex or jsonPath")
        if self.equals is not None and self.json_path is None:
            raise ValueError("equals compares the value at jsonPath: set jsonPath too")
        return self


class Route(KaizenModel):
    """One route of a Router: where inputs that match go."""

    name: str = Field(
        pattern=TOOL_NAME_PATTERN,
        max_length=64,
        description="Route name, reported as the chosen route; a classifier answers with it.",
    )
    step: str = Field(
        pattern=TOOL_NAME_PATTERN, max_length=64, description="Name of the step it runs."
    )
    match: RouteMatch | None = Field(
        default=None,
        description="Condition on the input. Routes are tried in order; the first whose "
        "match holds is chosen. Without a match, only a classifier can choose the route.",
    )


class RouterSpec(KaizenModel):
    """How a Router pipeline picks one step."""

    routes: list[Route] = Field(
        min_length=1,
        max_length=MAX_STEPS,
        description="Routes, keyed by name, tried in order.",
        json_schema_extra=k8s_extra(list_type="map", list_map_keys=["name"]),
    )
    classifier: Step | None = Field(
        default=None,
        description="Step asked when no route's match holds; its answer (trimmed, "
        "case-insensitive) names the route. Its input defaults to {{input}}.",
    )
    default_step: str | None = Field(
        default=None,
        pattern=TOOL_NAME_PATTERN,
        max_length=64,
        description="Step run when no route is chosen. Unset: such an input fails with no_route.",
    )


class SupervisorSpec(KaizenModel):
    """How a Supervisor pipeline delegates."""

    supervisor: Step = Field(
        description="The supervising step (usually an Agent): its model is given every "
        "step of the pipeline as a tool and answers when it is done."
    )
    max_delegations: int = Field(
        default=8,
        ge=1,
        le=64,
        description="Worker calls per run; past it the worker tools answer with an error "
        "telling the supervisor to answer now.",
    )
    max_depth: int = Field(
        default=2,
        ge=1,
        le=MAX_PIPELINE_DEPTH,
        description="How deep delegation may nest through workers that are Pipelines.",
    )


class Combine(StrEnum):
    """How an Ensemble combines its members' answers."""

    MAJORITY_VOTE = "MajorityVote"
    AGGREGATE = "Aggregate"


class EnsembleSpec(KaizenModel):
    """How an Ensemble combines its steps' answers."""

    model_config = ConfigDict(
        json_schema_extra=k8s_extra(
            validations=[
                cel(
                    "self.combine != 'Aggregate' || has(self.aggregator)",
                    "combine Aggregate needs an aggregator step",
                    fieldPath=".aggregator",
                )
            ]
        )
    )

    combine: Combine = Field(
        default=Combine.MAJORITY_VOTE,
        description="MajorityVote: the answer most members give after normalising "
        "(lowercase, whitespace collapsed, surrounding punctuation dropped); a tie goes to "
        "the earliest step among the tied answers. Aggregate: the aggregator's answer.",
    )
    aggregator: Step | None = Field(default=None, description="Step that combines answers.")
    min_successful: int | None = Field(
        default=None,
        ge=1,
        le=MAX_STEPS,
        description="Members that must answer; failed members do not vote. Unset: a "
        "majority of the steps.",
    )

    @model_validator(mode="after")
    def _aggregator_when_aggregating(self) -> EnsembleSpec:
        if self.combine == Combine.AGGREGATE and self.aggregator is None:
            raise ValueError("combine Aggregate needs an aggregator step")
        return self


_PATTERN_BLOCKS = {
    Pattern.PARALLEL: "parallel",
    Pattern.ROUTER: "router",
    Pattern.SUPERVISOR: "supervisor",
    Pattern.ENSEMBLE: "ensemble",
}


class PipelineSpec(KaizenModel):
    """Desired state of a Pipeline."""

    model_config = ConfigDict(
        json_schema_extra=k8s_extra(
            validations=[
                cel(
                    "self.pattern != 'Router' || has(self.router)",
                    "pattern Router needs the router block",
                    fieldPath=".router",
                ),
                cel(
                    "self.pattern != 'Supervisor' || has(self.supervisor)",
                    "pattern Supervisor needs the supervisor block",
                    fieldPath=".supervisor",
                ),
                cel(
                    "(self.pattern == 'Parallel' || !has(self.parallel)) && "
                    "(self.pattern == 'Router' || !has(self.router)) && "
                    "(self.pattern == 'Supervisor' || !has(self.supervisor)) && "
                    "(self.pattern == 'Ensemble' || !has(self.ensemble))",
                    "set only the block that matches the pattern",
                ),
                cel(
                    "!has(self.router) || self.router.routes.all(r, "
                    "self.steps.exists(s, s.name == r.step))",
                    "every route names a step of this pipeline",
                    fieldPath=".router.routes",
                ),
                cel(
                    "!has(self.router) || !has(self.router.defaultStep) || "
                    "self.steps.exists(s, s.name == self.router.defaultStep)",
                    "router.defaultStep names a step of this pipeline",
                    fieldPath=".router.defaultStep",
                ),
                cel(
                    "!has(self.parallel) || !has(self.parallel.minSuccessful) || "
                    "self.parallel.minSuccessful <= size(self.steps)",
                    "parallel.minSuccessful cannot exceed the number of steps",
                    fieldPath=".parallel.minSuccessful",
                ),
                cel(
                    "!has(self.ensemble) || !has(self.ensemble.minSuccessful) || "
                    "self.ensemble.minSuccessful <= size(self.steps)",
                    "ensemble.minSuccessful cannot exceed the number of steps",
                    fieldPath=".ensemble.minSuccessful",
                ),
                cel(
                    "self.pattern != 'Ensemble' || size(self.steps) >= 2",
                    "an Ensemble needs at least 2 steps",
                    fieldPath=".steps",
                ),
                cel(
                    "!has(self.timeout) || (duration(self.timeout) >= duration('1s') "
                    "&& duration(self.timeout) <= duration('1h'))",
                    "timeout must be between 1s and 60m",
                    fieldPath=".timeout",
                ),
            ]
        )
    )

    pattern: Pattern = Field(
        description="Sequential (steps in order, each fed by templates), Parallel (steps "
        "at once on the same input, merged), Router (one step chosen per input), "
        "Supervisor (a supervising agent calls the steps as tools), Ensemble (every step "
        "answers; combined by vote or aggregator)."
    )
    steps: list[Step] = Field(
        min_length=1,
        max_length=MAX_STEPS,
        description="Steps, keyed by name.",
        json_schema_extra=k8s_extra(list_type="map", list_map_keys=["name"]),
    )
    parallel: ParallelSpec | None = Field(
        default=None, description="Parallel settings (defaults apply when unset)."
    )
    router: RouterSpec | None = Field(default=None, description="Router settings.")
    supervisor: SupervisorSpec | None = Field(default=None, description="Supervisor settings.")
    ensemble: EnsembleSpec | None = Field(
        default=None, description="Ensemble settings (defaults apply when unset)."
    )
    timeout: Duration = Field(
        default="300s",
        description="Deadline of a whole run, e.g. 300s; past it the caller gets a 504 "
        "deadline_exceeded error with the steps that finished.",
    )
    gateway_ref: LocalObjectReference | None = Field(
        default=None, description="The dev Gateway that serves this pipeline's latest revision."
    )
    lifecycle: Lifecycle = Field(
        default=Lifecycle.ACTIVE,
        description="Draft (not served), Active, or Archived (no longer served, kept for audit).",
    )
    revision_history_limit: int = Field(
        default=10, ge=1, le=100, description="How many past revisions to keep."
    )

    @model_validator(mode="after")
    def _consistent(self) -> PipelineSpec:
        for pattern, block in _PATTERN_BLOCKS.items():
            if getattr(self, block) is not None and self.pattern != pattern:
                raise ValueError("set only the block that matches the pattern")
        if self.pattern == Pattern.ROUTER and self.router is None:
            raise ValueError("pattern Router needs the router block")
        if self.pattern == Pattern.SUPERVISOR and self.supervisor is None:
            raise ValueError("pattern Supervisor needs the supervisor block")
        if self.pattern == Pattern.ENSEMBLE and len(self.steps) < 2:
            raise ValueError("an Ensemble needs at least 2 steps")
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            raise ValueError("step names must be unique")
        if self.router is not None:
            for route in self.router.routes:
                if route.step not in names:
                    raise ValueError(f"route {route.name!r} names no step: {route.step!r}")
            if self.router.default_step is not None and self.router.default_step not in names:
                raise ValueError(f"router.defaultStep names no step: {self.router.default_step!r}")
        for fan_out in (self.parallel, self.ensemble):
            if fan_out is not None and (fan_out.min_successful or 0) > len(names):
                raise ValueError("minSuccessful cannot exceed the number of steps")
        if not 1 <= parse_duration(self.timeout) <= 3600:
            raise ValueError("timeout must be between 1s and 60m")
        self._check_template_order(names)
        return self

    def _check_template_order(self, names: list[str]) -> None:
        """{{steps.X}} may only name an earlier step (Sequential) and {{previous}} only
        appears in Sequential pipelines; aggregators may name any step."""
        for index, step in enumerate(self.steps):
            if step.input is None:
                continue
            for ref in template_references(step.input):
                if ref == "previous" and self.pattern != Pattern.SEQUENTIAL:
                    raise ValueError(
                        f"step {step.name!r}: {{{{previous}}}} only exists in Sequential pipelines"
                    )
                if ref == "outputs":
                    raise ValueError(
                        f"step {step.name!r}: {{{{outputs}}}} only exists in aggregators"
                    )
                if ref.startswith("steps."):
                    target = ref.removeprefix("steps.")
                    if self.pattern != Pattern.SEQUENTIAL or target not in names[:index]:
                        raise ValueError(
                            f"step {step.name!r}: {{{{{ref}}}}} must name an earlier step of "
                            "a Sequential pipeline"
                        )

    def targets(self) -> list[Step]:
        """Every step the pipeline may call, aggregator/classifier/supervisor included."""
        extra = [
            self.parallel.aggregator if self.parallel else None,
            self.ensemble.aggregator if self.ensemble else None,
            self.router.classifier if self.router else None,
            self.supervisor.supervisor if self.supervisor else None,
        ]
        return [*self.steps, *(s for s in extra if s is not None)]


class PipelineStatus(ResourceStatus):
    """Observed state of a Pipeline."""

    latest_revision: int | None = Field(
        default=None, ge=1, description="Number of the newest revision."
    )
    revisions: list[RevisionRecord] | None = Field(
        default=None,
        max_length=200,
        description=(
            "Kept revisions, newest last: the newest revisionHistoryLimit ones, plus older "
            "ones still served by a Gateway or targeted by a Promotion (see retainedBy)."
        ),
        json_schema_extra=k8s_extra(list_type="map", list_map_keys=["revision"]),
    )


class Pipeline(KaizenModel):
    """Multi-agent orchestration: steps that call Agents or Pipelines in a pattern,
    versioned as immutable revisions and served by Gateways like Agents."""

    api_version: Literal["kaizen.studio/v1alpha1"] = Field(
        default="kaizen.studio/v1alpha1", description="kaizen.studio/v1alpha1"
    )
    kind: Literal["Pipeline"] = Field(default="Pipeline", description="Pipeline")
    metadata: ObjectMeta = Field(default_factory=dict, description="Standard object metadata.")
    spec: PipelineSpec = Field(description="Desired state.")
    status: PipelineStatus | None = Field(default=None, description="Observed state.")
