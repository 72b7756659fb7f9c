"""Pipelines served by a real gateway process in front of the scripted model stub (one
model name per agent, so each agent answers its own script): one test per pattern
proving which agents are called, in which order or at once, and what the pattern
answers, with its failure rules; the OpenAI client and the native route."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest

from tests.support.agent_gateway import (
    Served,
    bundled_agent,
    bundled_pipeline,
    serve,
    stub_model,
)
from tests.support.objects import agent

AGENTS = ["writer", "critic", "editor", "a", "b", "c", "boss", "researcher", "classifier"]
AGENTS += ["billing", "urgent", "general", "shouty", "x", "y", "z", "merger", "ghosted"]


def step(name: str, target: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"name": name, "agentRef": {"name": target or name}, **extra}


PIPELINES: dict[str, dict[str, Any]] = {
    "seq": {
        "pattern": "Sequential",
        "steps": [
            step("writer"),
            step("critic", input="Improve: {{previous}} (asked: {{input}})"),
            step("editor", input="{{steps.writer}} / {{previous}}"),
        ],
    },
    "par": {"pattern": "Parallel", "steps": [step("a"), step("b"), step("c")]},
    "par-agg": {
        "pattern": "Parallel",
        "steps": [step("a"), step("b")],
        "parallel": {"merge": "Aggregate", "aggregator": step("merger")},
    },
    "par-some": {
        "pattern": "Parallel",
        "steps": [step("a"), step("gone", "no-such-agent"), step("c")],
        "parallel": {"minSuccessful": 2},
    },
    "par-all": {
        "pattern": "Parallel",
        "steps": [step("a"), step("gone", "no-such-agent")],
    },
    "router": {
        "pattern": "Router",
        "steps": [step("billing"), step("urgent"), step("general")],
        "router": {
            "routes": [
                {"name": "billing", "step": "billing", "match": {"keywords": ["invoice"]}},
                {
                    "name": "urgent",
                    "step": "urgent",
                    "match": {"jsonPath": "$.ticket.priority", "equals": "high"},
                },
                {"name": "shouting", "step": "general", "match": {"regex": "^[A-Z !]+$"}},
                {"name": "classified", "step": "general"},
            ],
            "classifier": step("classifier"),
        },
    },
    "router-strict": {
        "pattern": "Router",
        "steps": [step("billing")],
        "router": {
            "routes": [{"name": "billing", "step": "billing", "match": {"keywords": ["invoice"]}}],
        },
    },
    "router-default": {
        "pattern": "Router",
        "steps": [step("billing"), step("general")],
        "router": {
            "routes": [{"name": "billing", "step": "billing", "match": {"keywords": ["invoice"]}}],
            "defaultStep": "general",
        },
    },
    "super": {
        "pattern": "Supervisor",
        "steps": [step("research", "researcher", description="Finds facts.")],
        "supervisor": {"supervisor": step("boss"), "maxDelegations": 2},
    },
    "vote": {"pattern": "Ensemble", "steps": [step("x"), step("y"), step("z")]},
    "vote-tie": {
        "pattern": "Ensemble",
        "steps": [step("x"), step("y"), step("gone", "no-such-agent")],
    },
    "vote-strict": {
        "pattern": "Ensemble",
        "steps": [step("x"), step("y"), step("gone", "no-such-agent")],
        "ensemble": {"minSuccessful": 3},
    },
    "nested": {
        "pattern": "Sequential",
        "steps": [
            {"name": "inner", "pipelineRef": {"name": "seq"}},
            step("pinned", "editor", agentRef={"name": "editor", "revision": 7}),
        ],
    },
    # Named like a served agent: refused (the agent keeps the name).
    "writer": {"pattern": "Sequential", "steps": [step("a")]},
}


def agents(stub: str, _tools: str) -> list[dict[str, Any]]:
    return [agent(n, model=stub_model(stub, f"{n}-model")) for n in AGENTS]


def extra(stub: str) -> dict[str, Any]:
    return {
        "pipelines": [bundled_pipeline(n, s) for n, s in PIPELINES.items()],
        "pinnedAgents": [
            bundled_agent("editor", stub_model(stub, "editor-v7-model"), 7, "Old editor.")
        ],
    }


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from serve(tmp_path_factory.mktemp("pipelines"), agents, bundle_extra=extra)


def invoke(served: Served, name: str, text: str) -> httpx.Response:
    return httpx.post(f"{served.url}/pipelines/{name}/invoke", json={"input": text}, timeout=30)


def user_message(request: dict[str, Any]) -> str:
    return str(request["body"]["messages"][-1]["content"])


def called(served: Served) -> list[str]:
    """The models the stub was asked, in order."""
    return [r["body"]["model"] for r in served.model_requests()]


def events(served: Served, name: str, text: str) -> list[tuple[str, dict[str, Any]]]:
    """The native event stream of a run, as (event, data) pairs."""
    out = []
    with httpx.stream(
        "POST",
        f"{served.url}/pipelines/{name}/invoke",
        json={"input": text, "stream": True},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        event = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event:
                out.append((event, json.loads(line[6:])))
    return out


def test_sequential_feeds_each_step_the_templates_and_reports_every_step(served: Served) -> None:
    served.scripts(
        {
            "writer-model": {"always": "draft one"},
            "critic-model": {"always": "draft two"},
            "editor-model": {"always": "final text"},
        }
    )
    response = invoke(served, "seq", "write a haiku")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["output"] == "final text"
    assert called(served) == ["writer-model", "critic-model", "editor-model"]
    sent = [user_message(r) for r in served.model_requests()]
    assert sent == [
        "write a haiku",
        "Improve: draft one (asked: write a haiku)",
        "draft one / draft two",
    ]
    assert [
        (s["name"], s["kind"], s["target"], s["revision"], s["status"]) for s in body["steps"]
    ] == [
        ("writer", "Agent", "writer", 1, "ok"),
        ("critic", "Agent", "critic", 1, "ok"),
        ("editor", "Agent", "editor", 1, "ok"),
    ]
    assert [s["output"] for s in body["steps"]] == ["draft one", "draft two", "final text"]
    total = sum(s["usage"]["total_tokens"] for s in body["steps"])
    assert body["usage"]["total_tokens"] == total > 0
    assert all(s["latencyMs"] > 0 for s in body["steps"])
    assert (
        served.metric("kaizen_gateway_pipeline_requests_total", pipeline="seq", status="200") >= 1
    )
    assert (
        served.metric(
            "kaizen_gateway_pipeline_steps_total", pipeline="seq", step="critic", status="ok"
        )
        >= 1
    )
    assert (
        served.metric("kaizen_gateway_pipeline_tokens_total", pipeline="seq", direction="out")
        >= body["usage"]["completion_tokens"]
    )


def test_parallel_runs_steps_at_once_and_concatenates_in_step_order(served: Served) -> None:
    # a answers last: the merge still follows step order, not finishing order.
    served.scripts(
        {
            "a-model": {"always": {"content": "from a", "delay": 0.6}},
            "b-model": {"always": {"content": "from b", "delay": 0.3}},
            "c-model": {"always": {"content": "from c", "delay": 0.3}},
        }
    )
    seen = events(served, "par", "same question")
    kinds = [(e, d.get("name")) for e, d in seen]
    started = [i for i, (e, _) in enumerate(kinds) if e == "step.started"]
    finished = [i for i, (e, _) in enumerate(kinds) if e == "step.finished"]
    assert len(started) == len(finished) == 3
    assert max(started) < min(finished), f"steps did not overlap: {kinds}"
    assert [d["name"] for e, d in seen if e == "step.finished"][-1] == "a"
    assert kinds[-1] == ("pipeline.finished", None)
    assert "delta" not in [e for e, _ in seen]  # a Concatenate output is no step's answer
    done = seen[-1][1]
    assert done["output"] == "## a\n\nfrom a\n\n## b\n\nfrom b\n\n## c\n\nfrom c"
    assert sorted(user_message(r) for r in served.model_requests()) == ["same question"] * 3


def test_parallel_aggregator_gets_the_labelled_outputs(served: Served) -> None:
    served.scripts(
        {
            "a-model": {"always": "A says"},
            "b-model": {"always": "B says"},
            "merger-model": {"always": "merged"},
        }
    )
    body = invoke(served, "par-agg", "q").json()
    assert body["output"] == "merged"
    assert called(served)[-1] == "merger-model"
    assert user_message(served.model_requests()[-1]) == "## a\n\nA says\n\n## b\n\nB says"


def test_parallel_min_successful_leaves_failures_out_or_fails(served: Served) -> None:
    served.scripts({"a-model": {"always": "A"}, "c-model": {"always": "C"}})
    body = invoke(served, "par-some", "q").json()
    assert body["output"] == "## a\n\nA\n\n## c\n\nC"
    gone = next(s for s in body["steps"] if s["name"] == "gone")
    assert gone["status"] == "failed"
    assert "'gone'" in gone["error"] and "'no-such-agent'" in gone["error"]
    response = invoke(served, "par-all", "q")
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "min_successful"
    assert "1 of 2 steps succeeded" in error["message"] and "gone" in error["message"]
    assert [s["name"] for s in response.json()["steps"]] == ["a", "gone"]


@pytest.mark.parametrize(
    ("text", "route", "model"),
    [
        ("Where is my Invoice?", "billing", "billing-model"),
        ('{"ticket": {"priority": "high"}}', "urgent", "urgent-model"),
        ("HELP ME NOW!", "shouting", "general-model"),
        # "invoices" is not the whole word "invoice": the classifier decides.
        ("two invoices lost", "billing", "billing-model"),
    ],
)
def test_router_picks_the_first_matching_route_then_the_classifier(
    served: Served, text: str, route: str, model: str
) -> None:
    served.scripts(
        {
            "billing-model": {"always": "billing here"},
            "urgent-model": {"always": "urgent here"},
            "general-model": {"always": "general here"},
            "classifier-model": {"always": "  BILLING \n"},
        }
    )
    body = invoke(served, "router", text).json()
    assert body["route"] == route
    assert called(served)[-1] == model
    assert body["output"] == f"{model.removesuffix('-model')} here"
    asked_classifier = "classifier-model" in called(served)
    assert asked_classifier == (text == "two invoices lost")


def test_router_default_step_then_no_route(served: Served) -> None:
    served.scripts({"general-model": {"always": "fallback"}})
    body = invoke(served, "router-default", "hello").json()
    assert body["output"] == "fallback"
    assert "route" not in body
    assert called(served) == ["general-model"]
    response = invoke(served, "router-strict", "hello")
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "no_route"
    assert "router.defaultStep is unset" in response.json()["error"]["message"]


def test_supervisor_delegates_through_tools_until_it_answers(served: Served) -> None:
    calls = [{"name": "research", "arguments": {"input": f"find {i}"}} for i in range(3)]
    served.scripts(
        {
            "boss-model": [{"tool_calls": calls}, {"content": "answer: {tools}"}],
            "researcher-model": {"always": "a fact"},
        }
    )
    body = invoke(served, "super", "what is true?").json()
    requests = served.model_requests()
    assert requests[0]["body"]["model"] == "boss-model"
    tool = requests[0]["body"]["tools"][0]["function"]
    assert tool["name"] == "research" and tool["description"] == "Finds facts."
    assert tool["parameters"]["required"] == ["input"]
    # maxDelegations 2: two calls ran, the third was told to answer now.
    worker_inputs = sorted(
        user_message(r) for r in requests if r["body"]["model"] == "researcher-model"
    )
    assert worker_inputs == ["find 0", "find 1"]
    assert body["output"].startswith("answer: a fact | a fact | tool error (max_delegations)")
    assert "answer now" in body["output"]
    assert [s["name"] for s in body["steps"]].count("research") == 2
    assert body["steps"][0]["name"] == "boss"


def test_a_streamed_supervisor_delegates_and_streams_its_answer(served: Served) -> None:
    served.scripts(
        {
            "boss-model": [
                {"tool_calls": [{"name": "research", "arguments": {"input": "look"}}]},
                {"content": "it says {tools}"},
            ],
            "researcher-model": {"always": "found it"},
        }
    )
    stream = served.client().chat.completions.create(
        model="super", messages=[{"role": "user", "content": "q"}], stream=True
    )
    texts = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert "".join(texts) == "it says found it"
    assert len(texts) > 1
    assert called(served) == ["boss-model", "researcher-model", "boss-model"]
    assert all(
        r["body"].get("stream")
        for r in served.model_requests()
        if r["body"]["model"] == "boss-model"
    )


def test_ensemble_majority_vote_normalises_and_ties_go_to_the_earliest(served: Served) -> None:
    served.scripts(
        {
            "x-model": {"always": "Lyon"},
            "y-model": {"always": "  PARIS. "},
            "z-model": {"always": "paris"},
        }
    )
    body = invoke(served, "vote", "capital?").json()
    assert body["output"] == "  PARIS. "  # the winning answer as its earliest step wrote it
    assert body["vote"] == {"answer": "paris", "step": "y", "votes": 2, "of": 3}
    served.scripts({"x-model": {"always": "yes"}, "y-model": {"always": "no"}})
    body = invoke(served, "vote-tie", "?").json()  # the failed member does not vote
    assert body["output"] == "yes"
    assert body["vote"]["votes"] == 1 and body["vote"]["of"] == 2
    response = invoke(served, "vote-strict", "?")
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "min_successful"


def test_nested_pipeline_and_pinned_revision(served: Served) -> None:
    served.scripts(
        {
            "writer-model": {"always": "w"},
            "critic-model": {"always": "c"},
            "editor-model": {"always": "served editor"},
            "editor-v7-model": {"always": "editor seven"},
        }
    )
    body = invoke(served, "nested", "go").json()
    assert body["output"] == "editor seven"
    assert called(served) == ["writer-model", "critic-model", "editor-model", "editor-v7-model"]
    inner, pinned = body["steps"]
    assert (inner["kind"], inner["target"], inner["output"]) == ("Pipeline", "seq", "served editor")
    assert pinned["revision"] == 7
    assert inner["usage"]["total_tokens"] > 0


def test_openai_client_calls_a_pipeline_by_name(served: Served) -> None:
    served.scripts(
        {
            "writer-model": {"always": "one"},
            "critic-model": {"always": "two"},
            "editor-model": {"always": "the end"},
        }
    )
    client = served.client()
    models = {m.id: m.model_extra for m in client.models.list()}
    assert models["seq"]["kind"] == "pipeline" and models["seq"]["pattern"] == "Sequential"
    assert models["writer"]["kind"] == "agent"
    answer = client.chat.completions.create(
        model="seq",
        messages=[
            {"role": "user", "content": "earlier turn"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "write"},
        ],
    )
    assert answer.choices[0].message.content == "the end"
    assert answer.model == "seq"
    assert answer.usage is not None and answer.usage.total_tokens > 0
    assert user_message(served.model_requests()[0]) == "write"
    stream = client.chat.completions.create(
        model="seq", messages=[{"role": "user", "content": "write"}], stream=True
    )
    chunks = list(stream)
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(texts) == "the end"
    assert len(texts) == 2  # the final step's answer as the model streams it, word by word
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_errors_are_openai_shaped(served: Served) -> None:
    client = served.client()
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert "nope" in str(caught.value)
    response = invoke(served, "nope", "x")
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
    response = httpx.post(f"{served.url}/pipelines/seq/invoke", json={"input": ""}, timeout=5)
    assert response.status_code == 400 and response.json()["error"]["param"] == "input"


def test_a_pipeline_named_like_an_agent_is_refused_and_reported(served: Served) -> None:
    ready = httpx.get(f"{served.url}/readyz", timeout=5).json()
    assert "writer" in ready["refusedPipelines"]
    assert "agent" in ready["refusedPipelines"]["writer"]
    assert ready["unresolvedSteps"]["par-some"] == [
        "step 'gone': agent 'no-such-agent' is not in the bundle"
    ]
    assert "seq" not in ready["unresolvedSteps"] and "nested" not in ready["unresolvedSteps"]
    served.scripts({"writer-model": {"always": "the agent"}})
    answer = served.client().chat.completions.create(
        model="writer", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.choices[0].message.content == "the agent"
    response = invoke(served, "writer", "x")
    assert response.status_code == 404
    assert "not served" in response.json()["error"]["message"]


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A gateway that requires API keys and limits each key to a burst of 2 requests."""
    yield from serve(
        tmp_path_factory.mktemp("pipelines-guarded"),
        agents,
        secrets={"gw-keys": {"team-a": "kaizen-key-a"}},
        bundle_extra=extra,
        auth={"mode": "APIKey", "apiKeysSecretRef": {"name": "gw-keys"}},
        rateLimits={"perApiKey": {"requestsPerSecond": 1, "burst": 2}},
    )


def test_pipelines_have_the_agents_auth_and_rate_limits(guarded: Served) -> None:
    guarded.scripts({"a-model": {"always": "A"}, "b-model": {"always": "B"}})
    url = f"{guarded.url}/pipelines/par-agg/invoke"
    response = httpx.post(url, json={"input": "q"}, timeout=10)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        guarded.client().chat.completions.create(
            model="seq", messages=[{"role": "user", "content": "x"}]
        )
    assert guarded.model_requests() == []  # nothing ran
    key = {"authorization": "Bearer kaizen-key-a"}

    def one(_: int) -> httpx.Response:
        return httpx.post(
            f"{guarded.url}/pipelines/par/invoke", json={"input": "q"}, headers=key, timeout=30
        )

    with ThreadPoolExecutor(6) as pool:  # at once: a burst of 2, one more a second
        responses = list(pool.map(one, range(6)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses[0] == 200 and statuses[-1] == 429, statuses
    limited = next(r for r in responses if r.status_code == 429)
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert limited.headers["retry-after"]
