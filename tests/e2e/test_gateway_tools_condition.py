"""An unreachable MCP server shows on the Gateway's status, on the real control plane:
the operator reads the serving gateway process's /readyz and sets ToolsReachable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kubernetes import client

from tests.e2e.test_operator_reconciles import apply_yaml, condition, gateway, get, mock_agent
from tests.support.kube import eventually
from tests.support.mcp_toolserver import MCPToolServer
from tests.support.processes import free_port, start_devrunner


def tools_condition(api_client: client.ApiClient, ns: str, status: str) -> dict[str, Any] | None:
    found = condition(get(api_client, ns, "gateways", "web"), "ToolsReachable")
    return found if found and found["status"] == status else None


def test_an_unreachable_mcp_server_is_a_gateway_condition_naming_agent_tool_and_url(
    operator: Any, crds: Path, api_client: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    server = MCPToolServer(free_port(), "streamable-http", tmp_path / "mcp.log").start()
    shop = mock_agent("shop")
    # a token in the query must never reach the status
    url_with_token = f"{server.url}?token=do-not-show"
    shop["spec"]["tools"] = [
        {
            "name": "find_order",
            "type": "mcp",
            "mcp": {"url": url_with_token, "toolName": "lookup_order"},
        }
    ]
    apply_yaml(crds, namespace, [shop, gateway("web", "dev", ["shop"])])
    endpoints = operator.endpoints / f"{namespace}.json"
    runner = start_devrunner(crds, namespace, tmp_path / "gateways", endpoints)
    try:
        eventually(
            lambda: (
                endpoints.exists() and json.loads(endpoints.read_text()).get(f"{namespace}/web")
            ),
            what="the gateway process",
        )
        up = eventually(
            lambda: tools_condition(api_client, namespace, "True"),
            timeout=150,
            what="ToolsReachable True",
        )
        assert up["reason"] == "AllReachable"
        server.kill()
        down = eventually(
            lambda: tools_condition(api_client, namespace, "False"),
            timeout=150,
            what="ToolsReachable False after the MCP server died",
        )
        assert down["reason"] == "MCPServerUnreachable"
        assert "agent shop tool find_order" in down["message"]
        assert server.url in down["message"]
        assert "do-not-show" not in json.dumps(get(api_client, namespace, "gateways", "web"))
        ready = condition(get(api_client, namespace, "gateways", "web"), "Ready")
        assert ready is not None and ready["reason"] != "MCPServerUnreachable"
        server.start()
        eventually(
            lambda: tools_condition(api_client, namespace, "True"),
            timeout=150,
            what="ToolsReachable True again once the server is back",
        )
    finally:
        runner.stop()
        server.stop()
