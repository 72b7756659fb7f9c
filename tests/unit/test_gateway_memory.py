"""Conversation memory's pure parts: ids, identities, what is recalled, the summary ask."""

from __future__ import annotations

import json

import pytest

from kaizen_gateway.errors import GatewayError
from kaizen_gateway.memory import (
    ANONYMOUS,
    SUMMARY_INSTRUCTIONS,
    _recalled,
    caller_identity,
    check_conversation_id,
    summary_request,
)
from kaizen_gateway.redislink import redacted


def test_conversation_ids_are_short_plain_tokens() -> None:
    assert check_conversation_id("user-42:chat.1_a", "p") == "user-42:chat.1_a"
    for bad in ("", "a b", "x" * 129, "../x", 7, None):
        with pytest.raises(GatewayError) as err:
            check_conversation_id(bad, "conversationId")
        assert err.value.status == 400
        assert err.value.param == "conversationId"


def test_callers_are_told_apart_by_a_hash_of_their_key_and_the_key_is_not_stored() -> None:
    a, b = caller_identity("key-a"), caller_identity("key-b")
    assert a != b and "key-a" not in a
    assert caller_identity(None) == caller_identity("") == ANONYMOUS


def test_recalled_history_starts_with_the_summary_and_never_with_orphan_tool_results() -> None:
    turns = [
        json.dumps([{"role": "tool", "tool_call_id": "c1", "content": "42"}]).encode(),
        json.dumps(
            [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
        ).encode(),
    ]
    messages = _recalled(b"they like tea", turns)
    assert messages[0] == {
        "role": "system",
        "content": "Summary of the earlier conversation:\nthey like tea",
    }
    assert [m["role"] for m in messages[1:]] == ["user", "assistant"]
    assert _recalled(None, []) == []


def test_the_summary_ask_carries_the_previous_summary_and_the_new_turns() -> None:
    ask = summary_request("likes tea", [[{"role": "user", "content": "and cake"}]])
    assert ask[0] == {"role": "system", "content": SUMMARY_INSTRUCTIONS}
    assert "likes tea" in ask[1]["content"] and "user: and cake" in ask[1]["content"]


def test_redis_passwords_stay_out_of_logs() -> None:
    assert (
        redacted("redis://app:s3cret@redis.example:6380/0")
        == "redis://app:***@redis.example:6380/0"
    )
    assert redacted("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
