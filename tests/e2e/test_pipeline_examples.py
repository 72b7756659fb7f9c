"""examples/26-pipelines.yaml served by a real gateway process on the mock provider
(what `make dev` runs): each pattern's pipeline answers what the example's comments
promise, through the CLI and the OpenAI route."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from kaizen_api.cli import pipelines  # noqa: F401 - registers the commands
from kaizen_api.cli.__main__ import app
from tests.support.agent_gateway import Served, serve
from tests.support.manifests import EXAMPLES
from tests.support.objects import agent

DOCS = [d for d in yaml.safe_load_all((EXAMPLES / "26-pipelines.yaml").read_text()) if d]


def example_agents(_stub: str, _tools: str) -> list[dict[str, Any]]:
    """The example's Agents, as stored objects (namespace, uid) with their model and prompt."""
    return [
        agent(d["metadata"]["name"], d["spec"]["systemPrompt"], model=d["spec"]["model"])
        for d in DOCS
        if d["kind"] == "Agent"
    ]


def example_pipelines(_stub: str) -> dict[str, Any]:
    """The bundle's pipelines as the operator writes them for a dev Gateway (revision 1)."""
    found = [d for d in DOCS if d["kind"] == "Pipeline"]
    return {
        "pipelines": [
            {"name": p["metadata"]["name"], "revision": 1, "hash": "h", "spec": p["spec"]}
            for p in found
        ]
    }


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from serve(
        tmp_path_factory.mktemp("examples"), example_agents, bundle_extra=example_pipelines
    )


def invoke(gw: Served, name: str, text: str) -> dict[str, Any]:
    result = CliRunner().invoke(
        app, ["pipelines", "invoke", name, text, "--url", gw.url, "-o", "json"]
    )
    assert result.exit_code == 0, result.output
    answer: dict[str, Any] = json.loads(result.output)
    return answer


def test_sequential_runs_in_order(served: Served) -> None:
    answer = invoke(served, "write-article", "tide pools")
    assert [s["target"] for s in answer["steps"]] == ["researcher", "writer", "editor"]
    assert answer["output"] == (
        "[mock:editor] Edit for a reader who asked about tide pools: "
        "[mock:writer] Notes: [mock:researcher] tide pools"
    )


def test_parallel_concatenates_in_step_order(served: Served) -> None:
    answer = invoke(served, "weigh-proposal", "a four-day week")
    assert answer["output"] == (
        "## for\n\n[mock:optimist] a four-day week\n\n## against\n\n[mock:skeptic] a four-day week"
    )


@pytest.mark.parametrize(
    ("text", "route", "model"),
    [
        ("Where is my invoice?", "billing", "billing"),
        ("The app shows ERROR 500", "technical", "tech"),
        ('{"ticket": {"area": "login"}}', "technical-ticket", "tech"),
        ("What are your hours?", None, "general"),
    ],
)
def test_router_picks_by_keyword_regex_json_or_default(
    served: Served, text: str, route: str | None, model: str
) -> None:
    answer = invoke(served, "support-router", text)
    assert answer.get("route") == route
    assert answer["output"] == f"[mock:{model}] {text}"


def test_supervisor_delegates_to_a_worker(served: Served) -> None:
    answer = invoke(served, "research-team", 'research {"input": "coral reefs"}')
    assert answer["output"] == "[mock:lead] [mock:researcher] coral reefs"
    assert "research" in [s["name"] for s in answer["steps"]]


def test_ensemble_majority_vote(served: Served) -> None:
    answer = invoke(served, "judges-vote", "Is the sky blue?")
    assert answer["output"] == "[mock:judge] Is the sky blue?"
    assert answer["vote"]["votes"] == 2 and answer["vote"]["of"] == 3


def test_the_openai_route_serves_a_pipeline_by_name(served: Served) -> None:
    r = httpx.post(
        f"{served.url}/v1/chat/completions",
        json={"model": "judges-vote", "messages": [{"role": "user", "content": "Is it?"}]},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "[mock:judge] Is it?"
