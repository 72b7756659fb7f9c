"""L3 (gateway): a flood of fresh keys cannot reset every caller's rate limit; an
upstream's error body is not echoed to callers; an upstream answer is read up to a cap."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web

from kaizen_api.netguard_aiohttp import ResponseTooLarge, read_capped
from kaizen_gateway.errors import UpstreamError
from kaizen_gateway.ratelimit import KeyedBuckets


def test_a_key_flood_does_not_reset_a_limited_caller() -> None:
    buckets = KeyedBuckets(rate=0.001, burst=1, max_keys=100)
    assert buckets.take("victim-of-spend") == 0.0
    assert buckets.take("victim-of-spend") > 0  # limited
    for n in range(10_000):  # a flood of fresh keys (auth None: fresh addresses)
        buckets.take(f"k{n}")
        if n % 50 == 0:
            assert buckets.take("victim-of-spend") > 0, n  # still limited, still known
    assert len(buckets.buckets) <= 100


async def _serve(handler: Any) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/"


def test_upstream_error_bodies_are_not_echoed_and_answers_are_capped() -> None:
    import aiohttp

    from kaizen_gateway.providers import _raise_for_status

    async def leaky(_: web.Request) -> web.Response:
        return web.Response(status=401, text="invalid key sk-live-SECRET for org acme")

    async def huge(_: web.Request) -> web.StreamResponse:
        return web.Response(body=b"x" * (3 * 1024 * 1024), content_type="application/json")

    async def run() -> None:
        for handler, check in ((leaky, "status"), (huge, "size")):
            runner, url = await _serve(handler)
            try:
                async with aiohttp.ClientSession() as session, session.post(url) as resp:
                    if check == "status":
                        with pytest.raises(UpstreamError) as caught:
                            await _raise_for_status(resp)
                        assert "SECRET" not in str(caught.value)
                        assert str(caught.value) == "upstream returned 401"
                    else:
                        # the reader every upstream answer goes through (post_json: 502)
                        with pytest.raises(ResponseTooLarge, match="exceeded"):
                            await read_capped(resp, 1024 * 1024)
            finally:
                await runner.cleanup()

    asyncio.run(run())
