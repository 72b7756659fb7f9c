#!/usr/bin/env python3
"""Reference for bench/facade_overhead.py --reference: the facade's HTTP hop with no
facade logic. A bare ASGI app on uvicorn maps
``/orgs/{org}/workspaces/{ws}/agents[/name]`` to the workspace's namespace and calls the
apiserver through the facade's own client (``Kube.arequest``, aiohttp over TLS) as one
fixed impersonated user; no authentication, permission check, validation, audit record
or problem+json. Its ratio to the direct call is what any Python facade could reach on
this machine.

    python bench/reference_facade.py --port P --user U --group G   (KUBECONFIG set)
"""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import parse_qsl

import orjson
import uvicorn
from reference_proxy import lifespan_or_body  # bench/, this script's folder

from kaizen_api.server.kube import Caller, Kube


def build_app(kube: Kube, caller: Caller) -> Any:
    """The pass-through ASGI app."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = await lifespan_or_body(scope, receive, send)
        if body is None:
            return
        _, org, _, ws, *rest = scope["path"].strip("/").split("/")
        path = f"/apis/kaizen.studio/v1alpha1/namespaces/kz-{org}--{ws}/{'/'.join(rest)}"
        params = dict(parse_qsl(scope["query_string"].decode())) or None
        _, raw = await kube.arequest(
            scope["method"],
            path,
            caller=caller,
            body=orjson.loads(body) if body else None,
            params=params,
        )
        status = 201 if scope["method"] == "POST" else 200
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(raw))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": raw})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--group", required=True)
    args = parser.parse_args()
    app = build_app(Kube(), Caller(args.user, (args.group,)))
    uvicorn.run(  # the loop and HTTP parser kaizen-api runs on
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        loop="asyncio",
        http="httptools",
    )


if __name__ == "__main__":
    main()
