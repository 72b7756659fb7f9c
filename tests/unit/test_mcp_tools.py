"""MCP tools, pure parts: what the model sees for an Agent's mcp tool, what it reads back
from a tools/call result, and what status and logs may show of a server URL."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx2
import mcp_types
import pytest

from kaizen_api.netguard import DestinationNotAllowed, display_url
from kaizen_api.netguard_httpx import guarded_client
from kaizen_api.v1alpha1.agent import Tool
from kaizen_gateway.tools import ToolRunner
from kaizen_gateway.tools.mcp import (
    MAX_CONTENT_CHARS,
    MCPConnections,
    MCPToolRunner,
    openai_tool,
    result_of,
    server_schema,
)

pytestmark = pytest.mark.unit

LISTED = mcp_types.Tool(
    name="lookup_order",
    description="Look up an order by its id.",
    input_schema={
        "type": "object",
        "properties": {"order_id": {"type": "string"}},
        "required": ["order_id"],
    },
)


def mcp_tool(**fields: Any) -> Tool:
    return Tool.model_validate(
        {"name": "find_order", "type": "mcp", "mcp": {"url": "http://tools:8000/mcp"}, **fields}
    )


def test_without_parameters_the_model_sees_the_servers_schema_under_the_agents_name() -> None:
    spec = openai_tool(mcp_tool(), LISTED)
    assert spec == {
        "type": "function",
        "function": {
            "name": "find_order",
            "description": "Look up an order by its id.",
            "parameters": LISTED.input_schema,
        },
    }


def test_the_agents_parameters_and_description_win_over_the_servers() -> None:
    mine = {"type": "object", "properties": {"order_id": {"type": "string", "pattern": "^A-"}}}
    spec = openai_tool(mcp_tool(parameters=mine, description="Find an order."), LISTED)
    assert spec["function"]["parameters"] == mine
    assert spec["function"]["description"] == "Find an order."


def test_a_server_not_listed_yet_or_listing_no_object_schema_gives_an_empty_object() -> None:
    empty = {"type": "object", "properties": {}}
    assert openai_tool(mcp_tool(), None)["function"]["parameters"] == empty
    odd = mcp_types.Tool(name="x", input_schema={"type": "string"})
    assert server_schema(odd) == empty
    bare = mcp_types.Tool(name="x", input_schema={"type": "object"})
    assert server_schema(bare) == empty  # providers want "properties" present


def test_the_runner_calls_the_servers_tool_name_and_is_a_tool_runner() -> None:
    mapped = MCPToolRunner(
        mcp_tool(mcp={"url": "http://tools:8000/mcp", "toolName": "lookup_order"}),
        MCPConnections(),
    )
    same = MCPToolRunner(mcp_tool(), MCPConnections())
    assert (mapped.name, mapped.remote_name) == ("find_order", "lookup_order")
    assert same.remote_name == "find_order"
    assert isinstance(mapped, ToolRunner)


def text(value: str) -> mcp_types.TextContent:
    return mcp_types.TextContent(type="text", text=value)


def test_text_parts_are_joined_and_other_parts_named_not_dropped() -> None:
    image = mcp_types.ImageContent(type="image", data="aGk=", mime_type="image/png")
    result = result_of(mcp_types.CallToolResult(content=[text("line 1"), image, text("line 2")]))
    assert result.ok
    assert result.content == "line 1\n[image image/png omitted]\nline 2"


def test_structured_content_is_given_when_there_is_no_text() -> None:
    result = result_of(
        mcp_types.CallToolResult(content=[], structured_content={"status": "shipped"})
    )
    assert (result.ok, result.content) == (True, '{"status":"shipped"}')


def test_an_error_the_tool_reports_is_a_failed_result_with_its_text() -> None:
    result = result_of(mcp_types.CallToolResult(content=[text("no such order")], is_error=True))
    assert (result.ok, result.reason) == (False, "tool_error")
    assert "no such order" in result.content


def test_an_answer_over_the_cap_is_refused_not_handed_to_the_model() -> None:
    result = result_of(mcp_types.CallToolResult(content=[text("x" * (MAX_CONTENT_CHARS + 1))]))
    assert (result.ok, result.reason) == (False, "too_large")
    assert len(result.content) < 200


def test_status_and_logs_show_no_credentials_query_or_fragment_of_a_url() -> None:
    shown = display_url("https://user:s3cret@tools.example:8443/mcp?token=abc#frag")
    assert shown == "https://tools.example:8443/mcp"
    assert display_url("http://[::1]:9000/sse") == "http://[::1]:9000/sse"


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data",
        "http://[::ffff:169.254.169.254]/",  # IPv4-mapped IPv6
        "http://[fe80::1]/",
    ],
)
def test_the_httpx2_guard_refuses_link_local_where_it_connects(url: str) -> None:
    """The check runs in the connection backend itself, on addresses as connected to."""

    async def get() -> None:
        async with guarded_client(allow_link_local=False, how_to_allow="allow it") as client:
            await client.get(url, timeout=5)

    with pytest.raises(DestinationNotAllowed, match="allow it"):
        asyncio.run(get())


def test_the_httpx2_guard_lets_loopback_through() -> None:
    """In-cluster and local services (the tests' tool servers) stay reachable."""

    async def get() -> None:
        async with guarded_client(allow_link_local=False, how_to_allow="-") as client:
            await client.get("http://127.0.0.1:9/", timeout=5)

    with pytest.raises(httpx2.ConnectError):  # connection refused: the guard let it try
        asyncio.run(get())
