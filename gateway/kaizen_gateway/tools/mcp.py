"""MCP tools: an Agent's ``type: mcp`` tools, called through the official ``mcp`` SDK
(2.x) over streamable HTTP or SSE.

One connection (an SDK ``Client``: handshake done, HTTP connections kept alive, tool
listing cached) per MCP server URL and transport per gateway process, shared by every
request and agent that uses the server. A connection that fails is dropped and the
next call or probe opens a new one. The model sees the Agent's tool name; the server
is called with ``mcp.toolName`` when set. Without ``parameters`` on the Agent, the input
schema is the one the server lists in ``tools/list``.

Failures never raise out of a call: unreachable, refused (SSRF guard), timed out,
disconnected mid-call, or an error the tool reports all become
``ToolResult(ok=False, reason=...)``, which the loop hands to the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx2
import mcp_types
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from kaizen_api.netguard import DestinationNotAllowed, check_url, display_url
from kaizen_api.netguard_httpx import guarded_transport
from kaizen_api.v1alpha1.agent import MCPTransport, Tool, ToolType
from kaizen_api.v1alpha1.bundle import AgentBundle
from kaizen_gateway.tools import ToolResult, failed

log = logging.getLogger("kaizen_gateway.tools.mcp")
# httpx2 (the SDK's HTTP client) logs every request's full URL at INFO: a token in an MCP
# server's URL would land in the logs, once per call.
logging.getLogger("httpx2").setLevel(logging.WARNING)

HOW_TO_ALLOW = "start kaizen-gateway with KAIZEN_GATEWAY_ALLOW_LINK_LOCAL=1"
CONNECT_TIMEOUT = 10.0  # seconds to connect and list tools when no call bounds it
PREPARE_TIMEOUT = 5.0  # seconds a request waits for a never-listed server's listing
RELIST_AFTER = 5.0  # seconds before a request tries again to list a server that failed
PROBE_INTERVAL = 15.0  # seconds between readiness probes of each server in the bundle
MAX_CONTENT_CHARS = 100_000  # a tool's answer larger than this is refused, not truncated
MAX_RESPONSE_BYTES = 4 * 1024 * 1024  # a JSON answer larger than this is not read
LIST_PAGES = 20  # tools/list pages read at most (a paginator that never ends cannot hang)
EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


@dataclass(frozen=True)
class ServerKey:
    """Where an MCP server lives: one connection per key."""

    url: str
    transport: MCPTransport

    def shown(self) -> str:
        return display_url(self.url)


@dataclass
class ServerState:
    """What is known about one server: reachability and its tool listing."""

    reachable: bool | None = None  # None: not tried yet
    reason: str | None = None  # machine reason when unreachable
    message: str = ""  # human detail (never the URL's credentials)
    checked: float = 0.0  # time.time() of the last attempt
    tools: dict[str, mcp_types.Tool] = field(default_factory=dict)
    listed: bool = False


class ResponseTooLarge(httpx2.ReadError):
    """An MCP server's JSON answer over MAX_RESPONSE_BYTES."""


class _CappedStream(httpx2.AsyncByteStream):
    """A response body that stops at ``cap`` bytes."""

    def __init__(self, inner: httpx2.AsyncByteStream, cap: int, noted: Callable[[], None]) -> None:
        self.inner, self.cap, self.noted = inner, cap, noted

    async def __aiter__(self) -> AsyncIterator[bytes]:
        received = 0
        async for chunk in self.inner:
            received += len(chunk)
            if received > self.cap:
                self.noted()  # the SDK reports a closed connection; the reason is kept here
                raise ResponseTooLarge(f"the MCP server answered more than {self.cap} bytes")
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()


class _CappedTransport(httpx2.AsyncBaseTransport):
    """The SDK's HTTP transport, with JSON answers capped in size: the SDK reads them
    whole into memory. (Event streams are capped per event by httpx2's SSE parser,
    1 MiB by default, in both transports.)"""

    def __init__(
        self, inner: httpx2.AsyncBaseTransport, cap: int, noted: Callable[[], None]
    ) -> None:
        self.inner, self.cap, self.noted = inner, cap, noted

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self.inner.handle_async_request(request)
        stream = response.stream
        content_type = response.headers.get("content-type", "")
        if content_type.startswith("text/event-stream") or not isinstance(
            stream, httpx2.AsyncByteStream
        ):
            return response
        return httpx2.Response(
            response.status_code,
            headers=response.headers,
            stream=_CappedStream(stream, self.cap, self.noted),
            extensions=response.extensions,
        )

    async def __aenter__(self) -> _CappedTransport:
        await self.inner.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.inner.__aexit__(*exc)

    async def aclose(self) -> None:
        await self.inner.aclose()


class _Failure(Exception):
    """A failure reduced to a reason and a message fit for the model and the status."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


def _leaves(exc: BaseException) -> Iterable[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc
        if exc.__cause__ is not None:
            yield from _leaves(exc.__cause__)


def describe(exc: BaseException, key: ServerKey) -> _Failure:
    """Why talking to ``key`` failed, from whatever the SDK raised (often a group)."""
    leaves = list(_leaves(exc))
    for leaf in leaves:
        if isinstance(leaf, _Failure):
            return leaf
        if isinstance(leaf, ResponseTooLarge):
            return _Failure("too_large", str(leaf))
        if isinstance(leaf, DestinationNotAllowed):
            return _Failure("refused", str(leaf))
    for leaf in leaves:
        if isinstance(leaf, httpx2.HTTPStatusError):
            code = leaf.response.status_code
            return _Failure(f"http_{code}", f"{key.shown()} answered HTTP {code}")
        if isinstance(leaf, httpx2.ConnectError | ConnectionError):
            return _Failure("unreachable", f"cannot connect to {key.shown()}")
        if isinstance(leaf, TimeoutError | httpx2.TimeoutException):
            return _Failure("timeout", f"{key.shown()} did not answer in time")
        if isinstance(leaf, MCPError) and leaf.code == mcp_types.CONNECTION_CLOSED:
            return _Failure("disconnected", f"the connection to {key.shown()} closed")
        if isinstance(leaf, httpx2.InvalidURL):
            return _Failure("invalid_url", f"{key.shown()}: {leaf}"[:300])
        if isinstance(leaf, MCPError):
            return _Failure("protocol_error", f"{key.shown()}: {leaf.message[:300]}")
    first = leaves[0] if leaves else exc
    text = str(first).replace(key.url, key.shown())[:300]
    return _Failure("disconnected", f"{key.shown()}: {type(first).__name__}: {text}".rstrip(": "))


class _Connection:
    """One SDK Client, entered and exited by its own task (anyio scopes must be left by
    the task that entered them) and used by any request meanwhile."""

    def __init__(self, key: ServerKey, allow_link_local: bool) -> None:
        self.key = key
        self.allow_link_local = allow_link_local
        self.client: Client | None = None
        self.oversized = False  # an answer over MAX_RESPONSE_BYTES ended this connection
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def _transport(self) -> contextlib.AbstractAsyncContextManager[Any]:
        def http_client(
            headers: dict[str, str] | None = None,
            timeout: httpx2.Timeout | None = None,
            auth: httpx2.Auth | None = None,
        ) -> httpx2.AsyncClient:
            guarded = guarded_transport(
                allow_link_local=self.allow_link_local, how_to_allow=HOW_TO_ALLOW
            )
            return httpx2.AsyncClient(
                transport=_CappedTransport(guarded, MAX_RESPONSE_BYTES, self._too_large),
                trust_env=False,
                headers=headers,
                # reads may wait as long as a call may run: each call has its own bound
                timeout=timeout or httpx2.Timeout(CONNECT_TIMEOUT, read=None),
                auth=auth,
            )

        if self.key.transport == MCPTransport.SSE:
            return sse_client(self.key.url, httpx_client_factory=http_client)
        return streamable_http_client(self.key.url, http_client=http_client())

    def _too_large(self) -> None:
        self.oversized = True

    @property
    def alive(self) -> bool:
        """Whether calls can still be sent. The SDK's dispatcher notes when its transport
        ended (the server went away); reading that note saves the first call after a
        server restart from failing on the dead connection. Without it (another SDK
        version), that call fails and the next one reconnects."""
        client = self.client
        if client is None or self._task is None or self._task.done():
            return False
        dispatcher = getattr(client.session, "_dispatcher", None)
        return not getattr(dispatcher, "_closed", False)

    async def open(self) -> None:
        """Connect and handshake (raises what the SDK raised)."""
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._hold(ready), name=f"mcp {self.key.shown()}")
        try:
            await asyncio.shield(ready)
        except asyncio.CancelledError:
            await self.close()
            raise

    async def _hold(self, ready: asyncio.Future[None]) -> None:
        try:
            # cache=None: a tools/list is always asked of the server (it is the probe).
            async with Client(self._transport(), cache=None) as client:
                self.client = client
                ready.set_result(None)
                await self._closing.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else RuntimeError(exc))
            elif not self._closing.is_set():
                log.info(
                    "MCP server %s: connection ended: %s",
                    self.key.shown(),
                    describe(exc, self.key).message,
                )
            if not isinstance(exc, Exception):
                raise
        finally:
            self.client = None

    async def close(self) -> None:
        self._closing.set()
        task = self._task
        if task is None or task.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), 5.0)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()
        except Exception:  # noqa: S110 - the connection is being dropped; its error is moot
            pass


class MCPConnections:
    """The process's connections to MCP servers, their listings and reachability."""

    def __init__(self, *, allow_link_local: bool = False) -> None:
        self.allow_link_local = allow_link_local
        self.states: dict[ServerKey, ServerState] = {}
        self.users: dict[ServerKey, list[tuple[str, str]]] = {}  # (agent, tool) using a server
        self._connections: dict[ServerKey, _Connection] = {}
        self._locks: dict[ServerKey, asyncio.Lock] = {}
        self._probe: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.connects = 0  # connections opened (one per server while it stays up)
        self.listings = 0  # bumped when a server's tool listing changes (specs to rebuild)

    # ------------------------------------------------------------ bundle and lifecycle

    def serve(self, bundle: AgentBundle | None) -> None:
        """Remember which servers the bundle's agents use (readiness lists these)."""
        users: dict[ServerKey, list[tuple[str, str]]] = {}
        for agent in bundle.agents if bundle else []:
            for tool in agent.spec.tools or []:
                if tool.type == ToolType.MCP and tool.mcp is not None:
                    key = ServerKey(tool.mcp.url, MCPTransport(tool.mcp.transport))
                    users.setdefault(key, []).append((agent.name, tool.name))
        self.use(users)

    def use(self, users: dict[ServerKey, list[tuple[str, str]]]) -> None:
        """Serve these servers, each used by (agent, tool) pairs; forget the others."""
        new = [key for key in users if key not in self.users]
        self.users = users
        for key in list(self.states):
            if key not in users:
                self.states.pop(key)
                connection = self._connections.pop(key, None)
                if connection is not None:
                    self._background(connection.close())
        if self._probe is not None:  # probing: check new servers now, not at the next round
            for key in new:
                self._background(self.refresh(key))

    def _background(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def start(self, interval: float = PROBE_INTERVAL) -> None:
        """Probe the bundle's servers now and every ``interval`` seconds."""
        self._probe = asyncio.create_task(self._probe_loop(interval))

    async def stop(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(c.close() for c in self._connections.values()))
        self._connections.clear()

    async def _probe_loop(self, interval: float) -> None:
        while True:
            await self.probe()
            await asyncio.sleep(interval)

    async def probe(self, timeout: float = CONNECT_TIMEOUT) -> None:
        """List tools on every server the bundle uses: connects, checks and refreshes."""
        await asyncio.gather(*(self.refresh(key, timeout) for key in list(self.users)))

    # ------------------------------------------------------------ connections

    def state(self, key: ServerKey) -> ServerState:
        return self.states.setdefault(key, ServerState())

    def _mark(self, key: ServerKey, failure: _Failure | None) -> None:
        state = self.state(key)
        state.checked = time.time()
        answered = ("protocol_error", "tool_error", "too_large")  # the server is there
        state.reachable = failure is None or failure.reason in answered
        state.reason = None if state.reachable else failure.reason if failure else None
        state.message = "" if failure is None else failure.message
        if failure is not None and not state.reachable:
            log.warning("MCP server %s unreachable: %s", key.shown(), failure.message)

    async def _drop(self, key: ServerKey, connection: _Connection) -> None:
        if self._connections.get(key) is connection:
            del self._connections[key]
        await connection.close()

    async def connection(self, key: ServerKey) -> _Connection:
        """The live connection to ``key``, opened if needed (raises _Failure)."""
        current = self._connections.get(key)
        if current is not None and current.alive:
            return current
        async with self._locks.setdefault(key, asyncio.Lock()):
            current = self._connections.get(key)
            if current is not None and current.alive:
                return current
            if current is not None:
                await self._drop(key, current)
            try:
                check_url(
                    key.url, allow_link_local=self.allow_link_local, how_to_allow=HOW_TO_ALLOW
                )
            except DestinationNotAllowed as exc:
                raise _Failure("refused", str(exc)) from exc
            connection = _Connection(key, self.allow_link_local)
            try:
                await connection.open()
            except Exception as exc:
                await connection.close()
                raise describe(exc, key) from exc
            self.connects += 1
            self._connections[key] = connection
            return connection

    @contextlib.asynccontextmanager
    async def _using(self, key: ServerKey) -> AsyncIterator[Client]:
        """A connected client; a failure drops the connection and becomes _Failure."""
        connection = await self.connection(key)
        client = connection.client
        if client is None:
            raise _Failure("disconnected", f"the connection to {key.shown()} ended")
        try:
            yield client
        except (_Failure, asyncio.CancelledError, TimeoutError):
            raise  # our own bound ran out: the connection stays (the probe checks it)
        except Exception as exc:
            if isinstance(exc, MCPError) and exc.code != mcp_types.CONNECTION_CLOSED:
                raise  # the server answered with an error: the connection stays
            await self._drop(key, connection)
            if connection.oversized:  # the SDK reports it as a closed connection
                raise _Failure(
                    "too_large", f"{key.shown()} answered more than {MAX_RESPONSE_BYTES} bytes"
                ) from exc
            raise describe(exc, key) from exc

    async def refresh(self, key: ServerKey, timeout: float = CONNECT_TIMEOUT) -> ServerState:
        """Fetch the server's tool listing (connecting if needed); records reachability."""
        state = self.state(key)
        try:
            async with asyncio.timeout(timeout), self._using(key) as client:
                tools: dict[str, mcp_types.Tool] = {}
                cursor: str | None = None
                for _ in range(LIST_PAGES):
                    page = await client.list_tools(cursor=cursor)
                    tools.update((t.name, t) for t in page.tools)
                    cursor = page.next_cursor
                    if cursor is None:
                        break
        except Exception as exc:
            failure = describe(exc, key)
            self._mark(key, failure)
            if failure.reason == "timeout":  # a server that stopped answering: reconnect
                connection = self._connections.get(key)
                if connection is not None:
                    await self._drop(key, connection)
            return state
        if not state.listed or tools != state.tools:
            self.listings += 1
        state.tools, state.listed = tools, True
        self._mark(key, None)
        return state

    async def prepare(self, tools: list[Tool] | None, timeout: float = PREPARE_TIMEOUT) -> None:
        """Before an agent's request: list the servers of its mcp tools that give no
        parameters and were never listed, unless one was tried in the last
        RELIST_AFTER seconds (a server that is down does not slow every request)."""
        now = time.time()
        keys = {
            ServerKey(tool.mcp.url, MCPTransport(tool.mcp.transport))
            for tool in tools or []
            if tool.type == ToolType.MCP and tool.mcp is not None and tool.parameters is None
        }
        stale = [
            key
            for key in keys
            if not self.state(key).listed and now - self.state(key).checked > RELIST_AFTER
        ]
        if stale:
            await asyncio.gather(*(self.refresh(key, timeout) for key in stale))

    async def call(
        self, key: ServerKey, name: str, arguments: dict[str, Any], timeout: float
    ) -> ToolResult:
        """Call tool ``name`` on the server within ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout), self._using(key) as client:
                result = await client.call_tool(name, arguments)
        except TimeoutError:
            return failed("timeout", f"the MCP tool {name!r} did not answer within {timeout:g}s")
        except Exception as exc:
            failure = describe(exc, key)
            self._mark(key, failure)
            return failed(failure.reason, failure.message)
        self._mark(key, None)
        return result_of(result)

    def readiness(self) -> list[dict[str, Any]]:
        """Each server the bundle uses: reachability, reason, and who uses it."""
        out = []
        for key, users in sorted(self.users.items(), key=lambda kv: kv[0].url):
            state = self.states.get(key) or ServerState()
            out.append(
                {
                    "url": key.shown(),
                    "transport": key.transport.value,
                    "reachable": state.reachable,
                    "reason": state.reason,
                    "message": state.message,
                    "checkedAt": round(state.checked, 3) if state.checked else None,
                    "tools": [{"agent": a, "tool": t} for a, t in users],
                }
            )
        return out


# ---------------------------------------------------------------- mapping


def server_schema(listed: mcp_types.Tool | None) -> dict[str, Any]:
    """The input schema a server lists, as an OpenAI function's parameters (always an
    object schema: providers refuse anything else)."""
    schema = dict(listed.input_schema) if listed is not None and listed.input_schema else {}
    if schema.get("type") != "object":
        return dict(EMPTY_SCHEMA)
    schema.setdefault("properties", {})
    return schema


def openai_tool(tool: Tool, listed: mcp_types.Tool | None) -> dict[str, Any]:
    """The OpenAI tool object the model sees for an Agent's mcp tool: the Agent's name,
    its description and parameters when given, else the server's."""
    description = tool.description or (listed.description if listed else None) or ""
    parameters = tool.parameters if tool.parameters is not None else server_schema(listed)
    return {
        "type": "function",
        "function": {"name": tool.name, "description": description, "parameters": parameters},
    }


def _part_text(part: Any) -> str:
    if isinstance(part, mcp_types.TextContent):
        return part.text
    if isinstance(part, mcp_types.EmbeddedResource):
        resource = part.resource
        if isinstance(resource, mcp_types.TextResourceContents):
            return resource.text
        return f"[resource {resource.uri} ({resource.mime_type or 'binary'})]"
    if isinstance(part, mcp_types.ResourceLink):
        return f"[resource link {part.uri}]"
    kind = getattr(part, "type", "content")
    mime = getattr(part, "mime_type", None)
    return f"[{kind}{f' {mime}' if mime else ''} omitted]"


def result_of(result: mcp_types.CallToolResult) -> ToolResult:
    """The text given to the model for a tools/call result (text parts joined; the
    structured content when there is no text); a tool's own error is ok=False."""
    texts = [_part_text(p) for p in result.content]
    content = "\n".join(t for t in texts if t)
    if not content and result.structured_content is not None:
        content = json.dumps(result.structured_content, separators=(",", ":"))
    if len(content) > MAX_CONTENT_CHARS:
        return failed(
            "too_large", f"the tool answered {len(content)} characters (limit {MAX_CONTENT_CHARS})"
        )
    if result.is_error:
        return failed("tool_error", content or "the tool reported an error")
    return ToolResult(content=content, ok=True)


class MCPToolRunner:
    """An Agent's mcp tool, ready to be called (kaizen_gateway.tools.ToolRunner)."""

    def __init__(self, tool: Tool, connections: MCPConnections) -> None:
        if tool.mcp is None:
            raise ValueError(f"tool {tool.name} has no mcp block")
        self.tool = tool
        self.name = tool.name
        self.remote_name = tool.mcp.tool_name or tool.name
        self.key = ServerKey(tool.mcp.url, MCPTransport(tool.mcp.transport))
        self.connections = connections

    def _listed(self) -> mcp_types.Tool | None:
        state = self.connections.states.get(self.key)
        return state.tools.get(self.remote_name) if state else None

    async def prepare(self, timeout: float = PREPARE_TIMEOUT) -> None:
        """Fetch the server's listing unless known or not needed (MCPConnections.prepare)."""
        await self.connections.prepare([self.tool], timeout)

    def spec(self) -> dict[str, Any]:
        return openai_tool(self.tool, self._listed())

    async def call(self, arguments: dict[str, Any], *, timeout: float) -> ToolResult:
        return await self.connections.call(self.key, self.remote_name, arguments, timeout)
