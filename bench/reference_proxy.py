#!/usr/bin/env python3
"""Reference proxies for bench/gateway_latency.py --reference: what a chat-completions hop
costs in Python on this machine with no gateway logic at all (no auth, limits,
validation, metrics, retries or headers), so the gateway's share of the floor can be
read against what is reachable.

    python bench/reference_proxy.py --kind asgi-aiohttp --port P --upstream-port U
    python bench/reference_proxy.py --kind httptools --port P --upstream-port U

``asgi-aiohttp``: a bare ASGI app on uvicorn (httptools, asyncio's loop, as the gateway)
that forwards with one aiohttp session: the libraries the gateway is built on, and
nothing else.
``httptools``: a hand-written keep-alive proxy on uvloop with httptools parsers on both
sides (no chunked bodies, no TLS, no timeouts): roughly Python's ceiling. It exists only
to measure; the gateway itself stays on well-kept libraries.

Both rewrite the request like the gateway (system prompt, model name) and the answer
(model name), with orjson.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import httptools
import orjson
import uvloop

PATH = b"/v1/chat/completions"


def rewrite_request(body: bytes) -> bytes:
    request = orjson.loads(body)
    request["messages"] = [{"role": "system", "content": "Be brief."}, *request["messages"]]
    request["model"] = "gpt-4o-mini"
    return orjson.dumps(request)


def rewrite_answer(body: bytes) -> bytes:
    answer = orjson.loads(body)
    answer["model"] = "helper"
    return orjson.dumps(answer)


async def lifespan_or_body(scope: dict[str, Any], receive: Any, send: Any) -> bytes | None:
    """Answer the lifespan protocol (None once it ends) or read an HTTP request's body."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return None
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    return body


def serve_asgi_aiohttp(port: int, upstream: int) -> None:
    import aiohttp
    import uvicorn

    url = f"http://127.0.0.1:{upstream}{PATH.decode()}"
    session: list[aiohttp.ClientSession] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = await lifespan_or_body(scope, receive, send)
        if body is None:
            return
        if not session:
            session.append(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000)))
        headers = {"content-type": "application/json"}
        async with session[0].post(url, data=rewrite_request(body), headers=headers) as resp:
            status, answer = resp.status, await resp.read()
        data = rewrite_answer(answer)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(data)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": data})

    uvicorn.run(  # the loop and HTTP parser kaizen-gateway runs on
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        loop="asyncio",
        http="httptools",
    )


class _Upstream(asyncio.Protocol):
    """One kept-alive connection to the stub, one request at a time."""

    def __init__(self, idle: list[_Upstream]) -> None:
        self.idle = idle
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.chunks: list[bytes] = []
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:  # uvloop's is no asyncio.Transport
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        body, self.chunks = b"".join(self.chunks), []
        self.idle.append(self)
        if waiter is not None:
            waiter.set_result((self.parser.get_status_code(), body))

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.idle:
            self.idle.remove(self)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("upstream closed"))


def serve_httptools(port: int, upstream: int) -> None:
    idle: list[_Upstream] = []
    running: set[asyncio.Task[None]] = set()

    async def forward(body: bytes) -> tuple[int, bytes]:
        loop = asyncio.get_running_loop()
        if idle:
            conn = idle.pop()
        else:
            _, conn = await loop.create_connection(lambda: _Upstream(idle), "127.0.0.1", upstream)
        conn.waiter = loop.create_future()
        conn.transport.write(
            b"POST %s HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (PATH, len(body), body)
        )
        return await conn.waiter

    class Downstream(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            self.parser = httptools.HttpRequestParser(self)
            self.chunks: list[bytes] = []

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_body(self, body: bytes) -> None:
            self.chunks.append(body)

        def on_message_complete(self) -> None:
            body, self.chunks = b"".join(self.chunks), []
            task = asyncio.get_running_loop().create_task(self.answer(body))
            running.add(task)  # a task nothing refers to may be collected mid-flight
            task.add_done_callback(running.discard)

        async def answer(self, body: bytes) -> None:
            status, answer = await forward(rewrite_request(body))
            data = rewrite_answer(answer)
            self.transport.write(
                b"HTTP/1.1 %d OK\r\ncontent-type: application/json\r\ncontent-length: %d"
                b"\r\n\r\n%s" % (status, len(data), data)
            )

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Downstream, "127.0.0.1", port)
        await server.serve_forever()

    uvloop.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kind", choices=["asgi-aiohttp", "httptools"], required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    args = parser.parse_args()
    serve = serve_asgi_aiohttp if args.kind == "asgi-aiohttp" else serve_httptools
    serve(args.port, args.upstream_port)


if __name__ == "__main__":
    main()
