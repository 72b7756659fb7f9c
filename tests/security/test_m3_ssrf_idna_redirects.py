"""M3 of the security review: the SSRF guard judged a host differently from the HTTP
client (Unicode/IDNA spellings of an address passed as "a name" and aiohttp then
connected to the address without asking the resolver), the operator's /metrics scrape
and smoke invocation followed redirects wherever a tenant's pod pointed them, and
answers were read without a size limit.

Against real sockets: a receiver on 127.0.0.1 stands for the forbidden destination
(169.254.169.254 cannot be reached from a test machine), the real operator functions
and a real gateway process make the calls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from yarl import URL

from kaizen_api.netguard import DestinationNotAllowed, check_url
from kaizen_api.v1alpha1.promotion import WebhookTarget
from kaizen_operator.gatewaymetrics import METRICS_MAX_BYTES, read_readiness, scrape
from kaizen_operator.promotion.gates import post_json
from tests.reliability.test_ssrf_guard import SECRET, _run

# Spellings of 169.254.169.254 that yarl (so aiohttp) turns into the address itself.
UNICODE_METADATA = [
    "\u2460\u2465\u2468.\u2461\u2464\u2463.\u2460\u2465\u2468.\u2461\u2464\u2463",  # circled
    "\uff11\uff16\uff19\uff0e\uff12\uff15\uff14\uff0e\uff11\uff16\uff19\uff0e\uff12\uff15\uff14",
    "169\u3002254\u3002169\u3002254",  # ideographic full stops
]
FULLWIDTH_LOOPBACK = "\uff11\uff12\uff17\uff0e\uff10\uff0e\uff10\uff0e\uff11"  # 127.0.0.1

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def serve(routes: dict[str, Handler]) -> tuple[web.AppRunner, str]:
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_route("*", path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


class Receiver:
    """The destination an attacker wants the operator to reach; counts who came."""

    def __init__(self) -> None:
        self.hits: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.hits.append(f"{request.method} {request.path} {request.headers.get('authorization')}")
        return web.Response(text="credentials")


@pytest.mark.parametrize("host", UNICODE_METADATA)
def test_a_unicode_spelled_metadata_address_is_refused(host: str) -> None:
    url = f"http://{host}/latest/meta-data"
    assert URL(url).raw_host == "169.254.169.254"  # where aiohttp would connect
    with pytest.raises(DestinationNotAllowed) as refused:
        check_url(url)
    assert "169.254.169.254 with non-ASCII characters" in str(refused.value)
    # Not even the explicit allow switch makes such a spelling acceptable.
    with pytest.raises(DestinationNotAllowed):
        check_url(url, allow_link_local=True)


def test_invalid_idna_names_are_refused_and_valid_ones_pass() -> None:
    with pytest.raises(DestinationNotAllowed) as refused:
        check_url("http://a\u200db.example/")
    assert "not a valid internationalised domain name (IDNA)" in str(refused.value)
    check_url("http://ex\u00e4mple.com/v1")  # a real IDN stays usable
    with pytest.raises(DestinationNotAllowed, match="metadata"):
        check_url("http://\uff4d\uff45\uff54\uff41\uff44\uff41\uff54\uff41.google.internal/")


def test_a_webhook_at_a_unicode_spelled_address_gets_no_token() -> None:
    """Before: the guard saw a name, aiohttp connected to 127.0.0.1 (standing in for
    169.254.169.254) and POSTed the bearer token there."""

    async def scenario() -> None:
        receiver = Receiver()
        runner, base = await serve({"/{tail:.*}": receiver.handle})
        try:
            port = URL(base).port
            hook = WebhookTarget(url=f"http://{FULLWIDTH_LOOPBACK}:{port}/hook")
            outcome = await post_json(hook, {"x": 1}, SECRET)
        finally:
            await runner.cleanup()
        assert receiver.hits == []
        assert not outcome.passed
        assert outcome.message.startswith("webhook destination not allowed: host ")
        assert "127.0.0.1 with non-ASCII characters" in outcome.message

    asyncio.run(scenario())


def test_the_metrics_scrape_follows_no_redirect_and_caps_the_page() -> None:
    """A tenant's gateway pod answers /metrics with a redirect to the forbidden
    destination, or with a page larger than the operator should hold."""

    async def scenario() -> None:
        receiver = Receiver()
        target, target_url = await serve({"/{tail:.*}": receiver.handle})

        async def redirect(request: web.Request) -> web.Response:
            raise web.HTTPFound(f"{target_url}/latest/meta-data/iam")

        async def huge(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse()  # no content-length: chunked, as an attacker would
            await response.prepare(request)
            chunk = b"#" * 65536 + b"\n"
            for _ in range(METRICS_MAX_BYTES // len(chunk) + 8):
                await response.write(chunk)
            return response

        pods = {}
        runners = [target]
        for name, handler in {"redirect": redirect, "huge": huge}.items():
            runner, url = await serve({"/metrics": handler, "/readyz": handler})
            runners.append(runner)
            pods[name] = url
        try:
            started = time.monotonic()
            pages = await scrape(list(pods.values()), timeout=20)
            readiness = await read_readiness(list(pods.values()), timeout=20)
        finally:
            for runner in runners:
                await runner.cleanup()
        assert receiver.hits == []  # the redirect was not followed
        assert pages == {} and readiness == {}
        assert time.monotonic() - started < 20

    asyncio.run(scenario())


def test_a_webhook_answer_is_read_only_as_far_as_it_is_shown() -> None:
    async def scenario() -> None:
        async def endless(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse(status=500)
            await response.prepare(request)
            try:
                while True:  # an answer that never ends: reading it whole never returns
                    await response.write(b"x" * 65536)
            except (ConnectionError, RuntimeError):  # the reader hung up
                return response

        runner, url = await serve({"/hook": endless})
        try:
            started = time.monotonic()
            outcome = await post_json(WebhookTarget(url=f"{url}/hook", timeout="15s"), {}, None)
        finally:
            await runner.cleanup()
        assert not outcome.passed
        assert outcome.message == "webhook answered 500: " + "x" * 300
        assert time.monotonic() - started < 10

    asyncio.run(scenario())


def test_the_gateway_refuses_a_unicode_spelled_upstream(tmp_path: Path) -> None:
    """End to end, a real gateway process: an agent whose provider base URL spells the
    metadata address in Unicode is answered by the guard, without connecting."""
    hostile = {
        f"imds-unicode-{i}": ("openai-compatible", f"http://{host}/v1")
        for i, host in enumerate(UNICODE_METADATA)
    }
    for url, process in _run(tmp_path, {"KAIZEN_GATEWAY_ALLOW_LINK_LOCAL": ""}, hostile=hostile):
        for name in hostile:
            started = time.monotonic()
            r = httpx.post(
                f"{url}/v1/chat/completions",
                json={"model": name, "messages": [{"role": "user", "content": "hi"}]},
                timeout=30,
            )
            assert time.monotonic() - started < 2, f"{name}: slow, as if it connected"
            assert r.status_code == 502, r.text
            error = r.json()["error"]
            assert error["code"] == "upstream_destination_not_allowed", error
            assert "169.254.169.254 with non-ASCII characters" in error["message"]
            assert SECRET not in r.text
        assert SECRET not in process.log.read_text()
