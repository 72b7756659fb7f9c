"""A pipeline run's span tree, as a local OTLP receiver collects it from a gateway
process: the pipeline span, one child per step, and under each step the agent's own
spans (its invoke_agent span, its model calls, its tools), streamed or not; a
Supervisor's workers nest under the tool call that delegated to them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.agent_gateway import Served, bundled_pipeline, serve, stub_model
from tests.support.objects import agent
from tests.support.otlp import OTLPReceiver, ReceivedSpan, children


def step(name: str, target: str | None = None) -> dict[str, Any]:
    return {"name": name, "agentRef": {"name": target or name}}


PIPELINES = {
    "par": {"pattern": "Parallel", "steps": [step("a"), step("b")]},
    "super": {
        "pattern": "Supervisor",
        "steps": [step("research", "b")],
        "supervisor": {"supervisor": step("boss")},
    },
}


def agents(stub: str, _tools: str) -> list[dict[str, Any]]:
    return [agent(n, model=stub_model(stub, f"{n}-model")) for n in ("a", "b", "boss")]


@pytest.fixture(scope="module")
def otlp() -> Iterator[OTLPReceiver]:
    receiver = OTLPReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, otlp: OTLPReceiver) -> Iterator[Served]:
    yield from serve(
        tmp_path_factory.mktemp("pipeline-traces"),
        agents,
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50"},
        bundle_extra=lambda _: {
            "pipelines": [bundled_pipeline(n, s) for n, s in PIPELINES.items()]
        },
    )


def run(served: Served, name: str, stream: bool) -> str:
    """Invoke; the trace id the gateway answered with."""
    with httpx.stream(
        "POST",
        f"{served.url}/pipelines/{name}/invoke",
        json={"input": "hi", "stream": stream},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        response.read()
        return response.headers["x-kaizen-trace-id"]


def only(spans: list[ReceivedSpan], parent: ReceivedSpan) -> ReceivedSpan:
    (child,) = children(spans, parent)
    return child


@pytest.mark.parametrize("stream", [False, True])
def test_steps_nest_under_the_pipeline_span_and_agents_under_their_step(
    served: Served, otlp: OTLPReceiver, stream: bool
) -> None:
    served.scripts({"a-model": {"always": "A"}, "b-model": {"always": "B"}})
    spans = otlp.wait_for(run(served, "par", stream), lambda found: len(found) >= 7)
    (root,) = [s for s in spans if s.parent_id == "" or s.name.startswith("invoke_pipeline")]
    assert root.name == "invoke_pipeline par"
    assert root.kind == "SERVER"
    assert root.attributes["kaizen.pipeline.name"] == "par"
    steps = sorted(children(spans, root), key=lambda s: s.name)
    assert [s.name for s in steps] == ["step a", "step b"]
    for step_span, name in zip(steps, "ab", strict=True):
        assert step_span.attributes["kaizen.pipeline.step.target"] == name
        assert step_span.attributes["kaizen.pipeline.step.revision"] == 1
        invoked = only(spans, step_span)
        assert invoked.name == f"invoke_agent {name}"
        assert only(spans, invoked).name == f"chat {name}-model"


def test_a_supervisors_workers_nest_under_the_tool_call(served: Served, otlp: OTLPReceiver) -> None:
    served.scripts(
        {
            "boss-model": [
                {"tool_calls": [{"name": "research", "arguments": {"input": "look"}}]},
                {"content": "done: {tools}"},
            ],
            "b-model": {"always": "found"},
        }
    )
    spans = otlp.wait_for(run(served, "super", False), lambda found: len(found) >= 9)
    (root,) = [s for s in spans if s.name == "invoke_pipeline super"]
    boss = only(spans, only(spans, root))
    assert boss.name == "invoke_agent boss"
    below = sorted(s.name for s in children(spans, boss))
    assert below == ["chat boss-model", "chat boss-model", "execute_tool research"]
    tool = next(s for s in children(spans, boss) if s.name == "execute_tool research")
    worker = only(spans, tool)
    assert worker.name == "step research"
    assert only(spans, only(spans, worker)).name == "chat b-model"
