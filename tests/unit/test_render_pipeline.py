"""render_pipeline: revisions through the shared core, and conditions that name the
step, agent, gateway or cycle that keeps a Pipeline from running."""

from __future__ import annotations

from datetime import UTC, datetime

from kaizen_operator.agent.render import AgentInputs, render_agent
from kaizen_operator.conditions import get_condition
from kaizen_operator.pipeline.render import (
    PipelineInputs,
    ServingGateway,
    find_cycle,
    render_pipeline,
)
from tests.support.objects import agent, pipeline

NOW = datetime(2026, 5, 1, tzinfo=UTC)


def plan_for(body, revisions=(), **kw):
    kw.setdefault("agents", {"hello": frozenset({1}), "other": frozenset({1, 2})})
    kw.setdefault("pipeline_refs", {})
    return render_pipeline(PipelineInputs(body, tuple(revisions), NOW, **kw))


def ready(plan):
    return get_condition(plan.status["conditions"], "Ready")


def test_first_revision_is_content_hashed_and_named_apart_from_agent_revisions():
    plan = plan_for(pipeline())
    (rev,) = plan.create
    assert rev["metadata"]["name"] == "flow-pr1"
    assert rev["metadata"]["labels"]["kaizen.studio/pipeline"] == "flow"
    assert rev["data"]["spec"]["steps"][0]["agentRef"] == {"name": "hello"}
    assert plan.status["latestRevision"] == 1
    assert ready(plan)["status"] == "True"


def test_serving_fields_make_no_revision_but_pinning_another_agent_revision_does():
    first = plan_for(pipeline()).create
    same = plan_for(pipeline(lifecycle="Draft", revisionHistoryLimit=3), first)
    assert same.create == ()
    pinned = plan_for(
        pipeline("flow", {"name": "one", "agentRef": {"name": "other", "revision": 2}}), first
    )
    assert [r["revision"] for r in pinned.create] == [2]


def test_history_is_pruned_to_the_limit_except_what_a_gateway_serves():
    revs = []
    for prompt in ("a", "b", "c"):
        body = pipeline("flow", {"name": prompt, "agentRef": {"name": "hello"}})
        revs += plan_for(body, revs).create
    body = pipeline("flow", {"name": "d", "agentRef": {"name": "hello"}}, revisionHistoryLimit=2)
    plan = plan_for(body, revs, retained={1: ("served by Gateway 'prod'",)})
    assert plan.delete == ("flow-pr2",)
    kept = {r["revision"]: r.get("retainedBy") for r in plan.status["revisions"]}
    assert kept == {1: ["served by Gateway 'prod'"], 3: None, 4: None}


def test_agent_revisions_are_unchanged_by_the_shared_core():
    """Agent revisions keep their name, labels and content (the core is shared)."""
    plan = render_agent(AgentInputs(agent(), (), None, None, NOW))
    (rev,) = plan.create
    assert rev["metadata"]["name"] == "hello-r1"
    assert set(rev["data"]["spec"]) == {"model", "systemPrompt"}


def test_missing_agent_names_the_step_and_field():
    body = pipeline("flow", {"name": "write", "agentRef": {"name": "ghost"}})
    cond = ready(plan_for(body))
    assert (cond["status"], cond["reason"]) == ("False", "AgentNotFound")
    assert "step 'write': Agent 'ghost' (spec.steps[0].agentRef) does not exist" in cond["message"]
    assert get_condition(plan_for(body).status["conditions"], "Stalled")["status"] == "True"


def test_unpinned_agent_not_served_by_the_serving_gateway_names_step_agent_and_gateway():
    gw = ServingGateway("staging", agents=frozenset({"hello"}), pipelines=frozenset({"flow"}))
    body = pipeline(
        "flow",
        {"name": "a", "agentRef": {"name": "hello"}},
        {"name": "b", "agentRef": {"name": "other"}},
    )
    cond = ready(plan_for(body, gateways=(gw,)))
    assert cond["reason"] == "AgentNotServed"
    assert "step 'b': Agent 'other' is not served by Gateway 'staging'" in cond["message"]
    assert "step 'a'" not in cond["message"]


def test_a_pinned_step_needs_no_serving_gateway_but_its_revision_must_exist():
    gw = ServingGateway("staging", agents=frozenset(), pipelines=frozenset({"flow"}))
    ok = pipeline("flow", {"name": "a", "agentRef": {"name": "other", "revision": 2}})
    assert ready(plan_for(ok, gateways=(gw,)))["status"] == "True"
    gone = pipeline("flow", {"name": "a", "agentRef": {"name": "other", "revision": 7}})
    cond = ready(plan_for(gone, gateways=(gw,)))
    assert cond["reason"] == "RevisionNotFound"
    assert "Agent 'other' has no revision 7 (spec.steps[0].agentRef.revision)" in cond["message"]


def test_cycle_through_pipeline_ref_is_stalled_and_named():
    body = pipeline("a", {"name": "x", "pipelineRef": {"name": "b"}})
    plan = plan_for(body, pipeline_refs={"a": ("b",), "b": ("a",)})
    cond = ready(plan)
    assert cond["reason"] == "PipelineCycle"
    assert "a -> b -> a" in cond["message"]
    assert get_condition(plan.status["conditions"], "Stalled")["status"] == "True"


def test_find_cycle_reports_the_loop_not_the_path_into_it():
    assert find_cycle("a", {"a": ("b",), "b": ("c",), "c": ("b",)}) == ["b", "c", "b"]
    assert find_cycle("a", {"a": ("b", "c"), "b": ("c",)}) is None


def test_nesting_deeper_than_the_limit_is_refused():
    refs = {"p1": ("p2",), "p2": ("p3",), "p3": ("p4",), "p4": ("p5",), "p5": ()}
    body = pipeline("p1", {"name": "x", "pipelineRef": {"name": "p2"}})
    cond = ready(plan_for(body, pipeline_refs=refs))
    assert cond["reason"] == "PipelineTooDeep"
    assert "p1 -> p2 -> p3 -> p4 -> p5" in cond["message"]


def test_called_pipeline_missing_or_not_served_by_the_same_gateway():
    body = pipeline("a", {"name": "x", "pipelineRef": {"name": "b"}})
    assert ready(plan_for(body))["reason"] == "PipelineNotFound"
    gw = ServingGateway("dev", agents=frozenset(), pipelines=frozenset({"a"}))
    cond = ready(plan_for(body, pipeline_refs={"b": ()}, gateways=(gw,)))
    assert cond["reason"] == "PipelineNotServed"
    assert "Pipeline 'b' is not served by Gateway 'dev'" in cond["message"]


def test_gateway_ref_to_a_missing_gateway():
    cond = ready(plan_for(pipeline(gatewayRef={"name": "nowhere"}), gateway_exists=False))
    assert cond["reason"] == "GatewayNotFound"
    assert "Gateway 'nowhere' (spec.gatewayRef) does not exist" in cond["message"]
