"""The gateway's HTTP API (Starlette on uvicorn): OpenAI-compatible chat completions,
models, a native invoke endpoint, health, readiness and metrics.

Starlette rather than FastAPI: the data plane needs no schema docs or dependency
injection, and every microsecond of overhead is added to each model call.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client import generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from kaizen_api.metering import UsageRecord
from kaizen_api.mounted import MountedFiles
from kaizen_api.netguard_aiohttp import guarded_connector
from kaizen_api.v1alpha1.agent import ToolType
from kaizen_api.v1alpha1.bundle import KNOWLEDGE_MOUNT, SECRETS_MOUNT, BundledAgent
from kaizen_api.v1alpha1.gateway import requires_api_key
from kaizen_gateway import answers, metrics, tracing
from kaizen_gateway.budgets import Budgets
from kaizen_gateway.bundle import BundleHolder
from kaizen_gateway.chat import (
    PARAM_KEYS,
    PASSTHROUGH,
    check_message,
    check_params,
    refuse_constant,
)
from kaizen_gateway.errors import GatewayError, UpstreamError
from kaizen_gateway.knowledge import KnowledgeBase
from kaizen_gateway.loop import Bounds, Delta, Event, LoopRun, Outcome, outcome_of
from kaizen_gateway.memory import (
    CONVERSATION_HEADER,
    ConversationMemory,
    Recall,
    caller_identity,
    check_conversation_id,
)
from kaizen_gateway.pipelines import serve as pipelines
from kaizen_gateway.providers import (
    HOW_TO_ALLOW,
    SECRET_MAX_AGE,
    ChatRequest,
    UpstreamConfig,
    encode,
    provider_for,
)
from kaizen_gateway.ratelimit import KeyedBuckets, SharedBuckets, TokenBucket
from kaizen_gateway.redislink import RedisLink, RedisUnavailable
from kaizen_gateway.tools import RunnerFactory, ToolRunner, runners_for
from kaizen_gateway.tools.http import HTTPToolRunner, function_spec
from kaizen_gateway.tools.mcp import MCPConnections, MCPToolRunner
from kaizen_gateway.usage import DeliveredBeforeAnswer, UsageMeter, new_uid, outcome_label

log = logging.getLogger("kaizen_gateway")
SOURCES_HEADER = "x-kaizen-knowledge-sources"


@dataclass(frozen=True)
class AgentTools:
    """What the loop needs of one agent revision, built once per bundle."""

    runners: dict[str, ToolRunner]  # server-side tools by name
    functions: list[dict[str, Any]]  # the caller's tools (type function), as the model sees them
    served: list[dict[str, Any]]  # the server-side tools, as the model sees them
    bounds: Bounds


@dataclass
class GatewaySettings:
    """Command-line settings of one gateway process."""

    bundle_path: Path
    secrets_dir: Path = Path(SECRETS_MOUNT)
    knowledge_dir: Path = Path(KNOWLEDGE_MOUNT)
    max_body_bytes: int = 1_048_576
    upstream_timeout: float = 60.0
    upstream_retries: int = 2
    reload_interval: float = 1.0
    allow_link_local: bool = False  # upstreams may be link-local/metadata addresses
    redis_url: str | None = None  # conversation memory and shared rate limits
    redis_timeout: float = 0.25  # seconds per Redis call; then the fallback applies
    prices: dict[str, tuple[float, float]] = field(
        default_factory=lambda: dict(metrics.DEFAULT_PRICES)
    )


def _known_key(key: str, keys: frozenset[str]) -> bool:
    """Whether ``key`` is one of ``keys``, comparing every one in constant time (digests,
    so that lengths do not leak either)."""
    digest = hashlib.sha256(key.encode()).digest()
    found = False
    for known in keys:
        found |= hmac.compare_digest(digest, hashlib.sha256(known.encode()).digest())
    return found


class Gateway:
    """Shared state of the process: bundle, upstream session, rate limiters."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.bundles = BundleHolder(settings.bundle_path)
        self.session: aiohttp.ClientSession | None = None
        self.tool_session: aiohttp.ClientSession | None = (
            None  # own pool: tools never starve models
        )
        self._tools: dict[tuple[str, str, int], AgentTools] = {}
        self._watch: asyncio.Task[None] | None = None
        self._limits_digest: str | None = None
        self.total_limit: TokenBucket | None = None
        self.key_limits: KeyedBuckets | None = None
        self._keys: tuple[float, frozenset[str]] = (0.0, frozenset())
        self.secrets = MountedFiles(SECRET_MAX_AGE)  # provider credentials, by path
        self.knowledge = KnowledgeBase(
            settings.knowledge_dir, allow_link_local=settings.allow_link_local
        )
        self.mcp = MCPConnections(allow_link_local=settings.allow_link_local)
        self.redis = (
            RedisLink(settings.redis_url, timeout=settings.redis_timeout)
            if settings.redis_url
            else None
        )
        self.memory = ConversationMemory(self.redis)
        self.shared_limits = SharedBuckets(self.redis.client) if self.redis else None
        self.meter = UsageMeter(self.redis)
        self.budgets = Budgets(self.redis)

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(
            connector=guarded_connector(
                allow_link_local=self.settings.allow_link_local,
                how_to_allow=HOW_TO_ALLOW,
                limit=1000,
                ttl_dns_cache=300,
            ),
        )
        self.tool_session = aiohttp.ClientSession(
            connector=guarded_connector(
                allow_link_local=self.settings.allow_link_local,
                how_to_allow=HOW_TO_ALLOW,
                limit=1000,
                ttl_dns_cache=300,
            ),
        )
        self.reload()
        self.mcp.start()
        self.meter.start()
        self._watch = asyncio.create_task(self._watch_loop())
        await self.knowledge.start(
            self.session,
            lambda: self.bundles.current.bundle if self.bundles.current else None,
            self.settings.reload_interval,
        )

    async def stop(self) -> None:
        await self.knowledge.stop()
        tracing.shutdown()
        if self._watch:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await self.mcp.stop()
        await self.memory.close()  # summaries in flight still need the upstream session
        await self.meter.stop()  # before Redis closes: what is buffered is appended
        if self.session:
            await self.session.close()
        if self.tool_session:
            await self.tool_session.close()
        if self.redis:
            await self.redis.close()

    async def _watch_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reload_interval)
            self.reload()

    def reload(self) -> None:
        if self.bundles.reload():
            metrics.BUNDLE_RELOADS.inc()
            current = self.bundles.current
            metrics.AGENTS_SERVED.set(len(current.agents) if current else 0)
            metrics.PIPELINES_SERVED.set(len(current.pipelines) if current else 0)
            self._tools = {}
            self._configure_limits()
            self.mcp.serve(current.bundle if current else None)

    def _configure_limits(self) -> None:
        current = self.bundles.current
        limits = current.bundle.rate_limits if current else None
        digest = limits.model_dump_json() if limits else ""
        if digest == self._limits_digest:
            return
        self._limits_digest = digest
        total = limits.total if limits else None
        per_key = limits.per_api_key if limits else None
        self.total_limit = (
            TokenBucket(total.requests_per_second, total.burst or total.requests_per_second)
            if total
            else None
        )
        self.key_limits = (
            KeyedBuckets(per_key.requests_per_second, per_key.burst or per_key.requests_per_second)
            if per_key
            else None
        )

    # ---------------------------------------------------------------- auth and limits

    def _api_keys(self) -> frozenset[str]:
        stamp, keys = self._keys
        current = self.bundles.current
        auth = current.bundle.auth if current else None
        if auth is None or auth.api_keys_secret_ref is None:
            return frozenset()
        if time.monotonic() - stamp < 5:
            return keys
        folder = self.settings.secrets_dir / auth.api_keys_secret_ref.name
        found = set()
        with contextlib.suppress(OSError):
            for entry in folder.iterdir():
                if entry.is_file() and not entry.name.startswith("."):
                    found.add(entry.read_text().strip())
        self._keys = (time.monotonic(), frozenset(found))
        return self._keys[1]

    async def check_access(self, request: Request) -> str:
        """Authenticate (when the Gateway requires API keys) and apply rate limits; the
        caller's identity that conversation memory is kept under."""
        current = self.bundles.current
        auth = current.bundle.auth if current else None
        header = request.headers.get("authorization", "")
        key = (
            header[7:].strip()
            if header.lower().startswith("bearer ")
            else request.headers.get("x-api-key", "")
        )
        # Closed by default: outside environment dev, no auth mode means APIKey.
        authenticated = current is not None and requires_api_key(auth, current.bundle.environment)
        if authenticated and (not key or not _known_key(key, self._api_keys())):
            raise GatewayError(
                401,
                "invalid or missing API key"
                if auth is not None and auth.api_keys_secret_ref is not None
                else "this gateway requires an API key and none is configured "
                "(set spec.auth.apiKeysSecretRef)",
                type_="authentication_error",
                code="invalid_api_key",
            )
        if self.total_limit is None and self.key_limits is None:
            return caller_identity(key if authenticated else None)
        caller = (
            hashlib.sha256(key.encode()).hexdigest()
            if key
            else (request.client.host if request.client else "-")
        )
        if self.redis is not None and self.shared_limits is not None:
            try:
                await self._take_shared(self.redis, self.shared_limits, caller)
                return caller_identity(key if authenticated else None)
            except RedisUnavailable:
                metrics.RATE_LIMIT_LOCAL.inc()  # fall back to this pod's buckets
        if self.total_limit is not None:
            wait = self.total_limit.take()
            if wait:
                raise self._limited(wait, "this gateway")
        if self.key_limits is not None:
            wait = self.key_limits.take(caller)
            if wait:
                raise self._limited(wait, "this API key")
        return caller_identity(key if authenticated else None)

    async def _take_shared(self, link: RedisLink, shared: SharedBuckets, caller: str) -> None:
        """The rate limits across every replica: token buckets in Redis (the {scope} hash
        tag keeps one script's keys in one Redis Cluster slot)."""
        scope = self.scope()
        current = self.bundles.current
        limits = current.bundle.rate_limits if current else None
        buckets, who = [], []
        if limits and limits.total:
            t = limits.total
            buckets.append(
                (
                    f"kaizen:rl:v1:{{{scope}}}:total",
                    t.requests_per_second,
                    t.burst or t.requests_per_second,
                )
            )
            who.append("this gateway")
        if limits and limits.per_api_key:
            k = limits.per_api_key
            buckets.append(
                (
                    f"kaizen:rl:v1:{{{scope}}}:key:{caller}",
                    k.requests_per_second,
                    k.burst or k.requests_per_second,
                )
            )
            who.append("this API key")
        if not buckets:
            return
        wait, which = await link.call(lambda client: shared.take(client, buckets))
        if wait:
            raise self._limited(wait, who[which])

    async def check_budget(self, agent: BundledAgent, caller: str) -> None:
        """402 before any upstream call when a used-up budget covers this request."""
        current = self.bundles.current
        if current is not None:
            await self.budgets.check(current.bundle.namespace, agent.name, caller)

    def scope(self) -> str:
        """The Gateway these pods serve, "namespace/name": memory and limits are kept per
        Gateway, so two Gateways sharing a Redis never see each other's state."""
        current = self.bundles.current
        return f"{current.bundle.namespace}/{current.bundle.gateway}" if current else "-"

    async def recall(
        self, agent: BundledAgent, caller: str, conversation_id: Any, param: str
    ) -> Recall:
        """The conversation memory for this request (see kaizen_gateway.memory)."""
        if conversation_id is None:
            return Recall("")
        return await self.memory.recall(
            self.scope(), agent, caller, check_conversation_id(conversation_id, param)
        )

    async def remember(
        self,
        agent: BundledAgent,
        recall: Recall,
        new_messages: list[dict[str, Any]],
        answer: dict[str, Any],
    ) -> None:
        """Store this turn; summaries are written by the agent's own model."""
        if recall.conversation is None:
            return

        async def summarise(messages: list[dict[str, Any]]) -> str:
            chat = ChatRequest(model=agent.spec.model.name, messages=messages)
            result = await complete_with_fallback(agent, self.provider(agent), chat)
            return str(result["choices"][0]["message"].get("content") or "")

        await self.memory.remember(recall, new_messages, answer, summarise)

    @staticmethod
    def _limited(wait: float, who: str) -> GatewayError:
        retry = max(1, int(wait + 0.999))
        return GatewayError(
            429,
            f"rate limit exceeded for {who}; retry after {retry}s",
            type_="rate_limit_error",
            code="rate_limit_exceeded",
            headers={"retry-after": str(retry)},
        )

    # ---------------------------------------------------------------- requests

    async def read_json(self, request: Request) -> dict[str, Any]:
        length = request.headers.get("content-length")
        limit = self.settings.max_body_bytes
        if length and length.isdigit() and int(length) > limit:
            raise GatewayError(
                413, f"request body larger than {limit} bytes", code="request_too_large"
            )
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise GatewayError(
                    413, f"request body larger than {limit} bytes", code="request_too_large"
                )
        try:
            data = json.loads(body, parse_constant=refuse_constant)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise GatewayError(400, f"malformed JSON body: {exc}", code="invalid_json") from exc
        except RecursionError as exc:
            raise GatewayError(400, "the JSON body nests too deeply", code="invalid_json") from exc
        if not isinstance(data, dict):
            raise GatewayError(400, "the JSON body must be an object", code="invalid_json")
        return data

    def agent(self, name: Any) -> BundledAgent:
        current = self.bundles.current
        agent = current.agents.get(str(name)) if current and isinstance(name, str) else None
        if agent is None:
            served = ", ".join(sorted(current.agents)) if current else ""
            raise GatewayError(
                404,
                f"the agent {name!r} does not exist on this gateway (serving: {served or 'none'})",
                code="model_not_found",
                param="model",
            )
        return agent

    def tool_factories(self) -> dict[str, RunnerFactory]:
        """How each type of server-side tool is run."""
        return {
            ToolType.HTTP: lambda tool: HTTPToolRunner(
                tool,
                self._tool_session,
                secrets_dir=self.settings.secrets_dir,
                secrets=self.secrets,
                allow_link_local=self.settings.allow_link_local,
            ),
            ToolType.MCP: lambda tool: MCPToolRunner(tool, self.mcp),
        }

    def _tool_session(self) -> aiohttp.ClientSession:
        if self.tool_session is None:
            raise RuntimeError("the gateway is not started")
        return self.tool_session

    def agent_tools(self, agent: BundledAgent) -> AgentTools:
        """The agent revision's tools and bounds (built on its first request)."""
        # A new MCP tool listing (a server's schemas) rebuilds what the model sees.
        key = (agent.name, agent.hash, self.mcp.listings)
        found = self._tools.get(key)
        if found is None:
            self._tools = {k: v for k, v in self._tools.items() if k[:2] != key[:2]}
            tools = agent.spec.tools or []
            runners = runners_for(tools, self.tool_factories())
            found = AgentTools(
                runners,
                [function_spec(t) for t in tools if t.type == ToolType.FUNCTION],
                [r.spec() for r in runners.values()],
                Bounds.of(agent.spec),
            )
            self._tools[key] = found
        return found

    def chat_request(
        self, agent: BundledAgent, body: dict[str, Any], tools: AgentTools
    ) -> ChatRequest:
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
        check_params(body)
        spec = agent.spec
        if spec.system_prompt:
            messages = [{"role": "system", "content": spec.system_prompt}, *messages]
        params: dict[str, Any] = {}
        if spec.model.parameters:
            params.update(
                {
                    k: v
                    for k, v in spec.model.parameters.model_dump(exclude_none=True).items()
                    if k in PARAM_KEYS
                }
            )
        params.update({k: body[k] for k in PASSTHROUGH if k in body})
        # The caller's tools replace the agent's function tools; the server-side ones stay.
        offered = params.get("tools", tools.functions)
        for i, tool in enumerate(offered):
            name = (tool.get("function") or {}).get("name")
            if name in tools.runners:
                raise GatewayError(
                    400,
                    f"tools[{i}] is named {name!r}, like a tool this agent runs itself; rename it",
                    param=f"tools[{i}]",
                )
        if offered or tools.served:
            params["tools"] = [*offered, *tools.served]
        return ChatRequest(model=spec.model.name, messages=messages, params=params)

    def provider(self, agent: BundledAgent) -> Any:
        if self.session is None:
            raise GatewayError(503, "gateway is starting", type_="server_error")
        cfg = UpstreamConfig(
            self.session,
            self.settings.upstream_timeout,
            self.settings.upstream_retries,
            secrets_dir=self.settings.secrets_dir,
            allow_link_local=self.settings.allow_link_local,
            secrets=self.secrets,
        )
        return provider_for(
            agent.spec.model,
            cfg,
            lambda reason: metrics.UPSTREAM_ERRORS.labels(agent.name, reason).inc(),
        )

    def loop(
        self, agent: BundledAgent, chat: ChatRequest, tools: AgentTools, stream: bool
    ) -> LoopRun:
        """The agent loop of one request (every route that calls an agent uses it)."""
        provider = self.provider(agent)
        return LoopRun(
            agent.name,
            chat,
            tools.runners,
            tools.bounds,
            partial(complete_with_fallback, agent, provider),
            tracing.streamed(agent.spec.model, provider.stream) if stream else None,
        )

    async def run_agent(
        self,
        agent: BundledAgent,
        text: str,
        extra: Mapping[str, ToolRunner] | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> Outcome:
        """An agent's answer to one user message, as ``/agents/{name}/invoke`` gives it
        (no conversation memory): a pipeline step. ``extra``: server-side tools added
        for this call (a Supervisor's workers); ``on_text``: streams the answer's text
        (the model is called streaming)."""
        await self.mcp.prepare(agent.spec.tools)
        tools = self.agent_tools(agent)
        if extra:
            tools = replace(
                tools,
                runners={**tools.runners, **extra},
                served=[*tools.served, *(r.spec() for r in extra.values())],
            )
        chat = self.chat_request(agent, {"messages": [{"role": "user", "content": text}]}, tools)
        knowledge = self.knowledge.retrieve(agent.name, chat.messages)
        chat.messages = knowledge.apply(chat.messages)
        status, usage, started = 500, None, time.perf_counter()
        try:
            events = self.loop(agent, chat, tools, on_text is not None).events()
            if on_text is None:
                outcome = await outcome_of(events)
            else:
                async for event in events:
                    if isinstance(event, Delta) and event.text:
                        on_text(event.text)
                    elif isinstance(event, Outcome):
                        outcome = event
            status, usage = 200, outcome.usage
            return outcome
        except GatewayError as exc:
            status = exc.status
            raise
        finally:
            self.observe(agent, status, time.perf_counter() - started, usage)

    def price(self, agent: BundledAgent, usage: Mapping[str, int]) -> float:
        """Estimated cost of an agent's usage."""
        return metrics.cost(
            self.settings.prices,
            agent.spec.model.name,
            int(usage.get("prompt_tokens", 0)),
            int(usage.get("completion_tokens", 0)),
        )

    def observe(
        self, agent: BundledAgent, status: int, seconds: float, usage: dict[str, Any] | None
    ) -> float:
        """Metrics of one finished agent call (any outcome); returns its estimated cost."""
        labels = (agent.name, str(agent.revision))
        metrics.REQUESTS.labels(*labels, str(status)).inc()
        metrics.LATENCY.labels(*labels).observe(seconds)
        tokens_in = int(usage.get("prompt_tokens", 0)) if usage else 0
        tokens_out = int(usage.get("completion_tokens", 0)) if usage else 0
        cost = metrics.cost(self.settings.prices, agent.spec.model.name, tokens_in, tokens_out)
        if usage:
            metrics.TOKENS.labels(*labels, "in").inc(tokens_in)
            metrics.TOKENS.labels(*labels, "out").inc(tokens_out)
            metrics.COST.labels(*labels).inc(cost)
        return cost

    def account(
        self,
        agent: BundledAgent,
        status: int,
        seconds: float,
        usage: dict[str, Any] | None,
        *,
        request_id: str,
        caller: str,
        code: str | None = None,
        tool_calls: int = 0,
    ) -> None:
        """Metrics and the usage record of one finished agent request (any outcome)."""
        cost = self.observe(agent, status, seconds, usage)
        self.record_usage(
            kind="agent",
            name=agent.name,
            revision=agent.revision,
            model=agent.spec.model.name,
            usage=usage,
            cost=cost,
            seconds=seconds,
            status=status,
            request_id=request_id,
            caller=caller,
            code=code,
            tool_calls=tool_calls,
        )

    def record_usage(
        self,
        *,
        kind: str,
        name: str,
        revision: int,
        model: str,
        usage: Mapping[str, int] | None,
        cost: float,
        seconds: float,
        status: int,
        request_id: str,
        caller: str,
        code: str | None = None,
        tool_calls: int = 0,
    ) -> None:
        """The one usage record of a served request: an agent's, or a pipeline's with its
        steps' usage summed (steps make no records of their own: nothing counts twice)."""
        current = self.bundles.current
        if current is None:
            return
        self.meter.record(
            current.bundle.namespace,
            UsageRecord(
                uid=new_uid(),
                request_id=request_id[:64],
                time=time.time(),
                gateway=current.bundle.gateway,
                kind=kind,
                name=name,
                revision=revision,
                caller=caller,
                model=model,
                tokens_in=int(usage.get("prompt_tokens", 0)) if usage else 0,
                tokens_out=int(usage.get("completion_tokens", 0)) if usage else 0,
                tool_calls=tool_calls,
                latency_ms=round(seconds * 1000, 3),
                cost_usd=cost,
                status=status,
                outcome=outcome_label(status, code),
            ),
        )


async def complete(agent: BundledAgent, provider: Any, chat: ChatRequest) -> dict[str, Any]:
    """One model call, in its span when tracing."""
    if not tracing.enabled():
        return await provider.complete(chat)  # type: ignore[no-any-return]
    model = agent.spec.model
    with tracing.model_span(model.provider, chat.model, chat.params, server=model.endpoint) as span:
        result: dict[str, Any] = await provider.complete(chat)
        span.response(result)
    return result


async def complete_with_fallback(
    agent: BundledAgent, provider: Any, chat: ChatRequest
) -> dict[str, Any]:
    """The primary model; on an upstream failure after retries, the fallback model once."""
    try:
        result = await complete(agent, provider, chat)
    except UpstreamError as exc:
        fallback = agent.spec.model.fallback_name
        if not fallback:
            raise
        log.warning("agent %s: %s; trying fallback model %s", agent.name, exc.message, fallback)
        metrics.UPSTREAM_ERRORS.labels(agent.name, "fallback").inc()
        result = await complete(agent, provider, replace(chat, model=fallback))
        result["x_kaizen_fallback"] = fallback
    return result


def new_request_id() -> str:
    """32 random hex digits, uuid4().hex's form without a getrandom() call per request:
    a request id names a request, it guards nothing."""
    return f"{random.getrandbits(128):032x}"


def _error(exc: GatewayError, extra: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        exc.body(), status_code=exc.status, headers={**exc.headers, **(extra or {})}
    )


def _headers(
    agent: BundledAgent, started: float, waited: float, request_id: str, steps: int = 1
) -> dict[str, str]:
    """Response headers; the overhead is the time not spent waiting for models and tools."""
    overhead = (time.perf_counter() - started - waited) * 1000
    return {
        "x-kaizen-agent-revision": str(agent.revision),
        "x-kaizen-agent": agent.name,
        "x-kaizen-overhead-ms": f"{overhead:.3f}",
        "x-kaizen-steps": str(steps),
        "x-request-id": request_id,
    }


def _outcome_headers(
    agent: BundledAgent, started: float, request_id: str, outcome: Outcome
) -> dict[str, str]:
    headers = _headers(
        agent,
        started,
        outcome.model_seconds + outcome.tool_seconds,
        request_id,
        outcome.steps,
    )
    if outcome.fallback:
        headers["x-kaizen-fallback-model"] = outcome.fallback
    return headers


class Remembered:
    """Stores a streamed turn once the loop's outcome is known and before the stream's
    last line (``[DONE]``, or the native ``done`` event), so that the caller's next turn,
    on any replica, sees it."""

    def __init__(
        self, gw: Gateway, agent: BundledAgent, recall: Recall, turn: list[dict[str, Any]] | None
    ) -> None:
        self.gw, self.agent, self.recall, self.turn = gw, agent, recall, turn or []
        self.outcome: Outcome | None = None
        self.stored = False

    def capture(self, done: Callable[[int, Outcome | None], None]) -> Any:
        """Wrap chat_sse's ``done(status, outcome)``."""

        def wrapped(status: int, outcome: Outcome | None) -> None:
            self.outcome = outcome
            done(status, outcome)

        return wrapped

    def capture_outcome(self, finish: Callable[[Outcome], dict[str, Any]]) -> Any:
        """Wrap native_sse's ``finish(outcome)``."""

        def wrapped(outcome: Outcome) -> dict[str, Any]:
            self.outcome = outcome
            return finish(outcome)

        return wrapped

    async def around(self, sse: AsyncIterator[str]) -> AsyncIterator[str]:
        try:
            async for line in sse:
                if line.startswith(("data: [DONE]", "event: done")):
                    await self.store()
                yield line
            await self.store()
        finally:
            await sse.aclose()  # type: ignore[attr-defined]

    async def store(self) -> None:
        if self.stored or self.outcome is None or self.recall.conversation is None:
            return
        self.stored = True
        await self.gw.remember(self.agent, self.recall, self.turn, self.outcome.message)


def build_app(gw: Gateway) -> ASGIApp:
    """The ASGI application around a Gateway."""

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(_: Request) -> Response:
        # Ready = a valid bundle is loaded. A knowledge source that cannot be read or
        # an MCP server that is down is reported here (an MCP server also on the
        # Gateway's status), but keeps no pod out of the Service: the other agents
        # and tools still work, and the model is told the tool failed.
        current = gw.bundles.current
        if current is None:
            return JSONResponse(
                {"ready": False, "reason": f"no valid bundle: {gw.bundles.last_error}"},
                status_code=503,
            )
        return JSONResponse(
            {
                "ready": True,
                "bundle": current.digest,
                "agents": len(current.agents),
                "pipelines": len(current.pipelines),
                "refusedPipelines": current.refused,
                "unresolvedSteps": current.unresolved(),
                "knowledge": gw.knowledge.readiness(),
                "mcpServers": gw.mcp.readiness(),
            }
        )

    async def metrics_endpoint(_: Request) -> Response:
        return Response(generate_latest(metrics.REGISTRY), media_type="text/plain; version=0.0.4")

    async def models(request: Request) -> Response:
        try:
            await gw.check_access(request)
        except GatewayError as exc:
            return _error(exc)
        current = gw.bundles.current
        data = [
            {
                "id": a.name,
                "object": "model",
                "created": 0,
                "owned_by": "kaizen-studio",
                "revision": a.revision,
                "provider": a.spec.model.provider,
                "kind": "agent",
            }
            for a in (current.agents.values() if current else [])
        ]
        data += [
            {
                "id": p.name,
                "object": "model",
                "created": 0,
                "owned_by": "kaizen-studio",
                "revision": p.revision,
                "kind": "pipeline",
                "pattern": str(p.spec.pattern),
            }
            for p in (current.pipelines.values() if current else [])
        ]
        return JSONResponse({"object": "list", "data": data})

    loop = gw.loop

    async def start_stream(
        agent: BundledAgent, run: LoopRun, events: Any, started: float, request_id: str
    ) -> tuple[Event, dict[str, str]]:
        """The first event, before the response starts: an error there is a plain
        HTTP error (raised), not an error event."""
        try:
            first = await anext(events)
        except BaseException:
            await events.aclose()
            raise
        waited = run.model_seconds + run.tool_seconds
        return first, _headers(agent, started, waited, request_id)

    def finisher(agent: BundledAgent, started: float, request_id: str, caller: str) -> Any:
        def done(status: int, outcome: Outcome | None) -> None:
            gw.account(
                agent,
                status,
                time.perf_counter() - started,
                outcome.usage if outcome else None,
                request_id=request_id,
                caller=caller,
                tool_calls=len(outcome.tools) if outcome else 0,
            )

        return done

    @tracing.traced("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        started = time.perf_counter()
        request_id = request.headers.get("x-request-id") or new_request_id()
        agent: BundledAgent | None = None
        caller = "-"
        try:
            caller = await gw.check_access(request)
            body = await gw.read_json(request)
            pipeline = pipelines.find(gw, body.get("model"))
            if pipeline is not None:
                return await pipelines.chat(
                    gw, body, pipeline, pipelines.Charge(gw, request_id, caller)
                )
            agent = gw.agent(body.get("model"))
            await gw.check_budget(agent, caller)
            await gw.mcp.prepare(agent.spec.tools)
            tools = gw.agent_tools(agent)
            recall = await gw.recall(
                agent, caller, request.headers.get(CONVERSATION_HEADER), CONVERSATION_HEADER
            )
            turn = body.get("messages")
            if recall.messages and isinstance(turn, list):
                body = {**body, "messages": recall.messages + turn}
            chat = gw.chat_request(agent, body, tools)
            knowledge = gw.knowledge.retrieve(agent.name, chat.messages)
            chat.messages = knowledge.apply(chat.messages)
            if body.get("stream"):
                run = loop(agent, chat, tools, True)
                events = run.events()
                first, headers = await start_stream(agent, run, events, started, request_id)
                labels = (agent.name, str(agent.revision))
                memo = Remembered(gw, agent, recall, turn)
                sse = answers.chat_sse(
                    first,
                    events,
                    agent.name,
                    request_id,
                    memo.capture(finisher(agent, started, request_id, caller)),
                    lambda: metrics.TTFT.labels(*labels).observe(time.perf_counter() - started),
                )
                if knowledge.hits:
                    headers[SOURCES_HEADER] = knowledge.header()
                return StreamingResponse(
                    memo.around(sse),
                    media_type="text/event-stream",
                    headers={**headers, **recall.headers(), "cache-control": "no-cache"},
                )
            outcome = await outcome_of(loop(agent, chat, tools, False).events())
        except GatewayError as exc:
            if agent is not None:
                gw.account(
                    agent,
                    exc.status,
                    time.perf_counter() - started,
                    None,
                    request_id=request_id,
                    caller=caller,
                    code=exc.code,
                )
            return _error(exc, {"x-request-id": request_id})
        await gw.remember(agent, recall, turn or [], outcome.message)
        result = answers.completion(outcome, agent.name, request_id)
        headers = {**_outcome_headers(agent, started, request_id, outcome), **recall.headers()}
        if knowledge.hits:  # an extra field OpenAI clients keep (model_extra), and a header
            result["sources"] = knowledge.sources()
            headers[SOURCES_HEADER] = knowledge.header()
        gw.account(
            agent,
            200,
            time.perf_counter() - started,
            outcome.usage,
            request_id=request_id,
            caller=caller,
            tool_calls=len(outcome.tools),
        )
        return Response(encode(result), media_type="application/json", headers=headers)

    @tracing.traced("/agents/{name}/invoke")
    async def invoke(request: Request) -> Response:
        started = time.perf_counter()
        request_id = request.headers.get("x-request-id") or new_request_id()
        agent: BundledAgent | None = None
        caller = "-"
        try:
            caller = await gw.check_access(request)
            body = await gw.read_json(request)
            agent = gw.agent(request.path_params["name"])
            await gw.check_budget(agent, caller)
            text = body.get("input")
            if not isinstance(text, str) or not text:
                raise GatewayError(400, "input must be a non-empty string", param="input")
            stream = body.get("stream", False)
            if not isinstance(stream, bool):
                raise GatewayError(400, "stream must be a boolean", param="stream")
            await gw.mcp.prepare(agent.spec.tools)
            tools = gw.agent_tools(agent)
            recall = await gw.recall(agent, caller, body.get("conversationId"), "conversationId")
            turn = [*body.get("history", []), {"role": "user", "content": text}]
            chat = gw.chat_request(
                agent,
                {
                    "messages": recall.messages + turn,
                    **{k: v for k, v in (body.get("parameters") or {}).items() if k in PARAM_KEYS},
                },
                tools,
            )
            knowledge = gw.knowledge.retrieve(agent.name, chat.messages)
            chat.messages = knowledge.apply(chat.messages)
            run = loop(agent, chat, tools, stream)
            events = run.events()
            if stream:
                first, headers = await start_stream(agent, run, events, started, request_id)
                served = agent
                memo = Remembered(gw, agent, recall, turn)
                sse = answers.native_sse(
                    first,
                    events,
                    memo.capture_outcome(
                        lambda outcome: {
                            **answers.native(
                                outcome, served.name, served.revision, started, request_id
                            ),
                            **recall.native(body.get("conversationId")),
                            "sources": knowledge.sources(),
                        }
                    ),
                    finisher(agent, started, request_id, caller),
                )
                return StreamingResponse(
                    memo.around(sse),
                    media_type="text/event-stream",
                    headers={**headers, **recall.headers(), "cache-control": "no-cache"},
                )
            outcome = await outcome_of(events)
        except GatewayError as exc:
            if agent is not None:
                gw.account(
                    agent,
                    exc.status,
                    time.perf_counter() - started,
                    None,
                    request_id=request_id,
                    caller=caller,
                    code=exc.code,
                )
            return _error(exc, {"x-request-id": request_id})
        await gw.remember(agent, recall, turn, outcome.message)
        gw.account(
            agent,
            200,
            time.perf_counter() - started,
            outcome.usage,
            request_id=request_id,
            caller=caller,
            tool_calls=len(outcome.tools),
        )
        out = answers.native(outcome, agent.name, agent.revision, started, request_id)
        out["sources"] = knowledge.sources()
        out.update(recall.native(body.get("conversationId")))
        return JSONResponse(
            out,
            headers={**_outcome_headers(agent, started, request_id, outcome), **recall.headers()},
        )

    @tracing.traced("/pipelines/{name}/invoke")
    async def invoke_pipeline(request: Request) -> Response:
        request_id = request.headers.get("x-request-id") or new_request_id()
        try:
            caller = await gw.check_access(request)
        except GatewayError as exc:
            return _error(exc, {"x-request-id": request_id})
        return await pipelines.invoke(gw, request, pipelines.Charge(gw, request_id, caller))

    async def conversation(request: Request) -> Response:
        """GET: the caller's stored conversation; DELETE: forget it (204). 404 when the
        caller has no such conversation with this agent; 503 while Redis is unavailable."""
        try:
            caller = await gw.check_access(request)
            agent = gw.agent(request.path_params["name"])
            conversation_id = check_conversation_id(request.path_params["id"], "id")
            conv = gw.memory.conversation(gw.scope(), agent, caller, conversation_id)
            if conv is None:
                raise GatewayError(
                    404, f"the agent {agent.name!r} keeps no conversation memory", code="not_found"
                )
            try:
                if request.method == "DELETE":
                    found = await gw.memory.forget(conv)
                    stored: dict[str, Any] | None = {} if found else None
                else:
                    stored = await gw.memory.read(conv)
            except RedisUnavailable as exc:
                raise GatewayError(
                    503,
                    "conversation memory is unavailable (Redis); retry later",
                    type_="server_error",
                    code="memory_unavailable",
                    headers={"retry-after": "1"},
                ) from exc
            if stored is None:
                raise GatewayError(
                    404, f"no conversation {conversation_id!r} with this agent", code="not_found"
                )
        except GatewayError as exc:
            return _error(exc)
        if request.method == "DELETE":
            return Response(status_code=204)
        return JSONResponse({"agent": agent.name, "conversationId": conversation_id, **stored})

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await gw.start()
        try:
            yield
        finally:
            await gw.stop()

    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics_endpoint),
            Route("/v1/models", models),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/agents/{name}/invoke", invoke, methods=["POST"]),
            Route("/agents/{name}/conversations/{id}", conversation, methods=["GET", "DELETE"]),
            Route("/pipelines/{name}/invoke", invoke_pipeline, methods=["POST"]),
        ],
        lifespan=lifespan,
    )
    # Each request's usage record reaches Redis before its answer's last bytes.
    return DeliveredBeforeAnswer(app, gw.meter, 2 * gw.settings.redis_timeout)
