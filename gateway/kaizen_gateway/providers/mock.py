"""The ``mock`` provider: deterministic answers, no network — for demos and tests.

It answers ``[mock:<model>] <last user message>``. When tools are offered and the last
user message names one (``find_order {"id": "A-1"}``: the name, then optionally a JSON
object of arguments), it calls that tool instead; after tool results it answers
``[mock:<model>] <the results, joined by " | ">``. So the agent loop runs offline.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from kaizen_gateway.providers import ChatRequest


def _last_user_text(req: ChatRequest) -> str:
    for message in reversed(req.messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


def _tokens(text: str) -> int:
    return max(1, len(text.split()))


def tool_call(req: ChatRequest) -> dict[str, Any] | None:
    """The call of an offered tool the last user message names, if it does."""
    if not req.messages or req.messages[-1].get("role") != "user":
        return None
    text = _last_user_text(req)
    for tool in req.params.get("tools") or []:
        name = (tool.get("function") or {}).get("name") if isinstance(tool, dict) else None
        found = (
            re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])\s*(\{{.*\}})?", text)
            if name
            else None
        )
        if found is None:
            continue
        arguments = found.group(1) or "{}"
        try:
            valid = isinstance(json.loads(arguments), dict)
        except ValueError:
            valid = False
        return {
            "id": f"call_mock_{len(req.messages)}",
            "type": "function",
            "function": {"name": name, "arguments": arguments if valid else "{}"},
        }
    return None


class MockProvider:
    """Answers ``[mock] <last user message>`` (or calls a tool, module docstring); usage
    counts words."""

    def _answer(self, req: ChatRequest) -> str:
        results: list[str] = []
        for message in reversed(req.messages):
            if message.get("role") != "tool":
                break
            results.insert(0, str(message.get("content") or ""))
        if results:
            return f"[mock:{req.model}] {' | '.join(results)}"
        return f"[mock:{req.model}] {_last_user_text(req)}".strip()

    def _usage(self, req: ChatRequest, answer: str) -> dict[str, int]:
        prompt = sum(_tokens(str(m.get("content") or "")) for m in req.messages)
        completion = _tokens(answer)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    async def complete(self, req: ChatRequest) -> dict[str, Any]:
        call = tool_call(req)
        if call is not None:
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
            return {
                "object": "chat.completion",
                "created": int(time.time()),
                "model": req.model,
                "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
                "usage": self._usage(req, call["function"]["arguments"]),
            }
        answer = self._answer(req)
        return {
            "object": "chat.completion",
            "created": int(time.time()),
            "model": req.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer},
                    "finish_reason": "stop",
                }
            ],
            "usage": self._usage(req, answer),
        }

    async def stream(self, req: ChatRequest) -> AsyncIterator[dict[str, Any]]:
        call = tool_call(req)
        if call is not None:
            delta = {"role": "assistant", "tool_calls": [{**call, "index": 0}]}
            yield {
                "object": "chat.completion.chunk",
                "model": req.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
            }
            yield {
                "object": "chat.completion.chunk",
                "model": req.model,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}],
                "usage": self._usage(req, call["function"]["arguments"]),
            }
            return
        answer = self._answer(req)
        words = answer.split(" ")
        for i, word in enumerate(words):
            delta = {"role": "assistant", "content": word} if i == 0 else {"content": " " + word}
            yield {
                "object": "chat.completion.chunk",
                "model": req.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
            }
        yield {
            "object": "chat.completion.chunk",
            "model": req.model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "usage": self._usage(req, answer),
        }
