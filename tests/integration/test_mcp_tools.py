"""MCP tools against a real MCP server process (made with the official SDK), over
streamable HTTP and SSE: schema discovery, calls, toolName mapping, one session for
many calls, and a server killed mid-call."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from kaizen_api.v1alpha1.agent import MCPTransport, Tool
from kaizen_gateway.tools.mcp import MCPConnections, MCPToolRunner, ServerKey
from kaizen_operator.agent.render import AgentInputs, render_agent
from kaizen_operator.gateway.render import (
    GatewayInputs,
    merge_tool_servers,
    render_gateway,
    tools_condition,
)
from kaizen_operator.gatewaymetrics import read_readiness
from tests.support.mcp_toolserver import PATHS, MCPToolServer
from tests.support.objects import agent, gateway
from tests.support.processes import free_port, start, wait_http_ok

pytestmark = pytest.mark.integration

TRANSPORTS = ("streamable-http", "sse")


@pytest.fixture(scope="module", params=TRANSPORTS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MCPToolServer]:
    transport = str(request.param)
    tmp = tmp_path_factory.mktemp(transport)
    running = MCPToolServer(free_port(), transport, tmp / "mcp.log").start()
    yield running
    running.stop()


@pytest.fixture
def own_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MCPToolServer]:
    """A server this test may kill and restart."""
    running = MCPToolServer(free_port(), request.param, tmp_path / "mcp.log").start()
    yield running
    running.stop()


def runner(connections: MCPConnections, server: MCPToolServer, **fields: Any) -> MCPToolRunner:
    tool = Tool.model_validate(
        {
            "name": fields.pop("name", "lookup_order"),
            "type": "mcp",
            "mcp": {"url": server.url, "transport": server.transport, **fields.pop("mcp", {})},
            **fields,
        }
    )
    return MCPToolRunner(tool, connections)


def test_the_input_schema_comes_from_tools_list_when_the_agent_gives_none(
    server: MCPToolServer,
) -> None:
    async def scenario() -> dict[str, Any]:
        connections = MCPConnections()
        try:
            order = runner(connections, server)
            await order.prepare()
            return order.spec()
        finally:
            await connections.stop()

    spec = asyncio.run(scenario())
    function = spec["function"]
    assert function["name"] == "lookup_order"
    assert function["description"].startswith("Look up an order")
    assert function["parameters"]["properties"]["order_id"]["type"] == "string"
    assert function["parameters"]["required"] == ["order_id"]


def test_a_call_maps_the_models_tool_name_to_the_servers_and_returns_its_answer(
    server: MCPToolServer,
) -> None:
    async def scenario() -> tuple[Any, Any, dict[str, Any]]:
        connections = MCPConnections()
        try:
            find = runner(connections, server, name="find_order", mcp={"toolName": "lookup_order"})
            await find.prepare()
            found = await find.call({"order_id": "A-1001"}, timeout=10)
            summed = await runner(connections, server, name="add").call(
                {"a": 2, "b": 40}, timeout=10
            )
            return found, summed, find.spec()
        finally:
            await connections.stop()

    before = server.stats()["calls"].get("lookup_order", 0)
    found, summed, spec = asyncio.run(scenario())
    assert found.ok, found
    order = json.loads(found.content)
    assert order["order_id"] == "A-1001"
    assert order["status"] in ("processing", "shipped", "delivered")
    assert (summed.ok, summed.content) == (True, "42")
    # the model sees its own name, with the schema of the server's tool it maps to
    assert spec["function"]["name"] == "find_order"
    assert "order_id" in spec["function"]["parameters"]["properties"]
    assert server.stats()["calls"]["lookup_order"] == before + 1


def test_one_session_serves_many_calls_including_concurrent_ones(server: MCPToolServer) -> None:
    async def scenario() -> tuple[list[Any], int]:
        connections = MCPConnections()
        try:
            add = runner(connections, server, name="add")
            first = [await add.call({"a": i, "b": 1}, timeout=10) for i in range(5)]
            together = await asyncio.gather(
                *(add.call({"a": i, "b": 2}, timeout=10) for i in range(10))
            )
            return [*first, *together], connections.connects
        finally:
            await connections.stop()

    handshakes = server.stats()["handshakes"]
    results, connects = asyncio.run(scenario())
    assert [r.content for r in results[:5]] == ["1", "2", "3", "4", "5"]
    assert [r.content for r in results[5:]] == [str(i + 2) for i in range(10)]
    assert connects == 1
    assert server.stats()["handshakes"] == handshakes + 1


def test_a_tool_that_hangs_is_cut_at_the_timeout_and_the_session_survives(
    server: MCPToolServer,
) -> None:
    async def scenario() -> tuple[Any, Any, int]:
        connections = MCPConnections()
        try:
            hung = await runner(connections, server, name="sleep").call({"seconds": 30}, timeout=1)
            after = await runner(connections, server, name="add").call({"a": 1, "b": 1}, timeout=10)
            return hung, after, connections.connects
        finally:
            await connections.stop()

    hung, after, connects = asyncio.run(scenario())
    assert (hung.ok, hung.reason) == (False, "timeout")
    assert "sleep" in hung.content
    assert (after.ok, after.content, connects) == (True, "2", 1)


@pytest.mark.parametrize("own_server", TRANSPORTS, indirect=True)
def test_a_server_killed_mid_call_fails_the_call_and_the_runner_recovers_when_it_is_back(
    own_server: MCPToolServer,
) -> None:
    async def scenario() -> dict[str, Any]:
        connections = MCPConnections()
        key = ServerKey(own_server.url, MCPTransport(own_server.transport))
        connections.use({key: [("shop", "sleep")]})
        try:
            sleep = runner(connections, own_server, name="sleep")
            warm = await sleep.call({"seconds": 0}, timeout=10)
            # a long call; the server dies under it (the call's own bound is far away)
            pending = asyncio.create_task(sleep.call({"seconds": 60}, timeout=120))
            while own_server.stats()["calls"].get("sleep", 0) < 2:
                await asyncio.sleep(0.05)
            await asyncio.to_thread(own_server.kill)
            killed = await pending
            down = await sleep.call({"seconds": 0}, timeout=10)
            readiness_down = connections.readiness()
            await asyncio.to_thread(own_server.start)
            back = await sleep.call({"seconds": 0}, timeout=10)
            return {
                "warm": warm,
                "killed": killed,
                "down": down,
                "back": back,
                "readiness_down": readiness_down,
                "readiness_back": connections.readiness(),
            }
        finally:
            await connections.stop()

    seen = asyncio.run(scenario())
    assert seen["warm"].ok
    killed = seen["killed"]
    assert (killed.ok, killed.reason) == (False, "disconnected"), killed
    assert own_server.url.split("//")[1] in killed.content  # the model is told which server
    assert (seen["down"].ok, seen["down"].reason) == (False, "unreachable")
    assert seen["back"].ok and seen["back"].content == "slept 0s"
    (down,) = seen["readiness_down"]
    assert (down["reachable"], down["reason"]) == (False, "unreachable")
    assert down["tools"] == [{"agent": "shop", "tool": "sleep"}]
    (back,) = seen["readiness_back"]
    assert (back["reachable"], back["reason"]) == (True, None)
    assert own_server.stats()["handshakes"] == 1  # the restarted server saw one new session


def test_a_link_local_server_is_refused_before_any_connection() -> None:
    async def scenario() -> Any:
        connections = MCPConnections()
        tool = Tool.model_validate(
            {"name": "meta", "type": "mcp", "mcp": {"url": "http://169.254.169.254/mcp"}}
        )
        try:
            return await MCPToolRunner(tool, connections).call({}, timeout=10), connections
        finally:
            await connections.stop()

    result, connections = asyncio.run(scenario())
    assert (result.ok, result.reason) == (False, "refused")
    assert "link-local" in result.content
    assert connections.connects == 0


def test_the_gateways_readyz_reports_each_mcp_server_and_stays_ready(
    tmp_path: Path, server: MCPToolServer
) -> None:
    """The kaizen-gateway process, with a bundle rendered by the operator: a reachable
    and a dead MCP server show in /readyz details (what the operator reads for the
    Gateway's ToolsReachable condition), and the pod stays ready."""
    dead = f"http://127.0.0.1:{free_port()}{PATHS[server.transport]}"
    shop = agent(
        "shop",
        tools=[
            {
                "name": "find_order",
                "type": "mcp",
                "mcp": {
                    "url": server.url,
                    "transport": server.transport,
                    "toolName": "lookup_order",
                },
            },
            {"name": "legacy", "type": "mcp", "mcp": {"url": dead, "transport": server.transport}},
        ],
    )
    now = datetime.now(UTC)
    body = {**shop, "status": render_agent(AgentInputs(shop, (), None, None, now)).status}
    revisions = {"shop": render_agent(AgentInputs(shop, (), None, None, now)).create}
    plan = render_gateway(
        GatewayInputs(
            gateway("dev", agents={"names": ["shop"]}),
            (body,),
            revisions,
            False,
            None,
            None,
            "img",
            now,
        )
    )
    bundle = tmp_path / "bundle.json"
    bundle.write_text(
        next(c for c in plan.children if c["kind"] == "ConfigMap")["data"]["bundle.json"]
    )
    port = free_port()
    gw = start(
        ["kaizen-gateway", "--bundle", str(bundle), "--host", "127.0.0.1", "--port", str(port)],
        tmp_path / "gateway.log",
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http_ok(f"{url}/readyz", gw)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            resp = httpx.get(f"{url}/readyz", timeout=5)
            servers = {s["url"]: s for s in resp.json()["mcpServers"]}
            if all(s["reachable"] is not None for s in servers.values()):
                break
            time.sleep(0.2)
        assert resp.status_code == 200 and resp.json()["ready"] is True
        assert servers[server.url]["reachable"] is True
        assert servers[server.url]["tools"] == [{"agent": "shop", "tool": "find_order"}]
        assert (servers[dead]["reachable"], servers[dead]["reason"]) == (False, "unreachable")
        # what the operator reads and renders from it
        pages = asyncio.run(read_readiness([url]))
        reason, message = tools_condition(plan.bundle, merge_tool_servers(pages.values()))[1:]
        assert reason == "MCPServerUnreachable"
        assert "agent shop tool legacy" in message and dead in message
        assert "find_order" not in message
    finally:
        gw.stop()
