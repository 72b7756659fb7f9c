"""How the agent loop's outcome and events reach the caller: OpenAI's chat.completion
and chunk stream, and the native invoke body and its event stream."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from kaizen_gateway.errors import GatewayError
from kaizen_gateway.loop import Delta, Event, Keepalive, Outcome, ToolFinished, ToolStarted
from kaizen_gateway.providers import dumps

KEEPALIVE_LINE = ": keepalive\n\n"


def completion(outcome: Outcome, agent: str, request_id: str) -> dict[str, Any]:
    """The ``chat.completion`` body of a finished loop."""
    body = dict(outcome.completion or {"object": "chat.completion", "created": int(time.time())})
    body["id"] = body.get("id") or f"chatcmpl-{request_id}"
    body["model"] = agent
    body["choices"] = [
        {"index": 0, "message": outcome.message, "finish_reason": outcome.finish_reason}
    ]
    body["usage"] = outcome.usage
    return body


def tool_run(event: ToolFinished) -> dict[str, Any]:
    """One tool call as the native API reports it."""
    return {
        "step": event.step,
        "id": event.call_id,
        "tool": event.tool,
        "ok": event.ok,
        "reason": event.reason,
        "ms": round(event.seconds * 1000, 3),
    }


def native(
    outcome: Outcome, agent: str, revision: int, started: float, request_id: str
) -> dict[str, Any]:
    """The native invoke answer."""
    return {
        "agent": agent,
        "revision": revision,
        "output": outcome.message.get("content") or "",
        "toolCalls": outcome.message.get("tool_calls") or [],
        "finishReason": outcome.finish_reason,
        "steps": outcome.steps,
        "toolRuns": [tool_run(t) for t in outcome.tools],
        "usage": outcome.usage,
        "latencyMs": round((time.perf_counter() - started) * 1000, 3),
        "requestId": request_id,
    }


def _chunk(chunk_id: str, agent: str, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": agent,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


async def chat_sse(
    first: Event,
    events: AsyncIterator[Event],
    agent: str,
    request_id: str,
    done: Callable[[int, Outcome | None], None],
    on_text: Callable[[], None],
) -> AsyncIterator[str]:
    """OpenAI's chunk stream: the answer's text as it comes, comment lines while tools
    run (every SSE client skips them), then one chunk with the finish reason and the
    usage summed over the steps. ``done(status, outcome)`` is called once at the end."""
    chunk_id = f"chatcmpl-{request_id}"
    status, outcome, texted = 200, None, False
    try:
        event: Event | None = first
        while event is not None:
            if isinstance(event, Delta):
                if not texted:
                    texted = True
                    on_text()
                event.chunk.update(id=chunk_id, model=agent)
                yield f"data: {dumps(event.chunk)}\n\n"
            elif isinstance(event, Outcome):
                outcome = event
                calls = event.message.get("tool_calls")
                if calls:
                    delta = {
                        "role": "assistant",
                        "tool_calls": [{**c, "index": i} for i, c in enumerate(calls)],
                    }
                    yield f"data: {dumps(_chunk(chunk_id, agent, delta, None))}\n\n"
                last = _chunk(chunk_id, agent, {}, event.finish_reason)
                last["usage"] = event.usage
                yield f"data: {dumps(last)}\n\n"
                break
            elif isinstance(event, ToolStarted):
                yield f": tool {event.tool} started\n\n"
            elif isinstance(event, ToolFinished):
                yield f": tool {event.tool} {'ok' if event.ok else event.reason}\n\n"
            elif isinstance(event, Keepalive):
                yield KEEPALIVE_LINE
            event = await anext(events, None)
    except GatewayError as exc:
        status = exc.status
        yield f"data: {dumps(exc.body())}\n\n"
    finally:
        await events.aclose()  # type: ignore[attr-defined]
        done(status, outcome)
    yield "data: [DONE]\n\n"


async def native_sse(
    first: Event,
    events: AsyncIterator[Event],
    finish: Callable[[Outcome], dict[str, Any]],
    done: Callable[[int, Outcome | None], None],
) -> AsyncIterator[str]:
    """The native event stream: ``tool_started``, ``tool_finished`` (with timings),
    ``delta`` (answer text), then ``done`` (the native answer) or ``error``."""
    status, outcome = 200, None
    try:
        event: Event | None = first
        while event is not None:
            if isinstance(event, Delta):
                if event.text:
                    yield f"event: delta\ndata: {dumps({'content': event.text})}\n\n"
            elif isinstance(event, ToolStarted):
                data = {"step": event.step, "id": event.call_id, "tool": event.tool}
                yield f"event: tool_started\ndata: {dumps(data)}\n\n"
            elif isinstance(event, ToolFinished):
                yield f"event: tool_finished\ndata: {dumps(tool_run(event))}\n\n"
            elif isinstance(event, Keepalive):
                yield KEEPALIVE_LINE
            elif isinstance(event, Outcome):
                outcome = event
                yield f"event: done\ndata: {dumps(finish(event))}\n\n"
                break
            event = await anext(events, None)
    except GatewayError as exc:
        status = exc.status
        yield f"event: error\ndata: {dumps(exc.body())}\n\n"
    finally:
        await events.aclose()  # type: ignore[attr-defined]
        done(status, outcome)
