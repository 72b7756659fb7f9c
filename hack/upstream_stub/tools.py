"""`python -m upstream_stub.tools --port N`: HTTP endpoints an agent's http tools call,
on 127.0.0.1, for tests, benchmarks and `make dev`.

    GET  /weather?city=X   {"city": X, "forecast": "sunny", "celsius": 21}
    POST /echo             the JSON body, back
    GET  /big?mb=N         N MiB of text (default 50), streamed
    GET  /slow?seconds=S   answers after S seconds (default 0.3); /_requests reports the
                           most calls it served at once ("most_in_flight")
    GET  /hang             never answers
    GET  /redirect         302 to /weather
    GET  /status/{code}    that status, with a short body
    GET  /_requests        what the endpoints received (method, path, query, headers, body)
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

RECEIVED: list[dict[str, Any]] = []
IN_FLIGHT = {"now": 0, "most": 0}


async def _record(request: Request) -> None:
    body = await request.body()
    RECEIVED.append(
        {
            "method": request.method,
            "path": request.url.path,
            "query": dict(request.query_params),
            "headers": dict(request.headers),
            "body": json.loads(body) if body else None,
        }
    )
    del RECEIVED[:-200]


async def weather(request: Request) -> Response:
    await _record(request)
    city = request.query_params.get("city", "nowhere")
    return JSONResponse({"city": city, "forecast": "sunny", "celsius": 21})


async def echo(request: Request) -> Response:
    await _record(request)
    return JSONResponse({"echo": RECEIVED[-1]["body"]})


async def big(request: Request) -> Response:
    await _record(request)
    mib = int(request.query_params.get("mb", "50"))
    block = b"x" * 1_048_575 + b"\n"

    async def blocks() -> AsyncIterator[bytes]:
        for _ in range(mib):
            yield block

    return StreamingResponse(blocks(), media_type="text/plain")


async def slow(request: Request) -> Response:
    await _record(request)
    IN_FLIGHT["now"] += 1
    IN_FLIGHT["most"] = max(IN_FLIGHT["most"], IN_FLIGHT["now"])
    try:
        await asyncio.sleep(float(request.query_params.get("seconds", "0.3")))
    finally:
        IN_FLIGHT["now"] -= 1
    return JSONResponse({"slept": True})


async def hang(request: Request) -> Response:
    await _record(request)
    await asyncio.sleep(3600)
    return PlainTextResponse("too late")


async def redirect(request: Request) -> Response:
    await _record(request)
    return Response(status_code=302, headers={"location": "/weather"})


async def status(request: Request) -> Response:
    await _record(request)
    code = int(request.path_params["code"])
    return PlainTextResponse(f"status {code} on purpose", status_code=code)


async def received(_: Request) -> Response:
    return JSONResponse({"requests": RECEIVED, "most_in_flight": IN_FLIGHT["most"]})


app = Starlette(
    routes=[
        Route("/weather", weather),
        Route("/echo", echo, methods=["POST", "PUT", "PATCH", "DELETE"]),
        Route("/big", big),
        Route("/slow", slow),
        Route("/hang", hang),
        Route("/redirect", redirect),
        Route("/status/{code:int}", status),
        Route("/_requests", received),
    ]
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
