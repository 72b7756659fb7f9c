"""The agent loop's span tree, as a local OTLP receiver collects it from a gateway
process: one request span, under it a model span per step and a tool span per tool
call, streamed or not, with the GenAI attributes of each."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.agent_gateway import Served, serve, stub_model
from tests.support.objects import agent
from tests.support.otlp import OTLPReceiver, ReceivedSpan, children


def agents(stub: str, tools: str) -> list[dict[str, Any]]:
    return [
        agent(
            "weather",
            model=stub_model(stub, "weather-model"),
            tools=[
                {
                    "name": "forecast",
                    "type": "http",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                    "http": {"url": f"{tools}/weather", "method": "GET"},
                },
                {
                    "name": "broken",
                    "type": "http",
                    "http": {"url": f"{tools}/status/500", "method": "GET"},
                },
            ],
        )
    ]


@pytest.fixture(scope="module")
def otlp() -> Iterator[OTLPReceiver]:
    receiver = OTLPReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, otlp: OTLPReceiver) -> Iterator[Served]:
    yield from serve(
        tmp_path_factory.mktemp("loop-traces"),
        agents,
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50"},
    )


def tree(
    otlp: OTLPReceiver, trace_id: str, spans_expected: int
) -> tuple[ReceivedSpan, list[ReceivedSpan]]:
    """The request span and its children, in start order (once all have arrived)."""
    spans = otlp.wait_for(trace_id, lambda found: len(found) >= spans_expected)
    (root,) = [s for s in spans if s.name.startswith("invoke_agent")]
    return root, list(children(spans, root))


TWO_STEPS = [
    {"tool_calls": [{"name": "forecast", "arguments": {"city": "Paris"}}]},
    {"content": "Here it is: {tools}"},
]


@pytest.mark.parametrize("stream", [False, True])
def test_each_step_is_a_model_span_and_each_tool_call_a_tool_span(
    served: Served, otlp: OTLPReceiver, stream: bool
) -> None:
    served.script("weather-model", TWO_STEPS)
    raw = served.client().chat.completions.with_raw_response.create(
        model="weather",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        stream=stream,
    )
    answer = raw.parse()
    if stream:
        assert "sunny" in "".join(c.choices[0].delta.content or "" for c in answer if c.choices)
    root, below = tree(otlp, raw.headers["x-kaizen-trace-id"], 4)
    assert root.name == "invoke_agent weather"
    assert root.attributes["kaizen.agent.revision"] == 1
    names = sorted(s.name for s in below)
    assert names == ["chat weather-model", "chat weather-model", "execute_tool forecast"]
    tool = next(s for s in below if s.name == "execute_tool forecast")
    assert tool.attributes["gen_ai.operation.name"] == "execute_tool"
    assert tool.attributes["gen_ai.tool.name"] == "forecast"
    assert tool.attributes["gen_ai.tool.type"] == "extension"
    assert tool.attributes["gen_ai.tool.call.id"]
    assert tool.status_code == 0  # unset: it worked
    chats = [s for s in below if s.name == "chat weather-model"]
    assert sorted(c.attributes["gen_ai.response.finish_reasons"][0] for c in chats) == [
        "stop",
        "tool_calls",
    ]
    assert all(c.attributes["gen_ai.usage.input_tokens"] == 11 for c in chats)
    assert all(c.attributes.get("gen_ai.request.stream", False) is stream for c in chats)


def test_a_failed_tool_call_is_a_failed_tool_span(served: Served, otlp: OTLPReceiver) -> None:
    served.script("weather-model", [{"tool_calls": [{"name": "broken"}]}, {"content": "{tools}"}])
    raw = served.client().chat.completions.with_raw_response.create(
        model="weather", messages=[{"role": "user", "content": "x"}]
    )
    assert raw.http_response.status_code == 200  # the model was told; the caller is fine
    root, below = tree(otlp, raw.headers["x-kaizen-trace-id"], 4)
    tool = next(s for s in below if s.name == "execute_tool broken")
    assert tool.attributes["error.type"] == "http_500"
    assert tool.status_code == 2  # error
    assert root.status_code == 0
