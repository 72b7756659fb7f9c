"""Model providers: each turns an OpenAI-shaped chat request into the upstream's protocol
and back. ``provider_for`` picks one from an agent's model spec."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aiohttp
import orjson

from kaizen_api.mounted import MountedFiles
from kaizen_api.netguard import DestinationNotAllowed, check_url
from kaizen_api.netguard_aiohttp import ResponseTooLarge, read_capped
from kaizen_api.v1alpha1.agent import ModelSpec
from kaizen_api.v1alpha1.bundle import SECRETS_MOUNT
from kaizen_gateway.errors import GatewayError, UpstreamError

T = TypeVar("T")
HOW_TO_ALLOW = "start kaizen-gateway with KAIZEN_GATEWAY_ALLOW_LINK_LOCAL=1"
UPSTREAM_MAX_BYTES = 16 * 1024 * 1024  # a chat completion is far smaller; a peer may not OOM us
# Seconds a read credential is used: a rotated key is in use within this long of the
# kubelet updating the mounted Secret (which itself takes up to about a minute).
SECRET_MAX_AGE = 10.0


@dataclass
class ChatRequest:
    """An OpenAI-shaped chat request, with the agent's prompt and parameters applied."""

    model: str
    messages: list[dict[str, Any]]
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class UpstreamConfig:
    """How the gateway talks to providers."""

    session: aiohttp.ClientSession
    timeout: float = 60.0
    retries: int = 2
    backoff: float = 0.25
    secrets_dir: Path = Path(SECRETS_MOUNT)
    allow_link_local: bool = False  # the SSRF guard is off (see kaizen_api.netguard)
    secrets: MountedFiles = field(default_factory=lambda: MountedFiles(SECRET_MAX_AGE))


class Provider(Protocol):
    """One upstream protocol."""

    async def complete(self, req: ChatRequest) -> dict[str, Any]:
        """A whole ``chat.completion`` body."""

    def stream(self, req: ChatRequest) -> AsyncIterator[dict[str, Any]]:
        """``chat.completion.chunk`` bodies."""


def read_secret(cfg: UpstreamConfig, spec: ModelSpec) -> str | None:
    """The API key from the mounted Secret (re-read every few seconds, so rotation needs
    no restart)."""
    ref = spec.credentials_secret_ref
    if ref is None:
        return None
    try:
        return cfg.secrets.read(cfg.secrets_dir / ref.name / ref.key)
    except OSError as exc:
        raise GatewayError(
            503,
            f"credentials for this agent are not available (Secret {ref.name!r} key {ref.key!r} "
            "is not mounted)",
            type_="upstream_error",
            code="credentials_unavailable",
        ) from exc


def _retry_after(headers: Any) -> float | None:
    try:
        return float(headers.get("retry-after", ""))
    except (TypeError, ValueError):
        return None


async def with_retries(
    cfg: UpstreamConfig, attempt: Callable[[], Awaitable[T]], on_retry: Callable[[str], None]
) -> T:
    """Run ``attempt``; retry retryable upstream failures with jittered backoff."""
    for n in range(cfg.retries + 1):
        try:
            return await attempt()
        except UpstreamError as exc:
            if not exc.retryable or n == cfg.retries:
                raise
            on_retry(str(exc.upstream_status or "network"))
            delay = cfg.backoff * (2**n) * (0.5 + random.random())  # noqa: S311 - jitter, not crypto
            await asyncio.sleep(min(delay, 5.0))
    raise AssertionError("unreachable")


async def _raise_for_status(resp: aiohttp.ClientResponse) -> None:
    """Upstream HTTP errors: retryable on 429 and 5xx. Redirects are not followed (they
    could lead to a refused destination), so a 3xx is an error too."""
    if resp.status >= 300:
        # The upstream's body is not passed on: it may echo the credential or other
        # tenants' data, and callers need only know that the upstream failed.
        resp.release()
        raise UpstreamError(
            502,
            f"upstream returned {resp.status}",
            retryable=resp.status == 429 or resp.status >= 500,
            upstream_status=resp.status,
        )


def _answer(raw: bytes) -> dict[str, Any]:
    """An upstream's JSON answer; anything else is the upstream's failure (502), which the
    fallback model may cover. The standard library, not orjson: orjson turns integers
    past 64 bits into floats, which would change a tool call's arguments."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise UpstreamError(
            502, f"upstream answered invalid JSON: {exc}"[:300], retryable=False
        ) from exc
    if not isinstance(data, dict):
        raise UpstreamError(502, "upstream answered JSON that is not an object", retryable=False)
    return data


def _not_allowed(exc: DestinationNotAllowed) -> GatewayError:
    """A refused upstream: 502 like other upstream failures (the caller did nothing
    wrong; the agent's configuration did), neither retried nor sent to the fallback."""
    return GatewayError(
        502,
        f"upstream destination not allowed: {exc}",
        type_="upstream_error",
        code="upstream_destination_not_allowed",
    )


@functools.lru_cache(maxsize=1024)
def _refusal(url: str, allow_link_local: bool) -> DestinationNotAllowed | None:
    """The static part of the guard (scheme, metadata names, literal addresses), once per
    URL; names are checked where aiohttp resolves them (netguard_aiohttp)."""
    try:
        check_url(url, allow_link_local=allow_link_local, how_to_allow=HOW_TO_ALLOW)
    except DestinationNotAllowed as exc:
        return exc
    return None


def guard(cfg: UpstreamConfig, url: str) -> None:
    """Raise the caller's error when ``url`` is a refused destination."""
    refused = _refusal(url, cfg.allow_link_local)
    if refused is not None:
        raise _not_allowed(refused)


@contextlib.contextmanager
def _network_errors(cfg: UpstreamConfig) -> Iterator[None]:
    """Timeouts and connection failures become retryable UpstreamErrors (504/502); a
    name that resolves to a refused address, the caller's 502 (not retried)."""
    try:
        yield
    except DestinationNotAllowed as exc:
        raise _not_allowed(exc) from exc
    except TimeoutError as exc:
        raise UpstreamError(
            504, f"upstream timed out after {cfg.timeout:.0f}s", retryable=True
        ) from exc
    except aiohttp.ClientError as exc:
        raise UpstreamError(
            502, f"upstream unreachable: {exc.__class__.__name__}", retryable=True
        ) from exc


async def post_json(
    cfg: UpstreamConfig, url: str, body: dict[str, Any], headers: dict[str, str]
) -> dict[str, Any]:
    """POST JSON; upstream failures become UpstreamError (retryable on 429/5xx/network)."""
    guard(cfg, url)
    with _network_errors(cfg):
        async with cfg.session.post(
            url,
            data=encode(body),
            headers={**headers, "content-type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=cfg.timeout),
            allow_redirects=False,
        ) as resp:
            await _raise_for_status(resp)
            try:
                raw = await read_capped(resp, UPSTREAM_MAX_BYTES)
            except ResponseTooLarge as exc:
                raise UpstreamError(502, f"upstream {exc}", retryable=False) from exc
            return _answer(raw)


async def sse_lines(
    cfg: UpstreamConfig, url: str, body: dict[str, Any], headers: dict[str, str]
) -> AsyncIterator[str]:
    """POST and yield the ``data:`` payloads of a server-sent-event stream."""
    guard(cfg, url)
    with _network_errors(cfg):
        async with cfg.session.post(
            url,
            data=encode(body),
            headers={**headers, "content-type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=None, sock_read=cfg.timeout),
            allow_redirects=False,
        ) as resp:
            await _raise_for_status(resp)
            async for raw in resp.content:
                line = raw.decode().strip()
                if line.startswith("data:"):
                    yield line[5:].strip()


async def sse_with_retries(
    cfg: UpstreamConfig,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    on_retry: Callable[[str], None],
) -> AsyncIterator[str]:
    """``sse_lines``, retried on retryable failures until the first payload arrives
    (after that the caller has started answering, and a retry would repeat output)."""
    attempts = 0
    while True:
        started = False
        try:
            async for data in sse_lines(cfg, url, body, headers):
                started = True
                yield data
            return
        except UpstreamError as exc:
            if started or not exc.retryable or attempts >= cfg.retries:
                raise
            attempts += 1
            on_retry(str(exc.upstream_status or "network"))


def provider_for(spec: ModelSpec, cfg: UpstreamConfig, on_retry: Callable[[str], None]) -> Provider:
    """The provider implementation for a model spec."""
    from kaizen_gateway.providers.anthropic import AnthropicProvider
    from kaizen_gateway.providers.mock import MockProvider
    from kaizen_gateway.providers.openai import OpenAIProvider

    if spec.provider == "mock":
        return MockProvider()
    if spec.provider == "anthropic":
        return AnthropicProvider(spec, cfg, on_retry)
    return OpenAIProvider(spec, cfg, on_retry)


def encode(obj: Any) -> bytes:
    """Compact JSON as bytes: orjson (a tenth of the standard library's time), or the
    standard library for what orjson refuses, such as integers past 64 bits."""
    try:
        return orjson.dumps(obj)
    except TypeError:
        return json.dumps(obj, separators=(",", ":")).encode()


def dumps(obj: Any) -> str:
    """Compact JSON."""
    return encode(obj).decode()
