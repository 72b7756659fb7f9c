"""MCP tools in the agent loop, end to end: a gateway process (the operator's command and
bundle) calls a real MCP server process (made with the official SDK) between scripted
model answers, and the official openai client sees the final answer."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.agent_gateway import Served, serve, stub_model
from tests.support.mcp_toolserver import MCPToolServer
from tests.support.objects import agent
from tests.support.processes import free_port

pytestmark = pytest.mark.e2e

TOKEN = "mcp-token-4711"  # in the MCP server's URL: never in logs, /readyz or answers


@pytest.fixture(scope="module")
def mcp_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, MCPToolServer]]:
    tmp = tmp_path_factory.mktemp("mcp")
    servers = {
        transport: MCPToolServer(free_port(), transport, tmp / f"{transport}.log").start()
        for transport in ("streamable-http", "sse")
    }
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, mcp_servers: dict[str, MCPToolServer]
) -> Iterator[Served]:
    shop, sse = mcp_servers["streamable-http"], mcp_servers["sse"]

    def agents(stub: str, tools: str) -> list[dict[str, Any]]:
        return [
            agent(
                "shop",
                prompt="You track orders.",
                model=stub_model(stub, "shop-model"),
                tools=[
                    # no parameters: the model gets the schema the server lists
                    {
                        "name": "find_order",
                        "type": "mcp",
                        "mcp": {"url": f"{shop.url}?token={TOKEN}", "toolName": "lookup_order"},
                    },
                    {
                        "name": "add",
                        "type": "mcp",
                        "description": "Add two integers (over SSE).",
                        "mcp": {"url": sse.url, "transport": "sse"},
                    },
                    {"name": "sleep", "type": "mcp", "mcp": {"url": f"{shop.url}?token={TOKEN}"}},
                    {"name": "blob", "type": "mcp", "mcp": {"url": f"{shop.url}?token={TOKEN}"}},
                    {
                        "name": "blob_sse",
                        "type": "mcp",
                        "mcp": {"url": sse.url, "transport": "sse", "toolName": "blob"},
                    },
                    {
                        "name": "notify",
                        "type": "http",
                        "description": "Send a note",
                        "http": {"url": f"{tools}/echo", "method": "POST"},
                    },
                ],
            )
        ]

    yield from serve(tmp_path_factory.mktemp("agent-loop-mcp"), agents)


def test_an_mcp_tool_is_discovered_called_and_its_output_is_in_the_answer(
    served: Served, mcp_servers: dict[str, MCPToolServer]
) -> None:
    shop = mcp_servers["streamable-http"]
    calls = shop.stats()["calls"].get("lookup_order", 0)
    served.script(
        "shop-model",
        [
            {"tool_calls": [{"name": "find_order", "arguments": {"order_id": "A-1001"}}]},
            {"content": "Your order: {tools}"},
        ],
    )
    completion = served.client().chat.completions.create(
        model="shop", messages=[{"role": "user", "content": "Where is order A-1001?"}]
    )
    answer = completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    order = json.loads(answer.removeprefix("Your order: "))
    assert order["order_id"] == "A-1001" and order["carrier"] in ("DHL", "UPS", "La Poste")
    assert shop.stats()["calls"]["lookup_order"] == calls + 1  # called by its server name
    # The model was offered the Agent's name with the schema from the server's tools/list.
    offered = {
        t["function"]["name"]: t["function"] for t in served.model_requests()[-1]["body"]["tools"]
    }
    assert offered["find_order"]["parameters"]["required"] == ["order_id"]
    assert offered["find_order"]["description"].startswith("Look up an order")
    assert offered["add"]["description"] == "Add two integers (over SSE)."
    assert set(offered["add"]["parameters"]["properties"]) == {"a", "b"}


def test_mcp_over_sse_and_an_http_tool_in_one_step_streamed(served: Served) -> None:
    served.script(
        "shop-model",
        [
            {
                "tool_calls": [
                    {"name": "add", "arguments": {"a": 19, "b": 23}},
                    {"name": "notify", "arguments": {"note": "sum asked"}},
                ]
            },
            {"content": "Results: {tools}"},
        ],
    )
    stream = served.client().chat.completions.create(
        model="shop", messages=[{"role": "user", "content": "19 + 23?"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text.startswith("Results: 42 | ")
    assert "sum asked" in text  # the http tool's echo


def test_many_requests_share_one_session_per_mcp_server(
    served: Served, mcp_servers: dict[str, MCPToolServer]
) -> None:
    sse = mcp_servers["sse"]
    for i in range(3):
        served.script(
            "shop-model",
            [{"tool_calls": [{"name": "add", "arguments": {"a": i, "b": 1}}]}, "{tools}"],
        )
        completion = served.client().chat.completions.create(
            model="shop", messages=[{"role": "user", "content": "add"}]
        )
        assert completion.choices[0].message.content == str(i + 1)
    # the gateway's connection (opened by its readiness probe or first request) served all
    assert sse.stats()["handshakes"] == 1


def test_an_mcp_server_killed_mid_call_is_a_tool_error_for_the_model_not_a_5xx(
    tmp_path: Path, served: Served, mcp_servers: dict[str, MCPToolServer]
) -> None:
    shop = mcp_servers["streamable-http"]
    sleeps = shop.stats()["calls"].get("sleep", 0)
    served.script(
        "shop-model",
        [{"tool_calls": [{"name": "sleep", "arguments": {"seconds": 60}}]}, "Sorry: {tools}"],
    )

    def kill_when_called() -> None:
        while shop.stats()["calls"].get("sleep", 0) == sleeps:
            time.sleep(0.05)
        shop.kill()

    killer = threading.Thread(target=kill_when_called)
    killer.start()
    try:
        completion = served.client().chat.completions.create(
            model="shop", messages=[{"role": "user", "content": "wait"}], timeout=60
        )
    finally:
        killer.join()
    answer = completion.choices[0].message.content
    assert answer.startswith("Sorry: tool error (disconnected)")
    readiness = httpx.get(f"{served.url}/readyz", timeout=5)
    assert readiness.status_code == 200  # one tool server down keeps the pod in service
    down = next(s for s in readiness.json()["mcpServers"] if s["url"] == shop.url)
    assert down["reachable"] is False
    assert {"agent": "shop", "tool": "sleep"} in down["tools"]
    # back on the same port: the next request reconnects and the tool works again
    shop.start()
    served.script(
        "shop-model",
        [{"tool_calls": [{"name": "sleep", "arguments": {"seconds": 0}}]}, "{tools}"],
    )
    again = served.client().chat.completions.create(
        model="shop", messages=[{"role": "user", "content": "wait"}]
    )
    assert again.choices[0].message.content == "slept 0s"
    assert TOKEN not in answer and TOKEN not in readiness.text
    assert TOKEN not in served.process.log.read_text()


def peak_rss_mib(served: Served) -> float:
    status = Path(f"/proc/{served.process.proc.pid}/status").read_text()
    kib = next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]
    return int(kib) / 1024


@pytest.mark.parametrize("tool", ["blob", "blob_sse"])
def test_a_50_mb_mcp_answer_is_not_read_into_memory(served: Served, tool: str) -> None:
    """A JSON answer is cut at 4 MiB by the gateway, an event at 1 MiB by httpx2's SSE
    parser; the model is told, and the server is used again on the next call."""
    before = peak_rss_mib(served)
    served.script(
        "shop-model",
        [{"tool_calls": [{"name": tool, "arguments": {"megabytes": 50}}]}, "Sorry: {tools}"],
    )
    completion = served.client().chat.completions.create(
        model="shop", messages=[{"role": "user", "content": "big"}], timeout=120
    )
    answer = completion.choices[0].message.content
    grown = peak_rss_mib(served) - before
    assert answer.startswith("Sorry: tool error (")
    assert len(answer) < 1000
    if tool == "blob":
        assert answer.startswith("Sorry: tool error (too_large)")
    assert grown < 40, f"the gateway's peak memory grew by {grown:.0f} MiB"
    served.script(
        "shop-model",
        [{"tool_calls": [{"name": tool, "arguments": {"megabytes": 0.00001}}]}, "{tools}"],
    )
    small = served.client().chat.completions.create(
        model="shop", messages=[{"role": "user", "content": "small"}]
    )
    assert small.choices[0].message.content == "xxxxxxxxxx"
