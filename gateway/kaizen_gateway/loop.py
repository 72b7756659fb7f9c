"""The agent loop: call the model; when it asks for the agent's server-side tools (http,
mcp), run them, give it their results and call it again, until it answers without
asking for one or a bound of ``spec.runtime`` stops it.

``LoopRun(...).events()`` is an async generator of events (tool started and finished, answer text,
keep-alives, and last the ``Outcome``), so one loop serves the plain answer, the OpenAI
stream and the native event stream alike.

Rules (docs/gateway.md, "The agent loop"):
- A step whose tool calls are all for the caller (``function`` tools, or tools the
  caller sent) ends the loop: the calls go back to the caller, as in OpenAI's API.
- A step mixing both runs nothing: the caller gets only its own calls. The caller's
  next request cannot carry the results of calls it never saw, so running the
  server-side ones would lose their results (and repeat any side effect when the model
  asks again); the model asks for them again once it has the caller's results.
- The last allowed step (``maxSteps``) or a spent ``tokenBudget`` ends the loop with
  finish_reason ``max_steps`` / ``token_budget`` and what the model said, if anything.
- The deadline (``timeout``) bounds every model and tool call; past it the caller gets
  a 504 ``deadline_exceeded`` error (there is no answer to give).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from kaizen_api.v1alpha1.agent import AgentSpec, RuntimeSpec
from kaizen_api.v1alpha1.common import parse_duration
from kaizen_gateway import metrics, tracing
from kaizen_gateway.errors import GatewayError
from kaizen_gateway.providers import ChatRequest
from kaizen_gateway.tools import ToolResult, ToolRunner, failed

log = logging.getLogger("kaizen_gateway.loop")

MAX_STEPS = "max_steps"
TOKEN_BUDGET = "token_budget"  # noqa: S105 - a finish reason
KEEPALIVE_SECONDS = 5.0  # an idle stream gets a comment line this often while tools run
DEFAULT_RUNTIME = RuntimeSpec()


@dataclass(frozen=True)
class Bounds:
    """An agent's ``spec.runtime``, parsed once per revision."""

    max_steps: int
    timeout: float
    token_budget: int | None
    max_concurrent_tools: int

    @classmethod
    def of(cls, spec: AgentSpec) -> Bounds:
        runtime = spec.runtime or DEFAULT_RUNTIME
        return cls(
            runtime.max_steps,
            parse_duration(runtime.timeout),
            runtime.token_budget,
            runtime.max_concurrent_tools,
        )


@dataclass(frozen=True)
class ToolStarted:
    step: int
    call_id: str
    tool: str


@dataclass(frozen=True)
class ToolFinished:
    step: int
    call_id: str
    tool: str
    ok: bool
    reason: str | None
    seconds: float


@dataclass(frozen=True)
class Delta:
    """A piece of the answer's text (streaming only), with the upstream chunk to forward."""

    chunk: dict[str, Any]
    text: str


class Keepalive:
    """Nothing happened for a while; a stream sends a comment line."""


KEEPALIVE = Keepalive()


@dataclass
class Outcome:
    """How the request ended."""

    message: dict[str, Any]  # the assistant message given to the caller
    finish_reason: str
    steps: int
    usage: dict[str, int]
    model_seconds: float
    tool_seconds: float
    completion: dict[str, Any] | None = None  # the last model answer (not streaming)
    fallback: str | None = None
    tools: list[ToolFinished] = field(default_factory=list)


Event = ToolStarted | ToolFinished | Delta | Keepalive | Outcome
Complete = Callable[[ChatRequest], Awaitable[dict[str, Any]]]
Stream = Callable[[ChatRequest], AsyncIterator[dict[str, Any]]]


def add_usage(total: dict[str, int], usage: Mapping[str, Any] | None) -> None:
    """Sum a step's token counts into the request's."""
    if not usage:
        return
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        value = usage.get(key)
        if isinstance(value, int):
            total[key] = total.get(key, 0) + value


def merge_tool_call_deltas(calls: dict[int, dict[str, Any]], deltas: list[Any]) -> None:
    """Accumulate streamed tool-call fragments (OpenAI's chunk format) by index."""
    for part in deltas:
        if not isinstance(part, dict):
            continue
        slot = calls.setdefault(
            int(part.get("index") or 0),
            {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
        )
        if part.get("id"):
            slot["id"] = part["id"]
        fn = part.get("function") or {}
        if fn.get("name"):
            slot["function"]["name"] += fn["name"]
        if fn.get("arguments"):
            slot["function"]["arguments"] += fn["arguments"]


def arguments_of(call: dict[str, Any]) -> dict[str, Any] | ToolResult:
    """A call's arguments as an object, or the failed result the model gets instead."""
    raw = (call.get("function") or {}).get("arguments") or "{}"
    try:
        value = json.loads(raw)
    except ValueError:
        return failed("bad_arguments", "the arguments are not valid JSON")
    if not isinstance(value, dict):
        return failed("bad_arguments", "the arguments must be a JSON object")
    return value


def split_calls(
    calls: list[dict[str, Any]], runners: Mapping[str, ToolRunner]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(server-side calls, the caller's calls)."""
    server = [c for c in calls if (c.get("function") or {}).get("name") in runners]
    caller = [c for c in calls if (c.get("function") or {}).get("name") not in runners]
    return server, caller


class LoopRun:
    """One request's loop: ``events()`` runs it; the time it waited is counted as it goes."""

    def __init__(
        self,
        agent: str,
        chat: ChatRequest,
        runners: Mapping[str, ToolRunner],
        bounds: Bounds,
        complete: Complete,
        stream: Stream | None,
    ) -> None:
        self.agent, self.chat, self.runners, self.bounds = agent, chat, runners, bounds
        self.complete, self.stream = complete, stream
        self.usage: dict[str, int] = {}
        self.model_seconds = 0.0
        self.tool_seconds = 0.0
        self.tools: list[ToolFinished] = []
        self.deadline = asyncio.get_running_loop().time() + bounds.timeout

    def _deadline_error(self, step: int) -> GatewayError:
        return GatewayError(
            504,
            f"agent {self.agent!r} did not finish within its deadline of "
            f"{self.bounds.timeout:g}s (spec.runtime.timeout), at step {step}",
            type_="server_error",
            code="deadline_exceeded",
        )

    def _outcome(
        self,
        message: dict[str, Any],
        finish: str,
        step: int,
        completion: dict[str, Any] | None = None,
    ) -> Outcome:
        metrics.STEPS.labels(self.agent).observe(step)
        metrics.LOOP_FINISHES.labels(self.agent, finish).inc()
        fallback = completion.pop("x_kaizen_fallback", None) if completion else None
        return Outcome(
            message,
            finish,
            step,
            self.usage,
            self.model_seconds,
            self.tool_seconds,
            completion,
            fallback,
            self.tools,
        )

    async def events(self) -> AsyncIterator[Event]:
        messages = list(self.chat.messages)
        for step in range(1, self.bounds.max_steps + 1):
            request = replace(self.chat, messages=messages) if step > 1 else self.chat
            completion: dict[str, Any] | None = None
            if self.stream is None:
                completion = await self._complete(request, step)
                choice = (completion.get("choices") or [{}])[0]
                message = dict(choice.get("message") or {"role": "assistant", "content": None})
                finish = choice.get("finish_reason") or "stop"
            else:
                message, finish = {}, "stop"
                async for event in self._stream_step(request, step, message):
                    if isinstance(event, str):
                        finish = event
                    else:
                        yield event
            calls = message.get("tool_calls") or []
            server, caller = split_calls(calls, self.runners) if calls else ([], [])
            if not server:
                yield self._outcome(message, finish, step, completion)
                return
            if caller:  # mixed: the caller's calls win (module docstring)
                yield self._outcome(
                    {**message, "tool_calls": caller}, "tool_calls", step, completion
                )
                return
            stop = (
                MAX_STEPS
                if step == self.bounds.max_steps
                else TOKEN_BUDGET
                if self.bounds.token_budget is not None
                and self.usage.get("total_tokens", 0) >= self.bounds.token_budget
                else None
            )
            if stop:
                message.pop("tool_calls", None)
                yield self._outcome(message, stop, step, completion)
                return
            for i, call in enumerate(server):
                call["id"] = call.get("id") or f"call_{step}_{i}"
            results: dict[int, ToolResult] = {}  # by position: ids may repeat
            async for event in self._run_tools(server, step, results):
                yield event
            if asyncio.get_running_loop().time() >= self.deadline:
                raise self._deadline_error(step)
            messages = [
                *messages,
                {
                    "role": "assistant",
                    "content": message.get("content"),
                    "tool_calls": server,
                },
                *(
                    {"role": "tool", "tool_call_id": c["id"], "content": results[i].content}
                    for i, c in enumerate(server)
                ),
            ]
        raise AssertionError("unreachable: the last step returns")

    async def _complete(self, request: ChatRequest, step: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout_at(self.deadline):
                result = await self.complete(request)
        except TimeoutError as exc:
            raise self._deadline_error(step) from exc
        finally:
            self.model_seconds += time.perf_counter() - t0
        add_usage(self.usage, result.get("usage"))
        return result

    async def _stream_step(
        self, request: ChatRequest, step: int, message: dict[str, Any]
    ) -> AsyncIterator[Event | str]:
        """Stream one model call: yields the answer's text while no tool call has shown
        up, fills ``message``, and yields the finish reason (a str) last."""
        assert self.stream is not None  # noqa: S101
        chunks = self.stream(request)
        parts: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        finish = "stop"
        pending: asyncio.Future[dict[str, Any] | None] | None = None
        try:
            first = step > 1  # the next step's first token may take long: keep alive
            while True:
                t0 = time.perf_counter()
                try:
                    if first:
                        first = False
                        pending = asyncio.ensure_future(anext(chunks, None))
                        while True:
                            left = self.deadline - asyncio.get_running_loop().time()
                            done, _ = await asyncio.wait(
                                {pending}, timeout=min(KEEPALIVE_SECONDS, max(left, 0))
                            )
                            if done:
                                break
                            if left <= KEEPALIVE_SECONDS:
                                pending.cancel()
                                raise TimeoutError
                            self.model_seconds += time.perf_counter() - t0
                            yield KEEPALIVE
                            t0 = time.perf_counter()
                        chunk = pending.result()
                    else:
                        async with asyncio.timeout_at(self.deadline):
                            chunk = await anext(chunks, None)
                except TimeoutError as exc:
                    raise self._deadline_error(step) from exc
                finally:
                    self.model_seconds += time.perf_counter() - t0
                if chunk is None:
                    break
                usage = chunk.get("usage")
                add_usage(self.usage, usage)
                choices = chunk.get("choices") or []
                if not choices:
                    continue
                choice = choices[0]
                delta = choice.get("delta") or {}
                if delta.get("tool_calls"):
                    merge_tool_call_deltas(calls, delta["tool_calls"])
                text = delta.get("content")
                if text:
                    parts.append(text)
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
                if calls:
                    continue  # a tool step: its text goes into the message only
                if usage or choice.get("finish_reason") or delta.get("tool_calls"):
                    if text:  # forward only the text of a closing chunk
                        yield Delta(_text_chunk(chunk, text), text)
                elif text or delta.get("role"):
                    yield Delta(chunk, text or "")
        finally:
            if pending is not None and not pending.done():
                pending.cancel()  # closed while waiting: the upstream call must stop too
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await pending
            await chunks.aclose()  # type: ignore[attr-defined]
        message.update(role="assistant", content="".join(parts) or None)
        if calls:
            message["tool_calls"] = [calls[i] for i in sorted(calls)]
        yield finish

    async def _run_tools(
        self, calls: list[dict[str, Any]], step: int, results: dict[int, ToolResult]
    ) -> AsyncIterator[Event]:
        """Run a step's server-side calls, at most ``max_concurrent_tools`` at a time."""
        gate = asyncio.Semaphore(self.bounds.max_concurrent_tools)
        t0 = time.perf_counter()

        async def one(position: int, call: dict[str, Any]) -> ToolFinished:
            name = call["function"]["name"]
            async with gate:
                started = time.perf_counter()
                with tracing.tool_span(name, call["id"], "extension") as span:
                    result = await self._call(self.runners[name], call)
                    if not result.ok:
                        span.fail(result.reason or "error")
                seconds = time.perf_counter() - started
            results[position] = result
            outcome = "ok" if result.ok else (result.reason or "error")
            metrics.TOOL_CALLS.labels(self.agent, name, outcome).inc()
            metrics.TOOL_LATENCY.labels(self.agent, name).observe(seconds)
            return ToolFinished(step, call["id"], name, result.ok, result.reason, seconds)

        pending = {asyncio.ensure_future(one(i, call)) for i, call in enumerate(calls)}
        for call in calls:
            yield ToolStarted(step, call["id"], call["function"]["name"])
        try:
            while pending:
                done, pending = await asyncio.wait(
                    pending, timeout=KEEPALIVE_SECONDS, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    yield KEEPALIVE
                for task in done:
                    finished = task.result()
                    self.tools.append(finished)
                    yield finished
        finally:
            for task in pending:
                task.cancel()
            self.tool_seconds += time.perf_counter() - t0

    async def _call(self, runner: ToolRunner, call: dict[str, Any]) -> ToolResult:
        arguments = arguments_of(call)
        if isinstance(arguments, ToolResult):
            return arguments
        left = self.deadline - asyncio.get_running_loop().time()
        if left <= 0:
            return failed("deadline", "the request's deadline passed before the tool ran")
        try:
            async with asyncio.timeout_at(self.deadline):
                return await runner.call(arguments, timeout=left)
        except TimeoutError:
            return failed("deadline", "the request's deadline passed while the tool ran")
        except Exception as exc:  # a runner's bug must not fail the request
            log.exception("tool %s of agent %s raised", runner.name, self.agent)
            return failed("error", exc.__class__.__name__)


def _text_chunk(chunk: dict[str, Any], text: str) -> dict[str, Any]:
    """An upstream chunk reduced to its text (its finish reason and usage come at the end)."""
    return {
        "object": "chat.completion.chunk",
        "created": chunk.get("created", 0),
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }


async def outcome_of(events: AsyncIterator[Event]) -> Outcome:
    """Run the loop to its end (no streaming)."""
    async for event in events:
        if isinstance(event, Outcome):
            return event
    raise AssertionError("the loop ended without an outcome")
