"""The agent loop's pure parts: streamed tool-call assembly, which calls the gateway
runs, argument parsing, usage sums, GET query strings and the runtime bounds."""

from __future__ import annotations

import pytest

from kaizen_api.v1alpha1.agent import AgentSpec
from kaizen_gateway.loop import Bounds, add_usage, arguments_of, merge_tool_call_deltas, split_calls
from kaizen_gateway.providers import ChatRequest
from kaizen_gateway.providers.mock import tool_call
from kaizen_gateway.tools.http import query


def call(name: str, arguments: str = "{}") -> dict:
    return {
        "id": f"id-{name}",
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


def test_streamed_tool_call_fragments_are_joined_by_index() -> None:
    calls: dict = {}
    merge_tool_call_deltas(
        calls,
        [
            {
                "index": 0,
                "id": "a",
                "type": "function",
                "function": {"name": "get", "arguments": '{"ci'},
            },
            {"index": 1, "id": "b", "function": {"name": "put", "arguments": ""}},
        ],
    )
    merge_tool_call_deltas(calls, [{"index": 0, "function": {"arguments": 'ty":"Rome"}'}}])
    merge_tool_call_deltas(calls, [{"index": 1, "function": {"arguments": "{}"}}, "junk"])
    assert calls[0] == {
        "id": "a",
        "type": "function",
        "function": {"name": "get", "arguments": '{"city":"Rome"}'},
    }
    assert calls[1]["function"] == {"name": "put", "arguments": "{}"}


def test_calls_split_into_server_side_and_the_callers() -> None:
    runners = {"forecast": object()}
    server, caller = split_calls([call("forecast"), call("ask_user"), call("forecast")], runners)  # type: ignore[arg-type]
    assert [c["function"]["name"] for c in server] == ["forecast", "forecast"]
    assert [c["function"]["name"] for c in caller] == ["ask_user"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [('{"a": 1}', {"a": 1}), ("", {}), (None, {})],
)
def test_arguments_are_a_json_object(raw: str | None, expected: dict) -> None:
    assert arguments_of({"function": {"arguments": raw}}) == expected


@pytest.mark.parametrize(
    ("raw", "says"), [("{not json", "not valid JSON"), ("[1, 2]", "a JSON object")]
)
def test_bad_arguments_become_a_failed_result_for_the_model(raw: str, says: str) -> None:
    result = arguments_of({"function": {"arguments": raw}})
    assert not isinstance(result, dict)
    assert not result.ok and result.reason == "bad_arguments" and says in result.content


def test_usage_sums_over_steps_and_ignores_what_is_not_a_count() -> None:
    total: dict[str, int] = {}
    add_usage(total, {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12})
    add_usage(total, {"prompt_tokens": 15, "completion_tokens": 3, "total_tokens": 18, "x": "y"})
    add_usage(total, None)
    assert total == {"prompt_tokens": 25, "completion_tokens": 5, "total_tokens": 30}


def test_get_arguments_become_query_parameters_without_dropping_any() -> None:
    assert query(
        {"city": "Paris", "days": 3, "metric": True, "tags": ["a", "b"], "none": None}
    ) == {
        "city": "Paris",
        "days": "3",
        "metric": "true",
        "tags": '["a","b"]',
    }


def test_bounds_default_and_parse_the_runtime() -> None:
    spec = {"model": {"provider": "mock", "name": "m"}}
    assert Bounds.of(AgentSpec.model_validate(spec)) == Bounds(8, 120.0, None, 4)
    custom = AgentSpec.model_validate(
        {
            **spec,
            "runtime": {
                "maxSteps": 2,
                "timeout": "1m30s",
                "tokenBudget": 500,
                "maxConcurrentTools": 1,
            },
        }
    )
    assert Bounds.of(custom) == Bounds(2, 90.0, 500, 1)


@pytest.mark.parametrize("timeout", ["0s", "2h"])
def test_a_deadline_out_of_range_is_refused(timeout: str) -> None:
    with pytest.raises(ValueError, match="timeout must be between 1s and 60m"):
        AgentSpec.model_validate(
            {"model": {"provider": "mock", "name": "m"}, "runtime": {"timeout": timeout}}
        )


OFFERED = {"tools": [{"type": "function", "function": {"name": "find_order"}}]}


@pytest.mark.parametrize(
    ("text", "arguments"),
    [
        ('find_order {"id": "A-1"}', '{"id": "A-1"}'),
        ("please find_order now", "{}"),
        ("find_order {not json}", "{}"),
    ],
)
def test_the_mock_model_calls_a_tool_the_user_names(text: str, arguments: str) -> None:
    call = tool_call(ChatRequest("m", [{"role": "user", "content": text}], OFFERED))
    assert call is not None and call["function"] == {"name": "find_order", "arguments": arguments}


@pytest.mark.parametrize(
    ("messages", "params"),
    [
        ([{"role": "user", "content": "find_orders please"}], OFFERED),  # another word
        ([{"role": "user", "content": "find_order"}], {}),  # not offered
        ([{"role": "user", "content": "find_order"}, {"role": "tool", "content": "x"}], OFFERED),
    ],
)
def test_the_mock_model_calls_no_tool_otherwise(messages: list, params: dict) -> None:
    assert tool_call(ChatRequest("m", messages, params)) is None
