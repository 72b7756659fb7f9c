"""The request body limit: bodies over ``max_bytes`` are answered 413 problem+json.

Plain ASGI, so nothing is buffered here: a declared Content-Length over the limit is
refused before the app runs (the body is never read), one within it passes untouched
(the HTTP parser reads no more than declared), and a chunked body is counted as the
app reads it; reading stops at the first chunk past the limit and the app's
answer to the cut body is replaced by the 413.
"""

from __future__ import annotations

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kaizen_api.server.problems import problem_response


class BodyTooLarge(Exception):
    """Raised to the app's body reader once the body passes the limit."""


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` (0: no limit)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.max_bytes <= 0:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        if b"transfer-encoding" not in headers and scope.get("http_version") in ("1.0", "1.1"):
            # In HTTP/1 the body is at most the declared length (none declared: no body),
            # which the parser enforces: nothing to count, and no wrappers to pay for.
            await self.app(scope, receive, send)
            return
        received = 0
        over = started = False

        async def counted() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    over = True
                    raise BodyTooLarge(f"request body larger than {self.max_bytes} bytes")
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if over:
                return  # the app's answer to a cut body; the 413 replaces it
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except Exception:
            if not over or started:
                raise
        if over and not started:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            Request(scope),
            413,
            "request-too-large",
            "The request body is too large",
            f"request bodies are limited to {self.max_bytes} bytes",
            headers={"connection": "close"},
        )
        await response(scope, receive, send)
