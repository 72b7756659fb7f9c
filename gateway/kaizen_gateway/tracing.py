"""OpenTelemetry spans of each request, named and attributed by the GenAI semantic
conventions, exported over OTLP/HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set; the exporter reads the other
``OTEL_EXPORTER_OTLP_*`` variables (headers, timeout, compression, certificates), the
SDK ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER`` and
``OTEL_BSP_*``.

Unset, nothing is set up: ``traced`` leaves handlers unwrapped, ``streamed`` leaves
streams as they are, and every other helper hands back one shared no-op handle.

The tree of a request:
    invoke_agent {agent}          SERVER, the whole request (stream included)
      retrieval                   INTERNAL, the knowledge lookup
      chat {model}                CLIENT, each model call of the agent loop
      execute_tool {tool}         INTERNAL, each server-side tool call

A pipeline run (``/pipelines/{name}/invoke``, or chat completions naming a pipeline):
    invoke_pipeline {pipeline}    SERVER, the whole run
      step {step}                 INTERNAL, each step (``step_span``)
        invoke_agent {agent}      INTERNAL, the step's agent (``agent_span``), and under
                                  it that agent's own spans as above
        (a nested pipeline's steps, for a step calling a Pipeline)

``traced`` opens the request span around a handler and, for a streamed answer, keeps it
current while the body streams (the loop's later steps run then) and ends it with the
last byte. Model, tool and retrieval spans are context managers that take the current
span as parent (``model_span``, ``tool_span``, ``retrieval_span``); ``streamed`` wraps a
provider's stream in a model span per call; ``start_request``/``start_model`` and
``.end()`` are the explicit forms.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from kaizen_api.v1alpha1.agent import ModelSpec
from kaizen_gateway.providers import ChatRequest

log = logging.getLogger("kaizen_gateway.tracing")

Handler = Callable[[Request], Awaitable[Response]]
Stream = Callable[[ChatRequest], AsyncIterator[dict[str, Any]]]
TRACE_HEADER = "x-kaizen-trace-id"
SCOPE = "kaizen_gateway"
_PROPAGATOR = TraceContextTextMapPropagator()
_tracer: Tracer | None = None
_provider: Any = None  # the SDK TracerProvider, when exporting

# Request parameters recorded on model spans: OpenAI name -> GenAI attribute.
_PARAMS = {
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "max_tokens": "gen_ai.request.max_tokens",
    "max_completion_tokens": "gen_ai.request.max_tokens",
    "presence_penalty": "gen_ai.request.presence_penalty",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "seed": "gen_ai.request.seed",
}


def exporting(env: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for traces to be exported."""
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "otlp").lower() == "none":
        return False
    return bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def configure(env: Mapping[str, str] = os.environ) -> bool:
    """Set up the SDK and the OTLP/HTTP exporter when the environment asks; True if so."""
    global _tracer, _provider
    if not exporting(env):
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if protocol != "http/protobuf":
        log.warning(
            "OTEL_EXPORTER_OTLP_PROTOCOL=%s is not supported; using http/protobuf", protocol
        )
    resource = Resource.create(
        {SERVICE_NAME: env.get("OTEL_SERVICE_NAME") or "kaizen-gateway"}
    )  # OTEL_RESOURCE_ATTRIBUTES are merged in by Resource.create
    _provider = TracerProvider(resource=resource)
    _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(_provider)
    _tracer = _provider.get_tracer(SCOPE)
    log.info("exporting traces over OTLP/HTTP")
    return True


def shutdown() -> None:
    """Export the spans still queued (at process exit)."""
    if _provider is not None:
        _provider.shutdown()


def enabled() -> bool:
    return _tracer is not None


class SpanHandle:
    """A span being recorded, or nothing (``NOOP``) when tracing is off."""

    __slots__ = ("span",)

    def __init__(self, span: Span | None) -> None:
        self.span = span

    @property
    def trace_id(self) -> str:
        """32 hex digits ("" when not tracing)."""
        if self.span is None:
            return ""
        return format(self.span.get_span_context().trace_id, "032x")

    def set(self, key: str, value: Any) -> None:
        if self.span is not None and value is not None:
            self.span.set_attribute(key, value)

    def response(self, result: Mapping[str, Any]) -> None:
        """Record a chat.completion (or the last chunk of a stream): id, model, finish
        reasons, token usage."""
        span = self.span
        if span is None:
            return
        if result.get("id"):
            span.set_attribute("gen_ai.response.id", str(result["id"]))
        if result.get("model"):
            span.set_attribute("gen_ai.response.model", str(result["model"]))
        reasons = [
            str(c["finish_reason"])
            for c in result.get("choices") or []
            if isinstance(c, dict) and c.get("finish_reason")
        ]
        if reasons:
            span.set_attribute("gen_ai.response.finish_reasons", reasons)
        self.usage(result.get("usage"))

    def usage(self, usage: Any) -> None:
        if self.span is None or not isinstance(usage, Mapping):
            return
        if "prompt_tokens" in usage:
            self.span.set_attribute("gen_ai.usage.input_tokens", int(usage["prompt_tokens"]))
        if "completion_tokens" in usage:
            self.span.set_attribute("gen_ai.usage.output_tokens", int(usage["completion_tokens"]))

    def retrieved(self, sources: list[dict[str, Any]]) -> None:
        """Record what a retrieval found."""
        if self.span is None:
            return
        self.span.set_attribute("kaizen.retrieval.chunks", len(sources))
        self.span.set_attribute(
            "kaizen.retrieval.sources",
            [f"{s['name']}/{s['document']}#{s['chunk']}" for s in sources],
        )

    def fail(self, error_type: str, message: str = "") -> None:
        """Mark the span failed (``error.type`` is a short class such as ``502`` or
        ``timeout``)."""
        if self.span is not None:
            self.span.set_attribute("error.type", error_type)
            self.span.set_status(Status(StatusCode.ERROR, message[:200] or None))

    def end(self) -> None:
        if self.span is not None:
            self.span.end()


NOOP = SpanHandle(None)


def start_request(
    agent: str,
    *,
    route: str,
    headers: Mapping[str, str],
    attributes: Mapping[str, Any] | None = None,
) -> SpanHandle:
    """The request's span, a child of the caller's W3C ``traceparent`` when it sends one."""
    if _tracer is None:
        return NOOP
    parent = _PROPAGATOR.extract(headers) if "traceparent" in headers else None
    span = _tracer.start_span(
        f"invoke_agent {agent}",
        context=parent,
        kind=SpanKind.SERVER,
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": agent,
            "http.request.method": "POST",
            "http.route": route,
            **{k: v for k, v in (attributes or {}).items() if v is not None},
        },
    )
    return SpanHandle(span)


@contextlib.contextmanager
def activate(handle: SpanHandle) -> Iterator[SpanHandle]:
    """Make ``handle`` the parent of the spans opened inside (it is not ended here)."""
    if handle.span is None:
        yield handle
        return
    with trace.use_span(handle.span, end_on_exit=False, record_exception=False):
        yield handle


def start_model(
    provider: str,
    model: str,
    params: Mapping[str, Any] | None = None,
    *,
    parent: SpanHandle | None = None,
    server: str | None = None,
) -> SpanHandle:
    """A model call's span (``chat {model}``); end it when the answer is complete.
    ``parent`` defaults to the current span."""
    if _tracer is None:
        return NOOP
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.system": provider,  # the name before semantic conventions 1.37
        "gen_ai.request.model": model,
    }
    for key, attribute in _PARAMS.items():
        value = (params or {}).get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            attributes[attribute] = value
    stop = (params or {}).get("stop")
    if stop:
        attributes["gen_ai.request.stop_sequences"] = [stop] if isinstance(stop, str) else stop
    if (params or {}).get("stream"):
        attributes["gen_ai.request.stream"] = True
    if server:  # the provider's base URL
        with contextlib.suppress(ValueError):
            url = urlsplit(server)
            if url.hostname:
                attributes["server.address"] = url.hostname
                attributes["server.port"] = url.port or (443 if url.scheme == "https" else 80)
    context = trace.set_span_in_context(parent.span) if parent and parent.span else None
    return SpanHandle(
        _tracer.start_span(
            f"chat {model}", context=context, kind=SpanKind.CLIENT, attributes=attributes
        )
    )


@contextlib.contextmanager
def model_span(
    provider: str,
    model: str,
    params: Mapping[str, Any] | None = None,
    *,
    server: str | None = None,
) -> Iterator[SpanHandle]:
    """A model call inside the current span; record the answer with ``.response()``.
    An exception marks the span failed and goes on."""
    handle = start_model(provider, model, params, server=server)
    try:
        yield handle
    except BaseException as exc:
        handle.fail(_error_type(exc), str(exc))
        raise
    finally:
        handle.end()


@contextlib.contextmanager
def tool_span(
    name: str, call_id: str | None = None, tool_type: str = "function"
) -> Iterator[SpanHandle]:
    """A server-side tool call (``execute_tool {name}``) inside the current span.
    ``tool_type``: ``function`` (http), ``extension`` (mcp) or ``datastore``."""
    if _tracer is None:
        yield NOOP
        return
    attributes = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": name,
        "gen_ai.tool.type": tool_type,
    }
    if call_id:
        attributes["gen_ai.tool.call.id"] = call_id
    with _tracer.start_as_current_span(
        f"execute_tool {name}",
        kind=SpanKind.INTERNAL,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        handle = SpanHandle(span)
        try:
            yield handle
        except BaseException as exc:
            handle.fail(_error_type(exc), str(exc))
            raise


@contextlib.contextmanager
def retrieval_span(agent: str, top_k: int) -> Iterator[SpanHandle]:
    """A knowledge lookup inside the current span; record hits with ``.retrieved()``."""
    if _tracer is None:
        yield NOOP
        return
    with _tracer.start_as_current_span(
        "retrieval",
        kind=SpanKind.INTERNAL,
        attributes={
            "gen_ai.operation.name": "retrieval",
            "gen_ai.data_source.id": agent,
            "gen_ai.retrieval.top_k": top_k,
        },
    ) as span:
        yield SpanHandle(span)


@contextlib.contextmanager
def step_span(pipeline: str, step: str, kind: str, target: str) -> Iterator[SpanHandle]:
    """One pipeline step (``step {step}``) inside the current span; what the step calls
    nests under it."""
    if _tracer is None:
        yield NOOP
        return
    with _tracer.start_as_current_span(
        f"step {step}",
        kind=SpanKind.INTERNAL,
        attributes={
            "kaizen.pipeline.name": pipeline,
            "kaizen.pipeline.step": step,
            "kaizen.pipeline.step.kind": kind,
            "kaizen.pipeline.step.target": target,
        },
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield SpanHandle(span)


@contextlib.contextmanager
def agent_span(agent: str, revision: int) -> Iterator[SpanHandle]:
    """An agent called by a pipeline step (``invoke_agent {agent}``), inside the
    current span; the agent loop's model and tool spans nest under it."""
    if _tracer is None:
        yield NOOP
        return
    with _tracer.start_as_current_span(
        f"invoke_agent {agent}",
        kind=SpanKind.INTERNAL,
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": agent,
            "kaizen.agent.revision": revision,
        },
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        handle = SpanHandle(span)
        try:
            yield handle
        except BaseException as exc:
            handle.fail(_error_type(exc), str(exc))
            raise


def _error_type(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    return str(status) if status is not None else exc.__class__.__name__


def traced(route: str) -> Callable[[Handler], Handler]:
    """Wrap a Starlette handler in the request span: the caller's ``traceparent`` is
    honoured, the trace id goes back in ``x-kaizen-trace-id``, and the agent, revision,
    request id and status are read off the response. A streamed answer's span ends with
    its last byte."""

    def wrap(handler: Handler) -> Handler:
        if _tracer is None:
            return handler

        async def run(request: Request) -> Response:
            span = start_request("", route=route, headers=request.headers)
            try:
                with activate(span):
                    response = await handler(request)
            except BaseException as exc:
                span.fail(_error_type(exc), str(exc))
                span.end()
                raise
            _finish(span, response)
            if isinstance(response, StreamingResponse):
                response.body_iterator = _within(response.body_iterator, span)
            else:
                span.end()
            return response

        return run

    return wrap


def _finish(span: SpanHandle, response: Response) -> None:
    headers = response.headers
    agent = headers.get("x-kaizen-agent")
    pipeline = headers.get("x-kaizen-pipeline")
    if span.span is not None and agent:
        span.span.update_name(f"invoke_agent {agent}")
        span.set("gen_ai.agent.name", agent)
    elif span.span is not None and pipeline:
        span.span.update_name(f"invoke_pipeline {pipeline}")
        span.set("gen_ai.operation.name", "invoke_pipeline")
        span.set("kaizen.pipeline.name", pipeline)
        span.set("kaizen.pipeline.revision", headers.get("x-kaizen-pipeline-revision"))
    revision = headers.get("x-kaizen-agent-revision")
    if revision:
        span.set("kaizen.agent.revision", int(revision))
    span.set("kaizen.request_id", headers.get("x-request-id"))
    span.set("http.response.status_code", response.status_code)
    if response.status_code >= 400:
        span.fail(str(response.status_code))
    headers[TRACE_HEADER] = span.trace_id


async def _within(body: AsyncIterable[Any], span: SpanHandle) -> AsyncIterator[Any]:
    """A streamed body run inside the request span (the loop's later model and tool
    calls happen while it streams, after the handler returned), which ends with it."""
    try:
        with activate(span):
            async for part in body:
                yield part
    finally:
        span.end()


def streamed(model: ModelSpec, stream: Stream) -> Stream:
    """``stream`` with a model span around each call (``stream`` itself when not
    tracing); closing the stream closes the upstream call and ends the span."""
    if _tracer is None:
        return stream

    async def spanned(chat: ChatRequest) -> AsyncIterator[dict[str, Any]]:
        span = start_model(
            model.provider, chat.model, {**chat.params, "stream": True}, server=model.endpoint
        )
        chunks = stream(chat)
        try:
            async for chunk in chunks:
                span.response(chunk)
                yield chunk
        except BaseException as exc:
            span.fail(_error_type(exc), str(exc))
            raise
        finally:
            span.end()
            await chunks.aclose()  # type: ignore[attr-defined]

    return spanned
