#!/usr/bin/env python3
"""A real MCP tool server made with the official ``mcp`` SDK, run as its own process by
the tests, the examples and ``make dev``.

    python hack/toolserver/mcp_server.py --port 8931 [--transport streamable-http|sse]

Streamable HTTP serves ``/mcp``; SSE serves ``/sse`` (messages on ``/messages/``).
Its tools are deterministic, so tests and examples can assert on their answers:

- ``lookup_order(order_id)``: an order's status, carrier and total, derived from the id
- ``add(a, b)``: the sum of two integers
- ``sleep(seconds)``: answers after a while (for timeouts and killing a server mid-call)
- ``blob(megabytes)``: a huge answer (for the size cap)

``GET /stats`` answers {"handshakes": n, "calls": {tool: n}}: a handshake is an
``initialize`` or ``server/discover`` request, i.e. one client connection (session).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections import Counter
from typing import Any

import anyio
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

HANDSHAKES = ("initialize", "server/discover")
STATUSES = ("processing", "shipped", "delivered")
CARRIERS = ("DHL", "UPS", "La Poste")

handshakes = 0
calls: Counter[str] = Counter()


async def count(ctx: ServerRequestContext[Any], call_next: CallNext) -> HandlerResult:
    """Count handshakes and tool calls (served on /stats)."""
    global handshakes
    if ctx.method in HANDSHAKES:
        handshakes += 1
    elif ctx.method == "tools/call" and isinstance(ctx.params, dict):
        calls[str(ctx.params.get("name"))] += 1
    return await call_next(ctx)


server: MCPServer[Any] = MCPServer(
    "kaizen-toolserver", instructions="Deterministic demo tools.", middleware=[count]
)


@server.tool()
def lookup_order(order_id: str) -> dict[str, Any]:
    """Look up an order by its id: status, carrier and total in euros."""
    digest = hashlib.sha256(order_id.encode()).digest()
    return {
        "order_id": order_id,
        "status": STATUSES[digest[0] % len(STATUSES)],
        "carrier": CARRIERS[digest[1] % len(CARRIERS)],
        "total_eur": round(10 + int.from_bytes(digest[2:4], "big") % 50000 / 100, 2),
    }


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
async def sleep(seconds: float) -> str:
    """Wait ``seconds`` seconds, then answer."""
    await anyio.sleep(seconds)
    return f"slept {seconds:g}s"


@server.tool()
def blob(megabytes: float) -> str:
    """Answer ``megabytes`` MB of text (a hostile answer, for the size cap)."""
    return "x" * int(megabytes * 1_000_000)


@server.custom_route("/stats", methods=["GET"])  # type: ignore[untyped-decorator]
async def stats(_: Request) -> Response:
    return JSONResponse({"handshakes": handshakes, "calls": dict(calls)})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8931)
    parser.add_argument(
        "--transport", choices=("streamable-http", "sse"), default="streamable-http"
    )
    args = parser.parse_args(argv)
    # The SDK's DNS-rebinding protection accepts only localhost Host headers when bound
    # to loopback; the gateway's tests reach this server as 127.0.0.1 and localhost.
    security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    if args.transport == "sse":
        server.run("sse", host=args.host, port=args.port, transport_security=security)
    else:
        server.run("streamable-http", host=args.host, port=args.port, transport_security=security)
    return 0


if __name__ == "__main__":
    sys.exit(main())
