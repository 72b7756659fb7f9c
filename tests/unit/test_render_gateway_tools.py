"""The Gateway's ToolsReachable condition: rendered from what the gateway pods report on
/readyz about the MCP servers of the agents they serve."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, timedelta

import pytest

from kaizen_operator.gateway.render import GatewayInputs, merge_tool_servers, render_gateway
from tests.support.objects import agent, gateway
from tests.unit.test_render_gateway import IMAGE, NOW, with_revisions

pytestmark = pytest.mark.unit

SHOP_URL = "http://user:s3cret@tools.shop.svc:8000/mcp?token=abc"
SHOWN = "http://tools.shop.svc:8000/mcp"


def shop_agent():
    return agent(
        "shop",
        tools=[
            {
                "name": "find_order",
                "type": "mcp",
                "mcp": {"url": SHOP_URL, "toolName": "lookup_order"},
            },
            {"name": "local", "description": "caller runs it"},
        ],
    )


def inputs(*bodies, tool_servers=None, status=None) -> GatewayInputs:
    agents, revisions = with_revisions(*bodies)
    names = [b["metadata"]["name"] for b in bodies]
    gw = gateway("dev", agents={"names": names}, status=status)
    return GatewayInputs(
        gw, agents, revisions, False, None, None, IMAGE, NOW, tool_servers=tool_servers
    )


def condition(plan):
    found = [c for c in plan.status["conditions"] if c["type"] == "ToolsReachable"]
    return found[0] if found else None


def page(reachable, reason=None, url=SHOWN, transport="streamable-http"):
    return {
        "ready": True,
        "mcpServers": [
            {"url": url, "transport": transport, "reachable": reachable, "reason": reason}
        ],
    }


def test_an_unreachable_mcp_server_names_agent_tool_and_url_without_secrets() -> None:
    reported = merge_tool_servers([page(False, "unreachable")])
    found = condition(render_gateway(inputs(shop_agent(), tool_servers=reported)))
    assert (found["status"], found["reason"]) == ("False", "MCPServerUnreachable")
    assert "agent shop tool find_order" in found["message"]
    assert SHOWN in found["message"]
    assert "s3cret" not in found["message"] and "token" not in found["message"]
    # the Gateway's readiness is about its pods, not its tool servers
    ready = next(
        c for c in render_gateway(inputs(shop_agent())).status["conditions"] if c["type"] == "Ready"
    )
    assert ready["reason"] != "MCPServerUnreachable"


def test_reachable_servers_make_the_condition_true() -> None:
    reported = merge_tool_servers([page(True)])
    found = condition(render_gateway(inputs(shop_agent(), tool_servers=reported)))
    assert (found["status"], found["reason"]) == ("True", "AllReachable")


def test_without_a_pods_report_or_probe_the_condition_is_unknown() -> None:
    nobody = condition(render_gateway(inputs(shop_agent(), tool_servers=None)))
    assert (nobody["status"], nobody["reason"]) == ("Unknown", "ToolServersNotProbed")
    not_yet = condition(
        render_gateway(inputs(shop_agent(), tool_servers=merge_tool_servers([page(None)])))
    )
    assert not_yet["status"] == "Unknown"


def test_one_pod_finding_a_server_down_is_enough() -> None:
    reported = merge_tool_servers([page(True), page(False, "timeout"), page(True)])
    found = condition(render_gateway(inputs(shop_agent(), tool_servers=reported)))
    assert found["status"] == "False"
    assert found["message"].endswith("timeout")


def test_a_pods_words_never_reach_the_status() -> None:
    """A reason that is not a short code (a hostile or broken pod) is not copied."""
    hostile = merge_tool_servers([page(False, "<script>steal()</script> " + "x" * 500)])
    found = condition(render_gateway(inputs(shop_agent(), tool_servers=hostile)))
    assert "script" not in found["message"] and "x" * 50 not in found["message"]
    assert found["message"].endswith("unreachable")


def test_no_mcp_tools_no_condition_and_it_goes_when_the_tools_go() -> None:
    plain = render_gateway(inputs(agent("plain"), tool_servers=()))
    assert condition(plain) is None
    before = render_gateway(
        inputs(shop_agent(), tool_servers=merge_tool_servers([page(False, "unreachable")]))
    )
    after = render_gateway(
        inputs(agent("shop"), status={"conditions": before.status["conditions"]})
    )
    assert condition(before) is not None and condition(after) is None


def test_the_transition_time_moves_only_when_reachability_flips() -> None:
    down = merge_tool_servers([page(False, "unreachable")])
    first = render_gateway(inputs(shop_agent(), tool_servers=down))
    later = NOW + timedelta(minutes=5)
    again = render_gateway(
        replace(
            inputs(
                shop_agent(), tool_servers=down, status={"conditions": first.status["conditions"]}
            ),
            now=later,
        )
    )
    assert condition(again)["lastTransitionTime"] == condition(first)["lastTransitionTime"]
    up = render_gateway(
        replace(
            inputs(
                shop_agent(),
                tool_servers=merge_tool_servers([page(True)]),
                status={"conditions": first.status["conditions"]},
            ),
            now=later,
        )
    )
    assert condition(up)["lastTransitionTime"] == later.astimezone(UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


def test_merging_ignores_malformed_pages() -> None:
    merged = merge_tool_servers([{"mcpServers": "nope"}, {"mcpServers": [1, None]}, page(True)])
    assert merged == ({"url": SHOWN, "transport": "streamable-http", "reachable": True},)
    assert merge_tool_servers([]) is None
