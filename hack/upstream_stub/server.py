"""`python -m upstream_stub.server --port N`: OpenAI + Anthropic protocol stub on 127.0.0.1.

Scripted answers (OpenAI protocol) make it act as a model that calls tools:
POST /_control {"scripts": {"<model>": [answer, ...]}} answers the model's next requests
with these answers in order (then the default echo again); {"<model>": {"always":
answer}} answers every request with one. An answer is a string (text) or an object:
  {"content": "text"}                  text; "{tools}" in it becomes the contents of the
                                       request's tool messages, joined by " | "
  {"tool_calls": [{"name": "lookup", "arguments": {...}}, ...]}
  optional "usage": {...} (replaces the counted usage), "delay": seconds
  {"tool_calls": [...], "until": N, "content": "text"}  tool calls while the request
                                       has fewer than N tool messages, then the text
                                       (one script for any number of concurrent loops)
GET /_control returns the last requests received (bodies included), so a test can check
what the model was sent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

STATE: dict[str, Any] = {
    "fail": [],
    "delay": 0.0,
    "requests": [],
    "broken_models": [],
    "scripts": {},
}


def _scripted(model: str) -> dict[str, Any] | None:
    """The next scripted answer for ``model`` (as an object), if one is set."""
    script = STATE["scripts"].get(model)
    if isinstance(script, dict):
        answer = script.get("always")
    elif script:
        answer = script.pop(0)
    else:
        return None
    return {"content": answer} if isinstance(answer, str) else answer


def _scripted_message(answer: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any]:
    done = sum(1 for m in messages if m.get("role") == "tool")
    if answer.get("tool_calls") and done < answer.get("until", done + 1):
        return {
            "role": "assistant",
            "content": answer.get("content"),
            "tool_calls": [
                {
                    "id": call.get("id") or f"call_{i}_{len(STATE['requests'])}",
                    "type": "function",
                    "function": {
                        "name": call["name"],
                        "arguments": json.dumps(call.get("arguments", {})),
                    },
                }
                for i, call in enumerate(answer["tool_calls"])
            ],
        }
    tools = " | ".join(str(m.get("content")) for m in messages if m.get("role") == "tool")
    return {
        "role": "assistant",
        "content": str(answer.get("content", "")).replace("{tools}", tools),
    }


def _scripted_response(body: dict[str, Any], answer: dict[str, Any]) -> Response:
    """A scripted answer, whole or as a chunk stream (tool-call arguments in two pieces,
    as real models stream them)."""
    message = _scripted_message(answer, body["messages"])
    words = len(str(message.get("content") or "").split())
    usage = answer.get("usage") or {
        "prompt_tokens": 11,
        "completion_tokens": words + 5 * len(message.get("tool_calls") or []),
    }
    usage.setdefault("total_tokens", usage["prompt_tokens"] + usage["completion_tokens"])
    finish = "tool_calls" if message.get("tool_calls") else "stop"
    if not body.get("stream"):
        return JSONResponse(
            {
                "id": "stub-1",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": usage,
            }
        )

    def chunk(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> str:
        data = {
            "id": "stub-1",
            "object": "chat.completion.chunk",
            "model": body["model"],
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            **extra,
        }
        return f"data: {json.dumps(data)}\n\n"

    async def chunks() -> AsyncIterator[str]:
        yield chunk({"role": "assistant", "content": ""})
        for i, word in enumerate(str(message.get("content") or "").split(" ")):
            if word:
                yield chunk({"content": word if i == 0 else " " + word})
        for i, call in enumerate(message.get("tool_calls") or []):
            args = call["function"]["arguments"]
            half = len(args) // 2
            yield chunk(
                {
                    "tool_calls": [
                        {
                            "index": i,
                            "id": call["id"],
                            "type": "function",
                            "function": {
                                "name": call["function"]["name"],
                                "arguments": args[:half],
                            },
                        }
                    ]
                }
            )
            yield chunk({"tool_calls": [{"index": i, "function": {"arguments": args[half:]}}]})
        yield chunk({}, finish)
        last = {
            "id": "stub-1",
            "object": "chat.completion.chunk",
            "model": body["model"],
            "choices": [],
            "usage": usage,
        }
        yield f"data: {json.dumps(last)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(chunks(), media_type="text/event-stream")


def _answer(messages: list[dict[str, Any]], system: str | None = None) -> str:
    last = next((m for m in reversed(messages) if m.get("role") == "user"), {"content": ""})
    content = last.get("content")
    text = (
        content if isinstance(content, str) else " ".join(p.get("text", "") for p in content or [])
    )
    prefix = f"[system:{len(system)}] " if system else ""
    return f"{prefix}stub says: {text}"


async def _maybe_fail(model: str = "") -> Response | None:
    if STATE["delay"]:
        await asyncio.sleep(STATE["delay"])
    if model in STATE["broken_models"]:
        return JSONResponse(
            {"error": {"message": f"model {model} is down", "type": "stub"}}, status_code=503
        )
    if STATE["fail"]:
        status = STATE["fail"].pop(0)
        return JSONResponse(
            {"error": {"message": f"injected {status}", "type": "stub"}},
            status_code=status,
            headers={"retry-after": "0"} if status == 429 else None,
        )
    return None


async def openai_chat(request: Request) -> Response:
    body = await request.json()
    STATE["requests"].append({"path": "openai", "headers": dict(request.headers), "body": body})
    failed = await _maybe_fail(body.get("model", ""))
    if failed:
        return failed
    scripted = _scripted(body.get("model", ""))
    if scripted is not None:
        if scripted.get("delay"):
            await asyncio.sleep(scripted["delay"])
        return _scripted_response(body, scripted)
    system = next((m["content"] for m in body["messages"] if m["role"] == "system"), None)
    answer = _answer(body["messages"], system)
    usage = {
        "prompt_tokens": 11,
        "completion_tokens": len(answer.split()),
        "total_tokens": 11 + len(answer.split()),
    }
    if body.get("tools") and "call a tool" in answer:
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": body["tools"][0]["function"]["name"], "arguments": "{}"},
                }
            ],
        }
        return JSONResponse(
            {
                "id": "stub-1",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
                "usage": usage,
            }
        )
    if not body.get("stream"):
        return JSONResponse(
            {
                "id": "stub-1",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": answer},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            }
        )

    async def chunks() -> AsyncIterator[str]:
        for i, word in enumerate(answer.split(" ")):
            delta = {"role": "assistant", "content": word} if i == 0 else {"content": " " + word}
            yield (
                "data: "
                + json.dumps(
                    {
                        "id": "stub-1",
                        "object": "chat.completion.chunk",
                        "model": body["model"],
                        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
                    }
                )
                + "\n\n"
            )
        yield (
            "data: "
            + json.dumps(
                {
                    "id": "stub-1",
                    "object": "chat.completion.chunk",
                    "model": body["model"],
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                    "usage": usage,
                }
            )
            + "\n\n"
        )
        yield "data: [DONE]\n\n"

    return StreamingResponse(chunks(), media_type="text/event-stream")


def _scripted_anthropic(body: dict[str, Any], answer: dict[str, Any]) -> Response:
    """A scripted answer in the Messages API's shape (text and tool_use blocks)."""
    results = [
        str(part.get("content"))
        for m in body["messages"]
        if isinstance(m.get("content"), list)
        for part in m["content"]
        if part.get("type") == "tool_result"
    ]
    blocks: list[dict[str, Any]] = []
    text = str(answer.get("content") or "").replace("{tools}", " | ".join(results))
    if text:
        blocks.append({"type": "text", "text": text})
    for i, call in enumerate(answer.get("tool_calls") or []):
        blocks.append(
            {
                "type": "tool_use",
                "id": f"toolu_{i}_{len(STATE['requests'])}",
                "name": call["name"],
                "input": call.get("arguments", {}),
            }
        )
    stop = "tool_use" if answer.get("tool_calls") else "end_turn"
    usage = {"input_tokens": 13, "output_tokens": 7}
    if not body.get("stream"):
        return JSONResponse(
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": blocks,
                "stop_reason": stop,
                "usage": usage,
            }
        )

    def ev(kind: str, data: dict[str, Any]) -> str:
        return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n"

    async def events() -> AsyncIterator[str]:
        start = {"id": "msg_1", "role": "assistant", "model": body["model"], "content": []}
        yield ev("message_start", {"message": {**start, "usage": {**usage, "output_tokens": 0}}})
        for index, block in enumerate(blocks):
            if block["type"] == "text":
                yield ev(
                    "content_block_start",
                    {"index": index, "content_block": {"type": "text", "text": ""}},
                )
                for word in block["text"].split(" "):
                    delta = {"type": "text_delta", "text": word + " "}
                    yield ev("content_block_delta", {"index": index, "delta": delta})
            else:
                started = {**block, "input": {}}
                yield ev("content_block_start", {"index": index, "content_block": started})
                args = json.dumps(block["input"])
                for part in (args[: len(args) // 2], args[len(args) // 2 :]):
                    delta = {"type": "input_json_delta", "partial_json": part}
                    yield ev("content_block_delta", {"index": index, "delta": delta})
            yield ev("content_block_stop", {"index": index})
        yield ev("message_delta", {"delta": {"stop_reason": stop}, "usage": {"output_tokens": 7}})
        yield ev("message_stop", {})

    return StreamingResponse(events(), media_type="text/event-stream")


async def anthropic_messages(request: Request) -> Response:
    body = await request.json()
    STATE["requests"].append({"path": "anthropic", "headers": dict(request.headers), "body": body})
    failed = await _maybe_fail()
    if failed:
        return failed
    scripted = _scripted(body.get("model", ""))
    if scripted is not None:
        return _scripted_anthropic(body, scripted)
    answer = _answer(body["messages"], body.get("system"))
    usage = {"input_tokens": 13, "output_tokens": len(answer.split())}
    if not body.get("stream"):
        return JSONResponse(
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": [{"type": "text", "text": answer}],
                "stop_reason": "end_turn",
                "usage": usage,
            }
        )

    async def events() -> AsyncIterator[str]:
        def ev(kind: str, data: dict[str, Any]) -> str:
            return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n"

        yield ev(
            "message_start",
            {
                "message": {
                    "id": "msg_1",
                    "role": "assistant",
                    "model": body["model"],
                    "content": [],
                    "usage": {"input_tokens": 13, "output_tokens": 0},
                }
            },
        )
        yield ev("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
        for i, word in enumerate(answer.split(" ")):
            yield ev(
                "content_block_delta",
                {
                    "index": 0,
                    "delta": {"type": "text_delta", "text": word if i == 0 else " " + word},
                },
            )
        yield ev("content_block_stop", {"index": 0})
        yield ev(
            "message_delta",
            {
                "delta": {"stop_reason": "end_turn"},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        )
        yield ev("message_stop", {})

    return StreamingResponse(events(), media_type="text/event-stream")


async def control(request: Request) -> Response:
    """Configure failures/delay; GET returns what the stub received."""
    if request.method == "POST":
        STATE.update(await request.json())
        return JSONResponse({"ok": True})
    return JSONResponse({"requests": STATE["requests"][-50:], "count": len(STATE["requests"])})


app = Starlette(
    routes=[
        Route("/v1/chat/completions", openai_chat, methods=["POST"]),
        Route("/openai/deployments/{deployment}/chat/completions", openai_chat, methods=["POST"]),
        Route("/v1/messages", anthropic_messages, methods=["POST"]),
        Route("/_control", control, methods=["GET", "POST"]),
    ]
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
    )


if __name__ == "__main__":
    main()
