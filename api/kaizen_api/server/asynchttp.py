"""A small HTTP/1.1 client on the event loop for the facade's calls to the apiserver:
kept-alive TLS connections in a pool, responses parsed by httptools (uvicorn's own
parser, a facade dependency already).

Why not urllib3 in the thread pool: the thread hop per request and http.client's
header parsing were a third of the facade's CPU per call (py-spy, bench/facade); why
not httpx.AsyncClient: twice urllib3's CPU per call. One request at a time per
connection; a connection whose answer was not read whole (cancelled, timed out,
failed) is closed, never reused.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable
from typing import cast

import httptools

FORBIDDEN = frozenset("\r\n\0")


class ConnectionClosed(ConnectionError):
    """The server closed the connection before its answer was complete."""


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None
        self._body: list[bytes] = []
        self._keep_alive = False
        self.reason = b""

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc or ConnectionClosed("the apiserver closed the connection"))

    # httptools callbacks
    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_headers_complete(self) -> None:
        # Asked here: once the message is complete the parser has reset its flags.
        self._keep_alive = self._parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)

    async def exchange(self, request: bytes) -> tuple[int, str, bytes]:
        assert self.transport is not None  # noqa: S101 - set on connect
        self._waiter = asyncio.get_running_loop().create_future()
        self._body, self._keep_alive, self.reason = [], False, b""
        self.transport.write(request)
        await self._waiter
        status = self._parser.get_status_code()
        if not self._keep_alive:
            self.close()
        return status, self.reason.decode("latin-1"), b"".join(self._body)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class AsyncHTTP:
    """Requests to one origin (``https://host:port``) over pooled connections."""

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None, *, size: int = 32) -> None:
        self.host, self.port, self.tls, self.size = host, port, tls, size
        self._idle: list[_Connection] = []
        authority = host if port in (80, 443) else f"{host}:{port}"
        self._host_header = f"Host: {authority}\r\n".encode("latin-1")

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(
            _Connection,
            self.host,
            self.port,
            ssl=self.tls,
            server_hostname=(self.host if self.tls else None),
        )
        return conn

    async def request(
        self,
        method: str,
        target: str,
        headers: Iterable[tuple[str, str]],
        body: bytes | None,
        timeout: float,
    ) -> tuple[int, str, bytes]:
        """(status, reason, body). ``target`` is the request-target (path and query)."""
        head = [f"{method} {target} HTTP/1.1\r\n".encode("latin-1"), self._host_header]
        if FORBIDDEN.intersection(method + target):
            raise ValueError("CR, LF or NUL in the request line")
        for name, value in headers:
            if FORBIDDEN.intersection(name + value):
                raise ValueError(f"CR, LF or NUL in header {name}")
            head.append(f"{name}: {value}\r\n".encode("latin-1"))
        if body is not None:
            head.append(f"Content-Length: {len(body)}\r\n".encode("latin-1"))
        head.append(b"\r\n")
        message = b"".join(head) + (body or b"")
        async with asyncio.timeout(timeout):
            while self._idle:
                conn = self._idle.pop()
                if conn.closed:
                    continue
                try:
                    answer = await conn.exchange(message)
                except ConnectionClosed:
                    # Closed by the server while idle, before any answer: nothing was
                    # processed only if it is an idempotent read; otherwise report it.
                    if method not in ("GET", "HEAD"):
                        raise
                    continue
                except BaseException:
                    conn.close()
                    raise
                self._release(conn)
                return answer
            conn = await self._connect()
            try:
                answer = await conn.exchange(message)
            except BaseException:
                conn.close()
                raise
            self._release(conn)
            return answer

    def _release(self, conn: _Connection) -> None:
        if conn.closed or len(self._idle) >= self.size:
            conn.close()
        else:
            self._idle.append(conn)

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()
