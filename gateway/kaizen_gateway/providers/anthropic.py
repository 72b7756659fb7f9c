"""Anthropic Messages API, translated to and from the OpenAI chat shape."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from kaizen_api.v1alpha1.agent import ModelSpec
from kaizen_gateway.errors import GatewayError, UpstreamError
from kaizen_gateway.providers import (
    ChatRequest,
    UpstreamConfig,
    post_json,
    read_secret,
    sse_with_retries,
    with_retries,
)

ANTHROPIC_BASE = "https://api.anthropic.com"
VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 1024
STOP = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content or "")


def to_anthropic(req: ChatRequest) -> dict[str, Any]:
    """OpenAI chat request -> Anthropic Messages request."""
    system = "\n\n".join(_text(m.get("content")) for m in req.messages if m.get("role") == "system")
    messages: list[dict[str, Any]] = []
    for m in req.messages:
        role = m.get("role")
        if role == "system":
            continue
        if role == "tool":
            result = {
                "type": "tool_result",
                "tool_use_id": m.get("tool_call_id", ""),
                "content": _text(m.get("content")),
            }
            last = messages[-1] if messages else None
            if last and last["role"] == "user" and isinstance(last["content"], list):
                last["content"].append(result)  # all results of one turn in one message
            else:
                messages.append({"role": "user", "content": [result]})
        elif role == "assistant" and m.get("tool_calls"):
            blocks: list[dict[str, Any]] = (
                [{"type": "text", "text": _text(m.get("content"))}] if m.get("content") else []
            )
            for call in m["tool_calls"]:
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": call["id"],
                        "name": call["function"]["name"],
                        "input": json.loads(call["function"].get("arguments") or "{}"),
                    }
                )
            messages.append({"role": "assistant", "content": blocks})
        elif role in ("user", "assistant"):
            messages.append({"role": role, "content": _text(m.get("content"))})
        else:
            raise GatewayError(400, f"unsupported message role {role!r}", param="messages")
    p = req.params
    body: dict[str, Any] = {
        "model": req.model,
        "messages": messages,
        "max_tokens": p.get("max_tokens") or p.get("max_completion_tokens") or DEFAULT_MAX_TOKENS,
    }
    if system:
        body["system"] = system
    for key in ("temperature", "top_p"):
        if key in p:
            body[key] = p[key]
    if p.get("stop"):
        body["stop_sequences"] = p["stop"] if isinstance(p["stop"], list) else [p["stop"]]
    if p.get("tools"):
        body["tools"] = [
            {
                "name": t["function"]["name"],
                "description": t["function"].get("description", ""),
                "input_schema": t["function"].get("parameters") or {"type": "object"},
            }
            for t in p["tools"]
        ]
    return body


def _usage(u: dict[str, Any]) -> dict[str, int]:
    prompt, completion = int(u.get("input_tokens", 0)), int(u.get("output_tokens", 0))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def from_anthropic(resp: dict[str, Any], model: str) -> dict[str, Any]:
    """Anthropic Messages response -> OpenAI chat.completion."""
    text = "".join(b.get("text", "") for b in resp.get("content", []) if b.get("type") == "text")
    calls = [
        {
            "id": b["id"],
            "type": "function",
            "function": {"name": b["name"], "arguments": json.dumps(b.get("input", {}))},
        }
        for b in resp.get("content", [])
        if b.get("type") == "tool_use"
    ]
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = calls
    return {
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": STOP.get(resp.get("stop_reason", ""), "stop"),
            }
        ],
        "usage": _usage(resp.get("usage", {})),
    }


class AnthropicProvider:
    """Speaks /v1/messages (including its event stream)."""

    def __init__(
        self, spec: ModelSpec, cfg: UpstreamConfig, on_retry: Callable[[str], None]
    ) -> None:
        self.spec, self.cfg, self.on_retry = spec, cfg, on_retry

    def _target(self) -> tuple[str, dict[str, str]]:
        headers = {"anthropic-version": VERSION}  # content-type: post_json/sse_lines
        key = read_secret(self.cfg, self.spec)
        if key:
            headers["x-api-key"] = key
        return f"{(self.spec.endpoint or ANTHROPIC_BASE).rstrip('/')}/v1/messages", headers

    async def complete(self, req: ChatRequest) -> dict[str, Any]:
        url, headers = self._target()
        resp = await with_retries(
            self.cfg, lambda: post_json(self.cfg, url, to_anthropic(req), headers), self.on_retry
        )
        return from_anthropic(resp, req.model)

    async def stream(self, req: ChatRequest) -> AsyncIterator[dict[str, Any]]:
        url, headers = self._target()
        body = {**to_anthropic(req), "stream": True}
        usage: dict[str, Any] = {}
        tool_index: dict[int, int] = {}  # Anthropic content block -> OpenAI tool call index
        async for data in sse_with_retries(self.cfg, url, body, headers, self.on_retry):
            event = json.loads(data)
            kind = event.get("type")
            if kind == "message_start":
                usage.update(event["message"].get("usage", {}))
            elif kind == "content_block_delta" and event["delta"].get("type") == "text_delta":
                yield _chunk(req.model, {"content": event["delta"]["text"]}, None)
            elif kind == "content_block_start" and event["content_block"].get("type") == "tool_use":
                block = event["content_block"]
                index = tool_index[event.get("index", 0)] = len(tool_index)
                call = {
                    "index": index,
                    "id": block.get("id", ""),
                    "type": "function",
                    "function": {"name": block.get("name", ""), "arguments": ""},
                }
                yield _chunk(req.model, {"tool_calls": [call]}, None)
            elif kind == "content_block_delta" and event["delta"].get("type") == "input_json_delta":
                part = {
                    "index": tool_index.get(event.get("index", 0), 0),
                    "function": {"arguments": event["delta"].get("partial_json", "")},
                }
                yield _chunk(req.model, {"tool_calls": [part]}, None)
            elif kind == "message_delta":
                usage.update(event.get("usage", {}))
                reason = STOP.get(event.get("delta", {}).get("stop_reason") or "", "stop")
                yield {**_chunk(req.model, {}, reason), "usage": _usage(usage)}
            elif kind == "error":
                message = event.get("error", {}).get("message", "")
                raise UpstreamError(502, f"upstream error: {message}", retryable=False)


def _chunk(model: str, delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
    return {
        "object": "chat.completion.chunk",
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
