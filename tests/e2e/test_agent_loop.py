"""The agent loop end to end: a gateway process (the operator's command and bundle) runs
an Agent's http tools against a real HTTP server, between scripted model answers from
the upstream stub, and any OpenAI client sees only the final answer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.agent_gateway import Served, serve, stub_model
from tests.support.objects import agent

TOOL_TOKEN = "tool-token-7f3a9c"


def agents(stub: str, tools: str) -> list[dict[str, Any]]:
    return [
        agent(
            "weather",
            prompt="You know the weather.",
            model=stub_model(stub, "weather-model"),
            tools=[
                {
                    "name": "forecast",
                    "type": "http",
                    "description": "The forecast of a city",
                    "parameters": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}},
                        "required": ["city"],
                    },
                    "http": {
                        "url": f"{tools}/weather",
                        "method": "GET",
                        "headersSecretRef": {"name": "tool-auth", "key": "headers"},
                    },
                },
                {
                    "name": "notify",
                    "type": "http",
                    "description": "Send a note",
                    "http": {"url": f"{tools}/echo", "method": "POST"},
                },
                {
                    "name": "broken",
                    "type": "http",
                    "http": {"url": f"{tools}/status/500", "method": "GET"},
                },
                {"name": "ask_user", "description": "Ask the user (the caller runs it)"},
            ],
        ),
        agent(
            "patient",
            model=stub_model(stub, "patient-model"),
            tools=[
                {"name": "slow", "type": "http", "http": {"url": f"{tools}/slow", "method": "GET"}}
            ],
            runtime={"maxConcurrentTools": 2},
        ),
        agent(
            "mock-weather",
            tools=[
                {
                    "name": "forecast",
                    "type": "http",
                    "http": {"url": f"{tools}/weather", "method": "GET"},
                }
            ],
        ),
        agent(
            "claude-weather",
            model={
                "provider": "anthropic",
                "name": "claude-weather",
                "endpoint": stub,
                "credentialsSecretRef": {"name": "an"},
            },
            tools=[
                {
                    "name": "forecast",
                    "type": "http",
                    "http": {"url": f"{tools}/weather", "method": "GET"},
                }
            ],
        ),
    ]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from serve(
        tmp_path_factory.mktemp("agent-loop"),
        agents,
        secrets={
            "tool-auth": {"headers": json.dumps({"x-tool-token": TOOL_TOKEN})},
            "an": {"apiKey": "sk-test-anthropic"},
        },
    )


FORECAST_THEN_ANSWER = [
    {"tool_calls": [{"name": "forecast", "arguments": {"city": "Paris"}}]},
    {"content": "Here it is: {tools}"},
]


def test_an_http_tool_is_run_and_the_model_answers_with_its_output(served: Served) -> None:
    calls = served.metric("kaizen_gateway_tool_calls_total", tool="forecast", outcome="ok")
    steps = served.metric("kaizen_gateway_steps_per_request_sum", agent="weather")
    served.script("weather-model", FORECAST_THEN_ANSWER)
    raw = served.client().chat.completions.with_raw_response.create(
        model="weather", messages=[{"role": "user", "content": "Weather in Paris?"}]
    )
    completion = raw.parse()
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert '"city":"Paris"' in choice.message.content and "sunny" in choice.message.content
    assert not choice.message.tool_calls
    assert completion.usage.prompt_tokens == 22  # two model calls of 11
    assert raw.headers["x-kaizen-steps"] == "2"
    # The tool was called as declared: GET, arguments as the query, headers from the Secret.
    call = served.tool_requests()[-1]
    assert (call["method"], call["path"], call["query"]) == ("GET", "/weather", {"city": "Paris"})
    assert call["headers"]["x-tool-token"] == TOOL_TOKEN
    # The model's second call carried its own tool call and the tool's result.
    sent = served.model_requests()[-1]["body"]["messages"]
    assert sent[-2]["tool_calls"][0]["function"]["name"] == "forecast"
    assert sent[-1]["role"] == "tool" and "sunny" in sent[-1]["content"]
    assert sent[-1]["tool_call_id"] == sent[-2]["tool_calls"][0]["id"]
    offered = {t["function"]["name"] for t in served.model_requests()[-1]["body"]["tools"]}
    assert offered == {"forecast", "notify", "broken", "ask_user"}
    assert (
        served.metric("kaizen_gateway_tool_calls_total", tool="forecast", outcome="ok") == calls + 1
    )
    assert served.metric("kaizen_gateway_steps_per_request_sum", agent="weather") == steps + 2


def test_streaming_answer_after_tools_through_the_openai_client(served: Served) -> None:
    served.script("weather-model", FORECAST_THEN_ANSWER)
    stream = served.client().chat.completions.create(
        model="weather",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("Here it is:") and "sunny" in text
    assert not any(c.choices and c.choices[0].delta.tool_calls for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 22


def test_tool_progress_shows_as_sse_comments_any_client_skips(served: Served) -> None:
    served.script("weather-model", FORECAST_THEN_ANSWER)
    with httpx.stream(
        "POST",
        f"{served.url}/v1/chat/completions",
        json={"model": "weather", "messages": [{"role": "user", "content": "x"}], "stream": True},
        timeout=10,
    ) as resp:
        lines = [line for line in resp.iter_lines() if line]
    assert ": tool forecast started" in lines and ": tool forecast ok" in lines
    assert lines[-1] == "data: [DONE]"


def test_one_step_runs_several_tools_and_gives_each_result(served: Served) -> None:
    served.script(
        "weather-model",
        [
            {
                "tool_calls": [
                    {"name": "forecast", "arguments": {"city": "Oslo"}},
                    {"name": "notify", "arguments": {"note": "hello", "n": 3}},
                ]
            },
            {"content": "{tools}"},
        ],
    )
    answer = served.client().chat.completions.create(
        model="weather", messages=[{"role": "user", "content": "both"}]
    )
    content = answer.choices[0].message.content
    assert '"city":"Oslo"' in content and '"echo":{"note":"hello","n":3}' in content
    posted = next(r for r in reversed(served.tool_requests()) if r["path"] == "/echo")
    assert posted["method"] == "POST" and posted["body"] == {"note": "hello", "n": 3}


def test_a_failing_tool_is_reported_to_the_model_not_to_the_caller(served: Served) -> None:
    served.script(
        "weather-model", [{"tool_calls": [{"name": "broken"}]}, {"content": "got: {tools}"}]
    )
    answer = served.client().chat.completions.create(
        model="weather", messages=[{"role": "user", "content": "x"}]
    )
    assert answer.choices[0].message.content == (
        "got: tool error (http_500): status 500 on purpose"
    )
    assert served.metric("kaizen_gateway_tool_calls_total", tool="broken", outcome="http_500") >= 1


def test_function_tool_calls_go_back_to_the_caller(served: Served) -> None:
    served.script(
        "weather-model", [{"tool_calls": [{"name": "ask_user", "arguments": {"q": "city?"}}]}]
    )
    choice = (
        served.client()
        .chat.completions.create(model="weather", messages=[{"role": "user", "content": "x"}])
        .choices[0]
    )
    assert choice.finish_reason == "tool_calls"
    assert [c.function.name for c in choice.message.tool_calls] == ["ask_user"]
    assert json.loads(choice.message.tool_calls[0].function.arguments) == {"q": "city?"}


@pytest.mark.parametrize("stream", [False, True])
def test_a_step_mixing_caller_and_server_tools_runs_nothing(served: Served, stream: bool) -> None:
    """The caller gets only its own call; the server-side call is not run (its result
    could not be part of the caller's next request)."""
    before = len(served.tool_requests())
    served.script(
        "weather-model",
        [
            {
                "tool_calls": [
                    {"name": "forecast", "arguments": {"city": "Rome"}},
                    {"name": "ask_user", "arguments": {"q": "sure?"}},
                ]
            }
        ],
    )
    request: dict[str, Any] = {
        "model": "weather",
        "messages": [{"role": "user", "content": "x"}],
    }
    if stream:
        chunks = list(served.client().chat.completions.create(**request, stream=True))
        calls = [t for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or []]
        finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
        names = [c.function.name for c in calls]
    else:
        choice = served.client().chat.completions.create(**request).choices[0]
        finish, names = choice.finish_reason, [c.function.name for c in choice.message.tool_calls]
    assert finish == "tool_calls" and names == ["ask_user"]
    assert len(served.tool_requests()) == before


def test_caller_tools_cannot_shadow_a_server_side_tool(served: Served) -> None:
    resp = httpx.post(
        f"{served.url}/v1/chat/completions",
        json={
            "model": "weather",
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "forecast"}}],
        },
    )
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "tools[0]"


def test_native_invoke_reports_tool_runs(served: Served) -> None:
    served.script("weather-model", FORECAST_THEN_ANSWER)
    body = httpx.post(
        f"{served.url}/agents/weather/invoke", json={"input": "Paris?"}, timeout=10
    ).json()
    assert "sunny" in body["output"] and body["finishReason"] == "stop" and body["steps"] == 2
    (run,) = body["toolRuns"]
    assert run["tool"] == "forecast" and run["ok"] is True and run["step"] == 1 and run["ms"] > 0


def test_native_invoke_streams_step_events(served: Served) -> None:
    served.script("weather-model", FORECAST_THEN_ANSWER)
    events: list[tuple[str, Any]] = []
    with httpx.stream(
        "POST",
        f"{served.url}/agents/weather/invoke",
        json={"input": "Paris?", "stream": True},
        timeout=10,
    ) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        kind = ""
        for line in resp.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))
    kinds = [k for k, _ in events]
    assert kinds[:2] == ["tool_started", "tool_finished"] and kinds[-1] == "done"
    assert set(kinds[2:-1]) == {"delta"}
    finished = events[1][1]
    assert finished["tool"] == "forecast" and finished["ok"] and finished["ms"] > 0
    text = "".join(d["content"] for k, d in events if k == "delta")
    assert text == events[-1][1]["output"] and "sunny" in text


def test_the_tool_headers_secret_never_reaches_logs_or_answers(served: Served) -> None:
    served.script("weather-model", FORECAST_THEN_ANSWER)
    answer = httpx.post(f"{served.url}/agents/weather/invoke", json={"input": "x"}).text
    assert TOOL_TOKEN not in answer
    assert TOOL_TOKEN not in json.dumps(served.model_requests())
    assert TOOL_TOKEN not in served.process.log.read_text()


def test_tool_calls_of_one_step_run_concurrently_up_to_the_cap(served: Served) -> None:
    served.script(
        "patient-model",
        [
            {"tool_calls": [{"name": "slow", "arguments": {"seconds": 0.3}}] * 5},
            {"content": "{tools}"},
        ],
    )
    events: list[dict[str, Any]] = []
    with httpx.stream(
        "POST",
        f"{served.url}/agents/patient/invoke",
        json={"input": "x", "stream": True},
        timeout=20,
    ) as resp:
        events = [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: ")]
    done = events[-1]
    assert done["output"].count('{"slept":true}') == 5
    assert len(done["toolRuns"]) == 5 and all(r["ok"] for r in done["toolRuns"])
    most = httpx.get(f"{served.tools}/_requests", timeout=5).json()["most_in_flight"]
    assert most == 2  # maxConcurrentTools: more than one at a time, never more than two


@pytest.mark.parametrize("stream", [False, True])
def test_the_loop_runs_on_an_anthropic_model_too(served: Served, stream: bool) -> None:
    served.script("claude-weather", FORECAST_THEN_ANSWER)
    request: dict[str, Any] = {
        "model": "claude-weather",
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
    }
    if stream:
        chunks = list(served.client().chat.completions.create(**request, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        text = served.client().chat.completions.create(**request).choices[0].message.content
    assert text.startswith("Here it is:") and '"city":"Paris"' in text
    sent = served.model_requests()[-1]["body"]["messages"]
    assert sent[-2]["content"][0]["type"] == "tool_use"
    assert sent[-2]["content"][0]["input"] == {"city": "Paris"}
    assert sent[-1]["content"][0]["type"] == "tool_result"


@pytest.mark.parametrize("stream", [False, True])
def test_the_offline_mock_model_runs_the_loop_when_asked_for_a_tool(
    served: Served, stream: bool
) -> None:
    request: dict[str, Any] = {
        "model": "mock-weather",
        "messages": [{"role": "user", "content": 'forecast {"city": "Lima"}'}],
    }
    if stream:
        chunks = list(served.client().chat.completions.create(**request, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        text = served.client().chat.completions.create(**request).choices[0].message.content
    assert text == '[mock:echo] {"city":"Lima","forecast":"sunny","celsius":21}'
