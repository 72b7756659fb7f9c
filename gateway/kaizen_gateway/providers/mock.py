"""The ``mock`` provider: deterministic answers, no network — for demos and tests."""

from __future__ import annotations

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


class MockProvider:
    """Answers ``[mock] <last user message>``; usage counts words."""

    def _answer(self, req: ChatRequest) -> str:
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
