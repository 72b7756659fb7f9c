"""Hostile tools and models against a real gateway process: a tool answering 50 MB, a
tool that never answers, a model that asks for tools forever, a tool URL at the cloud's
metadata address. Each ends with an answer (or a clear error) the caller can act on,
and the gateway keeps serving."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.reliability.figures import Figures
from tests.support.agent_gateway import Served, serve, stub_model
from tests.support.objects import agent

pytestmark = pytest.mark.reliability


def http_tool(name: str, url: str, timeout: str = "30s") -> dict[str, Any]:
    return {"name": name, "type": "http", "http": {"url": url, "method": "GET", "timeout": timeout}}


def agents(stub: str, tools: str) -> list[dict[str, Any]]:
    return [
        agent(
            "hostile",
            model=stub_model(stub, "hostile-model"),
            tools=[
                http_tool("big", f"{tools}/big"),
                http_tool("hang", f"{tools}/hang", timeout="1s"),
                http_tool("metadata", "http://169.254.169.254/latest/meta-data/"),
                http_tool("metadata_v6", "http://[::ffff:169.254.169.254]/latest/"),
                http_tool("redirect", f"{tools}/redirect"),
                http_tool("weather", f"{tools}/weather"),
                http_tool("slow", f"{tools}/slow"),
                {
                    **http_tool("injecting", f"{tools}/weather"),
                    "http": {
                        "url": f"{tools}/weather",
                        "headersSecretRef": {"name": "bad-headers", "key": "headers"},
                    },
                },
                {
                    **http_tool("unmounted", f"{tools}/weather"),
                    "http": {
                        "url": f"{tools}/weather",
                        "headersSecretRef": {"name": "never-created", "key": "headers"},
                    },
                },
            ],
            runtime={"maxSteps": 3, "maxConcurrentTools": 2},
        ),
        agent(
            "slow",
            model=stub_model(stub, "slow-model"),
            tools=[http_tool("hang", f"{tools}/hang", timeout="60s")],
            runtime={"timeout": "2s"},
        ),
        agent(
            "budget",
            model=stub_model(stub, "budget-model"),
            tools=[http_tool("weather", f"{tools}/weather")],
            runtime={"tokenBudget": 1500},
        ),
    ]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from serve(
        tmp_path_factory.mktemp("agent-loop-hostile"),
        agents,
        secrets={"bad-headers": {"headers": json.dumps({"x-token": INJECTED})}},
    )


INJECTED = "secret-abc\r\nx-injected: yes"


def tool_result_sent(served: Served) -> str:
    """The tool message the model was last sent."""
    messages = served.model_requests()[-1]["body"]["messages"]
    return str(next(m for m in reversed(messages) if m["role"] == "tool")["content"])


def rss_mib(served: Served) -> float:
    status = Path(f"/proc/{served.process.proc.pid}/status").read_text()
    kib = next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]
    return int(kib) / 1024


def ask(served: Served, tool: str, model: str = "hostile-model", agent: str = "hostile") -> Any:
    served.script(model, [{"tool_calls": [{"name": tool}]}, {"content": "done: {tools}"}])
    return served.client().chat.completions.create(
        model=agent, messages=[{"role": "user", "content": f"use {tool}"}]
    )


def test_a_50_mb_answer_is_cut_at_the_cap_and_reported(served: Served, figures: Figures) -> None:
    before = rss_mib(served)
    answer = ask(served, "big")
    grown = rss_mib(served) - before
    assert answer.choices[0].finish_reason == "stop"
    sent = tool_result_sent(served)
    assert sent.startswith("tool error (too_large): the answer exceeded 1048576 bytes")
    assert len(sent) < 3000  # the model gets the reason and a beginning, not a megabyte
    assert grown < 40, f"the gateway grew by {grown:.0f} MiB reading a 50 MiB answer"
    figures.record("gateway memory growth reading a 50 MiB tool answer (MiB)", round(grown, 1))
    assert served.metric("kaizen_gateway_tool_calls_total", tool="big", outcome="too_large") >= 1


def test_a_tool_that_hangs_times_out_and_the_model_is_told(served: Served) -> None:
    answer = ask(served, "hang")
    assert answer.choices[0].message.content == "done: tool error (timeout): no answer within 1s"
    assert served.metric("kaizen_gateway_tool_calls_total", tool="hang", outcome="timeout") >= 1


@pytest.mark.parametrize("stream", [False, True])
def test_a_model_asking_for_tools_forever_stops_at_max_steps(served: Served, stream: bool) -> None:
    served.script(
        "hostile-model",
        {"always": {"content": "again", "tool_calls": [{"name": "weather"}, {"name": "weather"}]}},
    )
    before = served.metric("kaizen_gateway_tool_calls_total", tool="weather", outcome="ok")
    count = served.model_request_count()
    try:
        request: dict[str, Any] = {
            "model": "hostile",
            "messages": [{"role": "user", "content": "loop"}],
        }
        if stream:
            chunks = list(served.client().chat.completions.create(**request, stream=True))
            finish = chunks[-1].choices[0].finish_reason
            assert not any(c.choices and c.choices[0].delta.tool_calls for c in chunks)
        else:
            choice = served.client().chat.completions.create(**request).choices[0]
            finish = choice.finish_reason
            assert choice.message.content == "again" and not choice.message.tool_calls
    finally:
        served.script("hostile-model", [])
    assert finish == "max_steps"
    assert served.model_request_count() - count == 3  # maxSteps model calls
    # Two tool rounds of two calls (the third step's calls are not run).
    assert served.metric("kaizen_gateway_tool_calls_total", tool="weather", outcome="ok") == (
        before + 4
    )
    assert served.metric("kaizen_gateway_loop_finishes_total", finish_reason="max_steps") >= 1


@pytest.mark.parametrize("tool", ["metadata", "metadata_v6"])
def test_a_tool_at_the_metadata_address_is_refused(served: Served, tool: str) -> None:
    ask(served, tool)
    sent = tool_result_sent(served)
    assert sent.startswith("tool error (refused):") and "link-local" in sent
    assert served.metric("kaizen_gateway_tool_calls_total", tool=tool, outcome="refused") >= 1


def test_a_redirect_is_not_followed(served: Served) -> None:
    before = len(served.tool_requests())
    ask(served, "redirect")
    assert tool_result_sent(served).startswith("tool error (http_302)")
    assert [r["path"] for r in served.tool_requests()[before:]] == ["/redirect"]


def test_the_deadline_ends_a_request_with_a_504_naming_it(served: Served) -> None:
    served.script("slow-model", [{"tool_calls": [{"name": "hang"}]}])
    resp = httpx.post(
        f"{served.url}/v1/chat/completions",
        json={"model": "slow", "messages": [{"role": "user", "content": "x"}]},
        timeout=30,
    )
    assert resp.status_code == 504
    error = resp.json()["error"]
    assert error["code"] == "deadline_exceeded" and "spec.runtime.timeout" in error["message"]


def test_the_deadline_ends_a_started_stream_with_an_error_event(served: Served) -> None:
    served.script("slow-model", [{"tool_calls": [{"name": "hang"}]}])
    with httpx.stream(
        "POST",
        f"{served.url}/v1/chat/completions",
        json={"model": "slow", "messages": [{"role": "user", "content": "x"}], "stream": True},
        timeout=30,
    ) as resp:
        assert resp.status_code == 200  # the stream started when the tool did
        lines = [line for line in resp.iter_lines() if line]
    assert ": tool hang started" in lines and ": tool hang ok" not in lines
    error = json.loads(lines[-2][len("data: ") :])["error"]
    assert error["code"] == "deadline_exceeded" and lines[-1] == "data: [DONE]"


def test_the_token_budget_stops_the_loop(served: Served) -> None:
    served.script(
        "budget-model",
        {
            "always": {
                "tool_calls": [{"name": "weather"}],
                "usage": {"prompt_tokens": 700, "completion_tokens": 100},
            }
        },
    )
    try:
        answer = served.client().chat.completions.create(
            model="budget", messages=[{"role": "user", "content": "x"}]
        )
    finally:
        served.script("budget-model", [])
    assert answer.choices[0].finish_reason == "token_budget"
    assert answer.usage.total_tokens == 1600  # two steps: the second reached the budget


def test_a_stream_stays_alive_while_a_tool_takes_long(served: Served) -> None:
    served.script(
        "hostile-model",
        [{"tool_calls": [{"name": "slow", "arguments": {"seconds": 6}}]}, {"content": "{tools}"}],
    )
    with httpx.stream(
        "POST",
        f"{served.url}/v1/chat/completions",
        json={"model": "hostile", "messages": [{"role": "user", "content": "x"}], "stream": True},
        timeout=httpx.Timeout(30, read=5.5),  # fails unless something arrives every 5.5 s
    ) as resp:
        lines = [line for line in resp.iter_lines() if line]
    started = lines.index(": tool slow started")
    assert lines[started + 1] == ": keepalive" and lines[started + 2] == ": tool slow ok"
    chunks = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == '{"slept":true}'


def test_headers_that_would_inject_are_refused_without_quoting_them(served: Served) -> None:
    before = len(served.tool_requests())
    ask(served, "injecting")
    sent = tool_result_sent(served)
    assert sent.startswith("tool error (headers_invalid): Secret 'bad-headers' key 'headers'")
    assert "secret-abc" not in sent and "secret-abc" not in served.process.log.read_text()
    assert len(served.tool_requests()) == before  # nothing was sent
    ask(served, "unmounted")
    assert tool_result_sent(served) == (
        "tool error (headers_unavailable): Secret 'never-created' key 'headers' is not mounted"
    )


def test_the_gateway_still_serves_after_the_hostile_calls(served: Served) -> None:
    served.script("hostile-model", [{"content": "fine"}])
    answer = served.client().chat.completions.create(
        model="hostile", messages=[{"role": "user", "content": "still there?"}]
    )
    assert answer.choices[0].message.content == "fine"
