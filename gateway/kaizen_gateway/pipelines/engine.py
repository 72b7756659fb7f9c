"""Runs one bundled Pipeline: resolves each step's target in the bundle snapshot the run
started with, calls agents through the gateway's agent loop (``AgentCall``, the function
behind ``/agents/{name}/invoke``), applies the pattern, and records every step.

A run never reads the live bundle: a hot reload while it runs changes nothing for it
(the snapshot it was given holds the revisions it started with).

Failure rules (docs/pipelines.md):
- Sequential, Router, Supervisor: a failed step fails the run (502, or 504 when it was a
  timeout), naming the step and its target.
- Parallel and Ensemble: failed steps are left out; fewer than ``minSuccessful``
  successes fail the run (502 ``min_successful``).
- Router: no route, no classifier's choice and no ``defaultStep``: 422 ``no_route``.
- Supervisor: past ``maxDelegations`` each worker tool answers an error telling the
  supervisor to answer now.
- The pipeline's ``timeout`` bounds the whole run (504 ``deadline_exceeded``, the steps
  so far in the error body); a step's ``timeout`` bounds that step.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kaizen_api.v1alpha1.bundle import BundledAgent, BundledPipeline
from kaizen_api.v1alpha1.common import parse_duration
from kaizen_api.v1alpha1.pipeline import (
    DEFAULT_INPUT,
    MAX_PIPELINE_DEPTH,
    Combine,
    MergeStrategy,
    Pattern,
    Step,
    SupervisorSpec,
    render_template,
)
from kaizen_gateway import metrics, tracing
from kaizen_gateway.bundle import LoadedBundle
from kaizen_gateway.errors import GatewayError
from kaizen_gateway.loop import Outcome, add_usage
from kaizen_gateway.pipelines import rules
from kaizen_gateway.tools import ToolResult, ToolRunner, failed

log = logging.getLogger("kaizen_gateway.pipelines")

OnText = Callable[[str], None]
AgentCall = Callable[
    [BundledAgent, str, Mapping[str, ToolRunner] | None, OnText | None], Awaitable[Outcome]
]
"""Runs an agent's loop on one user message (with extra server-side tools, for a
Supervisor; streaming its answer's text to ``on_text`` when given) and returns its
outcome; raises GatewayError as the agent routes do."""
Price = Callable[[BundledAgent, Mapping[str, int]], float]
Emit = Callable[[str, dict[str, Any]], None]


@dataclass
class StepRecord:
    """One step as it ran."""

    name: str
    kind: str  # Agent or Pipeline
    target: str
    input: str
    revision: int | None = None
    output: str = ""
    usage: dict[str, int] = field(default_factory=dict)
    cost: float = 0.0
    latency_ms: float = 0.0
    status: str = "running"  # ok, failed, cancelled
    error: str | None = None
    code: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "target": self.target,
            "revision": self.revision,
            "input": self.input,
            "output": self.output,
            "usage": self.usage,
            "cost": round(self.cost, 8),
            "latencyMs": round(self.latency_ms, 3),
            "status": self.status,
        }
        if self.error is not None:
            out["error"] = self.error
            out["code"] = self.code
        return out


@dataclass
class PipelineResult:
    """A finished run."""

    pipeline: str
    revision: int
    output: str
    route: str | None
    steps: list[StepRecord]
    usage: dict[str, int]
    cost: float
    vote: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "pipeline": self.pipeline,
            "revision": self.revision,
            "output": self.output,
            "steps": [s.as_json() for s in self.steps],
            "usage": self.usage,
            "cost": round(self.cost, 8),
        }
        if self.route is not None:
            out["route"] = self.route
        if self.vote is not None:
            out["vote"] = self.vote
        return out


class PipelineError(GatewayError):
    """A run that failed; the caller also gets the steps that ran."""

    def __init__(
        self,
        status: int,
        message: str,
        steps: list[StepRecord],
        *,
        code: str,
        type_: str = "server_error",
    ) -> None:
        super().__init__(status, message, type_=type_, code=code)
        self.steps = steps

    def body(self) -> dict[str, Any]:
        return {**super().body(), "steps": [s.as_json() for s in self.steps]}


@dataclass
class Engine:
    """What every run of one request shares: the bundle snapshot and how to call agents."""

    snapshot: LoadedBundle
    call_agent: AgentCall
    price: Price
    emit: Emit | None = None  # step events of the top-level run
    on_text: OnText | None = None  # the answer's text of the top-level run's final step

    async def run(self, pipeline: BundledPipeline, text: str) -> PipelineResult:
        """Run ``pipeline`` on ``text`` (the top-level run: it emits step events)."""
        return await PipelineRun(self, pipeline, text, depth=1, emit=self.emit).run()


class PipelineRun:
    """One run of one pipeline (a nested pipeline step is a run of its own)."""

    def __init__(
        self,
        engine: Engine,
        pipeline: BundledPipeline,
        text: str,
        *,
        depth: int,
        emit: Emit | None,
        delegation_depth: int = 0,
    ) -> None:
        self.engine, self.pipeline, self.text = engine, pipeline, text
        self.depth, self.emit, self.delegation_depth = depth, emit, delegation_depth
        self.steps: list[StepRecord] = []
        self.usage: dict[str, int] = {}
        self.cost = 0.0
        self.delegations = 0
        self.vote: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.pipeline.name

    async def run(self) -> PipelineResult:
        timeout = parse_duration(self.pipeline.spec.timeout)
        try:
            async with asyncio.timeout(timeout):
                output, route = await self._pattern()
        except TimeoutError as exc:
            raise PipelineError(
                504,
                f"pipeline {self.name!r} did not finish within its timeout of {timeout:g}s "
                "(spec.timeout)",
                self.steps,
                code="deadline_exceeded",
            ) from exc
        return PipelineResult(
            self.name,
            self.pipeline.revision,
            output,
            route,
            self.steps,
            self.usage,
            self.cost,
            self.vote,
        )

    async def _pattern(self) -> tuple[str, str | None]:
        pattern = self.pipeline.spec.pattern
        if pattern == Pattern.SEQUENTIAL:
            return await self._sequential(), None
        if pattern == Pattern.PARALLEL:
            return await self._parallel(), None
        if pattern == Pattern.ROUTER:
            return await self._router()
        if pattern == Pattern.SUPERVISOR:
            return await self._supervisor(), None
        return await self._ensemble(), None

    # ---------------------------------------------------------------- patterns

    async def _sequential(self) -> str:
        previous, outputs = self.text, dict[str, str]()
        for index, step in enumerate(self.pipeline.spec.steps):
            template = step.input or (DEFAULT_INPUT if index == 0 else "{{previous}}")
            text = render_template(template, input=self.text, previous=previous, steps=outputs)
            last = index == len(self.pipeline.spec.steps) - 1
            record = await self.step(step, text, final=last)
            if not record.ok:
                raise self.failed(record)
            previous = outputs[step.name] = record.output
        return previous

    async def _fan_out(self, min_successful: int) -> list[StepRecord]:
        """Every step at once on its input; the successful ones, in step order."""
        steps = self.pipeline.spec.steps
        records = await asyncio.gather(
            *(
                self.step(s, render_template(s.input or DEFAULT_INPUT, input=self.text))
                for s in steps
            )
        )
        ok = [r for r in records if r.ok]
        if len(ok) < min_successful:
            failures = "; ".join(f"{r.name}: {r.error}" for r in records if not r.ok)
            raise PipelineError(
                502,
                f"pipeline {self.name!r}: {len(ok)} of {len(steps)} steps succeeded and "
                f"minSuccessful is {min_successful} ({failures})",
                self.steps,
                code="min_successful",
            )
        return ok

    async def _aggregate(self, aggregator: Step, ok: list[StepRecord]) -> str:
        text = render_template(
            aggregator.input or "{{outputs}}",
            input=self.text,
            steps={r.name: r.output for r in ok},
            outputs=rules.labelled([(r.name, r.output) for r in ok]),
        )
        record = await self.step(aggregator, text, final=True)
        if not record.ok:
            raise self.failed(record)
        return record.output

    async def _parallel(self) -> str:
        spec = self.pipeline.spec
        parallel = spec.parallel
        ok = await self._fan_out(
            parallel.min_successful if parallel and parallel.min_successful else len(spec.steps)
        )
        if parallel and parallel.merge == MergeStrategy.AGGREGATE and parallel.aggregator:
            return await self._aggregate(parallel.aggregator, ok)
        return rules.labelled([(r.name, r.output) for r in ok])

    async def _ensemble(self) -> str:
        spec = self.pipeline.spec
        ensemble = spec.ensemble
        need = (
            ensemble.min_successful
            if ensemble and ensemble.min_successful
            else len(spec.steps) // 2 + 1
        )
        ok = await self._fan_out(need)
        if ensemble and ensemble.combine == Combine.AGGREGATE and ensemble.aggregator:
            return await self._aggregate(ensemble.aggregator, ok)
        won = rules.majority([(r.name, r.output) for r in ok])
        assert won is not None  # noqa: S101 - _fan_out returned at least one answer
        answer, step, votes = won
        self.vote = {"answer": rules.normalise(answer), "step": step, "votes": votes, "of": len(ok)}
        return answer

    async def _router(self) -> tuple[str, str | None]:
        router = self.pipeline.spec.router
        assert router is not None  # noqa: S101 - the spec's validation requires it
        route = rules.first_route(router.routes, self.text)
        answer = None
        if route is None and router.classifier is not None:
            classifier = router.classifier
            record = await self.step(
                classifier, render_template(classifier.input or DEFAULT_INPUT, input=self.text)
            )
            if not record.ok:
                raise self.failed(record)
            answer = record.output
            route = rules.classified_route(router.routes, answer)
        chosen = route.step if route else router.default_step
        if chosen is None:
            said = f"; the classifier answered {answer[:200]!r}" if answer is not None else ""
            raise PipelineError(
                422,
                f"pipeline {self.name!r}: no route matches the input{said}, and "
                "router.defaultStep is unset",
                self.steps,
                code="no_route",
                type_="invalid_request_error",
            )
        step = next(s for s in self.pipeline.spec.steps if s.name == chosen)
        record = await self.step(
            step, render_template(step.input or DEFAULT_INPUT, input=self.text), final=True
        )
        if not record.ok:
            raise self.failed(record)
        return record.output, route.name if route else None

    async def _supervisor(self) -> str:
        spec = self.pipeline.spec.supervisor
        assert spec is not None  # noqa: S101 - the spec's validation requires it
        workers: dict[str, ToolRunner] = {
            s.name: WorkerTool(self, s, spec) for s in self.pipeline.spec.steps
        }
        lead = spec.supervisor
        record = await self.step(
            lead,
            render_template(lead.input or DEFAULT_INPUT, input=self.text),
            tools=workers,
            final=True,
        )
        if not record.ok:
            raise self.failed(record)
        return record.output

    # ---------------------------------------------------------------- steps

    def failed(self, record: StepRecord) -> PipelineError:
        """The run's error for a step that failed."""
        timeout = record.code == "deadline_exceeded"
        return PipelineError(
            504 if timeout else 502,
            f"pipeline {self.name!r}: step {record.name!r} ({record.kind} {record.target!r}) "
            f"failed: {record.error}",
            self.steps,
            code=record.code or "step_failed",
        )

    async def step(
        self,
        step: Step,
        text: str,
        *,
        tools: Mapping[str, ToolRunner] | None = None,
        delegated: bool = False,
        final: bool = False,
    ) -> StepRecord:
        """Run one step; a failure is recorded on the step, never raised. ``delegated``:
        a Supervisor's worker (a pipeline there nests one delegation level deeper);
        ``final``: its output is the run's (streamed as it comes, at the top level)."""
        record = StepRecord(step.name, step.target_kind, step.target_name, text)
        self.steps.append(record)
        if self.emit:
            self.emit(
                "step.started",
                {"name": step.name, "kind": record.kind, "target": record.target, "input": text},
            )
        started = time.perf_counter()
        timeout = parse_duration(step.timeout) if step.timeout else None
        try:
            with tracing.step_span(self.name, step.name, record.kind, record.target) as span:
                try:
                    async with asyncio.timeout(timeout):
                        on_text = self.engine.on_text if final and self.emit else None
                        await self._call(step, record, tools, span, delegated, on_text)
                except TimeoutError:
                    span.fail("timeout", "step timeout")
                    record.status, record.code = "failed", "deadline_exceeded"
                    record.error = (
                        f"step {step.name!r} did not finish within its timeout of "
                        f"{timeout:g}s (timeout)"
                    )
                except GatewayError as exc:
                    span.fail(str(exc.status), exc.message)
                    record.status, record.code = "failed", exc.code or "step_failed"
                    record.error = exc.message
                except Exception as exc:  # a bug must fail the step, not the gateway
                    log.exception("pipeline %s step %s raised", self.name, step.name)
                    span.fail(exc.__class__.__name__)
                    record.status, record.code = "failed", "internal_error"
                    record.error = f"internal error ({exc.__class__.__name__})"
        except asyncio.CancelledError:
            record.status, record.error, record.code = "cancelled", "cancelled", "cancelled"
            raise
        finally:
            record.latency_ms = (time.perf_counter() - started) * 1000
            add_usage(self.usage, record.usage)
            self.cost += record.cost
            metrics.PIPELINE_STEPS.labels(self.name, step.name, record.status).inc()
            metrics.PIPELINE_STEP_LATENCY.labels(self.name, step.name).observe(
                record.latency_ms / 1000
            )
            if self.emit:
                self.emit("step.finished", record.as_json())
        return record

    async def _call(
        self,
        step: Step,
        record: StepRecord,
        tools: Mapping[str, ToolRunner] | None,
        span: tracing.SpanHandle,
        delegated: bool,
        on_text: OnText | None,
    ) -> None:
        snapshot = self.engine.snapshot
        if step.agent_ref is not None:
            pinned = step.agent_ref.revision
            agent = snapshot.agent_at(step.agent_ref.name, pinned)
            if agent is None:
                at = f" at revision {pinned}" if pinned else ""
                raise GatewayError(
                    502,
                    f"step {step.name!r} calls agent {step.agent_ref.name!r}{at}, which this "
                    "gateway's bundle does not have",
                    type_="server_error",
                    code="step_target_missing",
                )
            record.revision = agent.revision
            span.set("kaizen.pipeline.step.revision", agent.revision)
            with tracing.agent_span(agent.name, agent.revision):
                outcome = await self.engine.call_agent(agent, record.input, tools, on_text)
            record.usage = dict(outcome.usage)
            record.cost = self.engine.price(agent, outcome.usage)
            if outcome.message.get("tool_calls"):
                raise GatewayError(
                    502,
                    f"agent {agent.name!r} asked for function tools the caller runs; a "
                    "pipeline step has no caller to run them",
                    type_="server_error",
                    code="caller_tools_in_step",
                )
            record.output = str(outcome.message.get("content") or "")
        else:
            assert step.pipeline_ref is not None  # noqa: S101 - a step has one target
            await self._nested(step.pipeline_ref.name, record, span, delegated)
        record.status = "ok"

    async def _nested(
        self, name: str, record: StepRecord, span: tracing.SpanHandle, delegated: bool
    ) -> None:
        pipeline = self.engine.snapshot.pipelines.get(name)
        if pipeline is None:
            raise GatewayError(
                502,
                f"step {record.name!r} calls pipeline {name!r}, which this gateway does not serve",
                type_="server_error",
                code="step_target_missing",
            )
        if self.depth >= MAX_PIPELINE_DEPTH:
            raise GatewayError(
                502,
                f"step {record.name!r} calls pipeline {name!r} deeper than "
                f"{MAX_PIPELINE_DEPTH} nested pipelines",
                type_="server_error",
                code="too_deep",
            )
        record.revision = pipeline.revision
        span.set("kaizen.pipeline.step.revision", pipeline.revision)
        nested = PipelineRun(
            self.engine,
            pipeline,
            record.input,
            depth=self.depth + 1,
            emit=None,
            delegation_depth=self.delegation_depth + (1 if delegated else 0),
        )
        try:
            result = await nested.run()
        finally:
            record.usage, record.cost = nested.usage, nested.cost
        record.output = result.output


class WorkerTool:
    """A Supervisor's step as a tool its model calls: one string argument, ``input``."""

    def __init__(self, run: PipelineRun, step: Step, spec: SupervisorSpec) -> None:
        self.run, self.step, self.bounds = run, step, spec
        self.name = step.name
        description = step.description or f"Ask the {step.target_kind} {step.target_name!r}."
        self._spec = {
            "type": "function",
            "function": {
                "name": step.name,
                "description": description,
                "parameters": {
                    "type": "object",
                    "properties": {
                        "input": {"type": "string", "description": "The message for this step."}
                    },
                    "required": ["input"],
                },
            },
        }

    def spec(self) -> dict[str, Any]:
        return self._spec

    async def call(self, arguments: dict[str, Any], *, timeout: float) -> ToolResult:
        text = arguments.get("input")
        if not isinstance(text, str):
            return failed("bad_arguments", "give the step its message as the string `input`")
        run = self.run
        if run.delegations >= self.bounds.max_delegations:
            return failed(
                "max_delegations",
                f"the limit of {self.bounds.max_delegations} delegations (maxDelegations) is "
                "reached: answer now with what you have",
            )
        if self.step.pipeline_ref is not None and run.delegation_depth >= self.bounds.max_depth:
            return failed(
                "max_depth",
                f"delegating to a pipeline here would nest deeper than maxDepth "
                f"{self.bounds.max_depth}: answer with what you have",
            )
        run.delegations += 1
        record = await run.step(self.step, text, delegated=True)
        if not record.ok:
            return failed(record.code or "step_failed", record.error or "the step failed")
        return ToolResult(content=record.output, ok=True)
