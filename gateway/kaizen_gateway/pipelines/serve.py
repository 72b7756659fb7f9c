"""The HTTP side of pipelines: ``POST /pipelines/{name}/invoke`` (the run with every
step, or an event stream of step events) and chat completions naming a pipeline as
the model. Auth, rate limits and error shapes are the agent routes' own (the caller
checks access before calling in here)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from kaizen_api.v1alpha1.bundle import BundledPipeline
from kaizen_gateway import metrics
from kaizen_gateway.answers import KEEPALIVE_LINE
from kaizen_gateway.bundle import LoadedBundle
from kaizen_gateway.chat import check_message
from kaizen_gateway.errors import GatewayError
from kaizen_gateway.loop import KEEPALIVE_SECONDS
from kaizen_gateway.pipelines.engine import Engine, PipelineResult
from kaizen_gateway.providers import dumps, encode

if TYPE_CHECKING:
    from kaizen_gateway.app import Gateway

EventQueue = asyncio.Queue[tuple[str, Any] | None]


def find(gw: Gateway, name: Any) -> tuple[LoadedBundle, BundledPipeline] | None:
    """The bundle snapshot and the pipeline it serves under ``name``, if any: the run
    keeps this snapshot to its end, whatever reloads meanwhile."""
    current = gw.bundles.current
    if current is None or not isinstance(name, str):
        return None
    pipeline = current.pipelines.get(name)
    return (current, pipeline) if pipeline is not None else None


def not_found(gw: Gateway, name: Any) -> GatewayError:
    current = gw.bundles.current
    served = ", ".join(sorted(current.pipelines)) if current else ""
    refused = current.refused.get(name) if current and isinstance(name, str) else None
    why = f": not served, {refused}" if refused else f" (serving: {served or 'none'})"
    return GatewayError(
        404,
        f"the pipeline {name!r} does not exist on this gateway{why}",
        code="model_not_found",
        param="model",
    )


@dataclass(frozen=True)
class Charge:
    """Who a pipeline run is metered to: its gateway, request id and caller."""

    gw: Gateway
    request_id: str
    caller: str


def account(
    charge: Charge,
    pipeline: BundledPipeline,
    status: int,
    started: float,
    result: PipelineResult | None,
    code: str | None = None,
) -> None:
    """Metrics and the one usage record of a pipeline run (usage summed over its steps)."""
    seconds = time.perf_counter() - started
    charge.gw.record_usage(
        kind="pipeline",
        name=pipeline.name,
        revision=pipeline.revision,
        model=pipeline.name,
        usage=result.usage if result is not None else None,
        cost=result.cost if result is not None else 0.0,
        seconds=seconds,
        status=status,
        request_id=charge.request_id,
        caller=charge.caller,
        code=code,
        tool_calls=len(result.steps) if result is not None else 0,
    )
    labels = (pipeline.name, str(pipeline.revision))
    metrics.PIPELINE_REQUESTS.labels(*labels, str(status)).inc()
    metrics.PIPELINE_LATENCY.labels(*labels).observe(seconds)
    if result is not None:
        metrics.PIPELINE_TOKENS.labels(*labels, "in").inc(result.usage.get("prompt_tokens", 0))
        metrics.PIPELINE_TOKENS.labels(*labels, "out").inc(result.usage.get("completion_tokens", 0))
        metrics.PIPELINE_COST.labels(*labels).inc(result.cost)


def headers(pipeline: BundledPipeline, request_id: str) -> dict[str, str]:
    return {
        "x-kaizen-pipeline": pipeline.name,
        "x-kaizen-pipeline-revision": str(pipeline.revision),
        "x-request-id": request_id,
    }


def error_response(exc: GatewayError, extra: dict[str, str]) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers={**exc.headers, **extra})


def engine_for(gw: Gateway, snapshot: LoadedBundle) -> Engine:
    return Engine(snapshot, gw.run_agent, gw.price)


async def _events(
    engine: Engine, pipeline: BundledPipeline, text: str
) -> AsyncIterator[tuple[str, Any]]:
    """Run the pipeline, yielding ("event", (name, data)) for each step event, ("delta",
    text) for the final step's answer as it comes, ("keepalive", None) when nothing
    happened for a while, and last ("result", PipelineResult) or ("error",
    GatewayError). Closing the iterator cancels the run."""
    queue: EventQueue = asyncio.Queue()
    engine.emit = lambda name, data: queue.put_nowait(("event", (name, data)))
    engine.on_text = lambda text: queue.put_nowait(("delta", text))
    task = asyncio.create_task(engine.run(pipeline, text))
    task.add_done_callback(lambda _: queue.put_nowait(None))
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
            except TimeoutError:
                yield "keepalive", None
                continue
            if item is None:
                break
            yield item
        try:
            yield "result", task.result()
        except GatewayError as exc:
            yield "error", exc
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, GatewayError):
                await task


async def invoke(gw: Gateway, request: Request, charge: Charge) -> Response:
    """``POST /pipelines/{name}/invoke`` after the access check: ``{"input": "...",
    "stream": false}``."""
    started = time.perf_counter()
    request_id = charge.request_id
    ids = {"x-request-id": request_id}
    try:
        body = await gw.read_json(request)
        name = request.path_params["name"]
        found = find(gw, name)
        if found is None:
            raise not_found(gw, name)
        text = body.get("input")
        if not isinstance(text, str) or not text:
            raise GatewayError(400, "input must be a non-empty string", param="input")
        stream = body.get("stream", "text/event-stream" in request.headers.get("accept", ""))
        if not isinstance(stream, bool):
            raise GatewayError(400, "stream must be a boolean", param="stream")
    except GatewayError as exc:
        return error_response(exc, ids)
    snapshot, pipeline = found
    engine = engine_for(gw, snapshot)
    if stream:
        return StreamingResponse(
            _native_sse(engine, pipeline, text, started, charge),
            media_type="text/event-stream",
            headers={**headers(pipeline, request_id), "cache-control": "no-cache"},
        )
    try:
        result = await engine.run(pipeline, text)
    except GatewayError as exc:
        account(charge, pipeline, exc.status, started, None, exc.code)
        return error_response(exc, headers(pipeline, request_id))
    account(charge, pipeline, 200, started, result)
    return JSONResponse(
        {**result.as_json(), **_timing(started, request_id)},
        headers=headers(pipeline, request_id),
    )


def _timing(started: float, request_id: str) -> dict[str, Any]:
    return {"latencyMs": round((time.perf_counter() - started) * 1000, 3), "requestId": request_id}


async def _native_sse(
    engine: Engine, pipeline: BundledPipeline, text: str, started: float, charge: Charge
) -> AsyncIterator[str]:
    """``step.started`` / ``step.finished`` per step, then ``pipeline.finished`` (the
    whole answer, as the plain invoke returns it) or ``error``."""
    status, code, request_id = 200, None, charge.request_id
    result: PipelineResult | None = None
    events = _events(engine, pipeline, text)
    try:
        async for kind, data in events:
            if kind == "keepalive":
                yield KEEPALIVE_LINE
            elif kind == "event":
                yield f"event: {data[0]}\ndata: {dumps(data[1])}\n\n"
            elif kind == "delta":
                yield f"event: delta\ndata: {dumps({'content': data})}\n\n"
            elif kind == "result":
                result = data
                payload = {**data.as_json(), **_timing(started, request_id)}
                yield f"event: pipeline.finished\ndata: {dumps(payload)}\n\n"
            else:
                status, code = data.status, data.code
                yield f"event: error\ndata: {dumps(data.body())}\n\n"
    finally:
        await events.aclose()  # type: ignore[attr-defined]
        account(charge, pipeline, status, started, result, code)


def chat_input(body: dict[str, Any]) -> str:
    """A pipeline's input from a chat request: the last user message (earlier messages
    are not sent to the steps; a pipeline keeps no conversation)."""
    messages = body.get("messages")
    if (
        not isinstance(messages, list)
        or not messages
        or not all(isinstance(m, dict) for m in messages)
    ):
        raise GatewayError(
            400, "messages must be a non-empty list of message objects", param="messages"
        )
    for i, message in enumerate(messages):
        check_message(i, message)
    last = next((m for m in reversed(messages) if m.get("role") == "user"), None)
    content = last.get("content") if last else None
    text = (
        content
        if isinstance(content, str)
        else " ".join(str(p.get("text", "")) for p in content or [] if p.get("type") == "text")
    )
    if not text:
        raise GatewayError(
            400,
            "a pipeline's input is the last user message, and there is none with text",
            param="messages",
        )
    return text


async def chat(
    gw: Gateway, body: dict[str, Any], found: tuple[LoadedBundle, BundledPipeline], charge: Charge
) -> Response:
    """Chat completions with a pipeline as the model (after the access check)."""
    started = time.perf_counter()
    request_id = charge.request_id
    snapshot, pipeline = found
    try:
        text = chat_input(body)
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise GatewayError(400, "stream must be a boolean", param="stream")
    except GatewayError as exc:
        account(charge, pipeline, exc.status, started, None, exc.code)
        return error_response(exc, headers(pipeline, request_id))
    engine = engine_for(gw, snapshot)
    if stream:
        return StreamingResponse(
            _chat_sse(engine, pipeline, text, started, charge),
            media_type="text/event-stream",
            headers={**headers(pipeline, request_id), "cache-control": "no-cache"},
        )
    try:
        result = await engine.run(pipeline, text)
    except GatewayError as exc:
        account(charge, pipeline, exc.status, started, None, exc.code)
        return error_response(exc, headers(pipeline, request_id))
    account(charge, pipeline, 200, started, result)
    answer = {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": pipeline.name,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.output},
                "finish_reason": "stop",
            }
        ],
        "usage": result.usage,
        "pipeline": _summary(result),
    }
    return Response(
        encode(answer), media_type="application/json", headers=headers(pipeline, request_id)
    )


def _summary(result: PipelineResult) -> dict[str, Any]:
    """What a chat answer tells of the run (an extra field OpenAI clients keep)."""
    out = result.as_json()
    out.pop("output")
    return out


def _chunk(
    request_id: str,
    model: str,
    delta: dict[str, Any],
    finish: str | None,
    usage: dict[str, int] | None = None,
) -> str:
    data: dict[str, Any] = {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage is not None:
        data["usage"] = usage
    return f"data: {dumps(data)}\n\n"


async def _chat_sse(
    engine: Engine, pipeline: BundledPipeline, text: str, started: float, charge: Charge
) -> AsyncIterator[str]:
    """OpenAI's chunk stream: a comment line per step event and while steps run (every
    SSE client skips them), the final step's answer as it comes (or the output in one
    chunk when the final step is not an agent's), the finish chunk with the summed
    usage, and ``[DONE]``; a failed run sends the error object instead."""
    status, code, streamed, request_id = 200, None, False, charge.request_id
    result: PipelineResult | None = None
    events = _events(engine, pipeline, text)
    name = pipeline.name
    yield _chunk(request_id, name, {"role": "assistant", "content": ""}, None)
    try:
        async for kind, data in events:
            if kind == "keepalive":
                yield KEEPALIVE_LINE
            elif kind == "event":
                yield f": {data[0]} {data[1]['name']}\n\n"
            elif kind == "delta":
                streamed = True
                yield _chunk(request_id, name, {"content": data}, None)
            elif kind == "result":
                result = data
                if not streamed:
                    yield _chunk(request_id, name, {"content": data.output}, None)
                yield _chunk(request_id, name, {}, "stop", data.usage)
            else:
                status, code = data.status, data.code
                yield f"data: {dumps(data.body())}\n\n"
    finally:
        await events.aclose()  # type: ignore[attr-defined]
        account(charge, pipeline, status, started, result, code)
    yield "data: [DONE]\n\n"
