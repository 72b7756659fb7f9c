"""The Gateway index: an Agent event finds the Gateways that select or serve it."""

from __future__ import annotations

from typing import Any

from kaizen_operator.gateway.index import GatewayIndex


def gw(name: str, agents: dict[str, Any], served: list[str] | None = None) -> dict[str, Any]:
    status = {"servedRevisions": [{"agent": a, "revision": 1} for a in served or []]}
    return {
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"environment": "dev", "agents": agents},
        "status": status,
    }


def agent(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "labels": labels}}


def test_by_name_by_selector_and_by_what_is_served() -> None:
    index = GatewayIndex()
    index.observe(None, gw("named", {"names": ["a"]}))
    index.observe("ADDED", gw("labelled", {"selector": {"matchLabels": {"team": "x"}}}))
    index.observe("MODIFIED", gw("staging", {"names": ["z"]}, served=["b"]))
    index.observe("ADDED", gw("everything", {"selector": {}}))
    assert index.wanting("ns", agent("a")) == ["everything", "named"]
    assert index.wanting("ns", agent("b", team="x")) == ["everything", "labelled", "staging"]
    assert index.wanting("other", agent("a")) == []


def test_updates_and_deletions_replace_what_was_known() -> None:
    index = GatewayIndex()
    index.observe("ADDED", gw("g", {"names": ["a"]}))
    index.observe("MODIFIED", gw("g", {"names": ["b"]}))
    assert index.wanting("ns", agent("a")) == []
    assert index.wanting("ns", agent("b")) == ["g"]
    index.observe("DELETED", gw("g", {"names": ["b"]}))
    assert index.wanting("ns", agent("b")) == []


def test_a_gateway_with_an_unreadable_selection_is_left_to_its_own_reconcile() -> None:
    index = GatewayIndex()
    index.observe("ADDED", gw("g", {"names": ["a"]}))
    index.observe("MODIFIED", gw("g", {"names": ["a"], "selector": {}}))  # both: invalid
    assert index.wanting("ns", agent("a")) == []


def test_pipelines_are_selected_only_when_the_gateway_asks_and_pins_retain_agent_revisions() -> (
    None
):
    index = GatewayIndex()
    index.observe("ADDED", gw("agents-only", {"selector": {}}))
    serving = gw("dev", {"names": ["a"]})
    serving["spec"]["pipelines"] = {"selector": {"matchLabels": {"team": "x"}}}
    serving["status"]["servedPipelineRevisions"] = [{"pipeline": "flow", "revision": 3}]
    serving["status"]["pinnedRevisions"] = [{"agent": "a", "revision": 2, "pipeline": "flow"}]
    index.observe("ADDED", serving)
    assert index.wanting_pipeline("ns", agent("flow")) == ["dev"]  # served, labels or not
    assert index.wanting_pipeline("ns", agent("other", team="x")) == ["dev"]
    assert index.wanting_pipeline("ns", agent("other")) == []
    assert index.serving("ns", "flow", "Pipeline") == {3: ["dev"]}
    assert index.serving("ns", "flow") == {}  # an Agent of that name is another object
    assert index.pinning("ns", "a") == {2: ["pinned by Pipeline 'flow' served by Gateway 'dev'"]}
