"""The gateway's connection to Redis (conversation memory, shared rate limits).

Every call is bounded by ``timeout`` (the socket's and an outer ``asyncio.timeout``), so a
Redis that hangs or is gone never holds a request longer than that. After a failure
Redis is skipped for ``pause`` seconds: under load, requests then fall back at once
instead of each waiting for its own timeout. Callers catch ``RedisUnavailable`` and
apply the documented fallback (memory skipped, per-pod rate limits).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from kaizen_gateway import metrics

T = TypeVar("T")
log = logging.getLogger("kaizen_gateway.redis")


class RedisUnavailable(Exception):
    """Redis could not be used for this call (down, slow, or paused after a failure)."""


def redacted(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class RedisLink:
    """A pooled async Redis client with bounded calls and a short pause after failures."""

    def __init__(self, url: str, *, timeout: float = 0.25, pause: float = 1.0) -> None:
        self.url = url
        self.timeout = timeout
        self.pause = pause
        self.client: Any = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry_on_timeout=False,
            health_check_interval=30,
        )
        self._paused_until = 0.0
        self._was_down = False

    async def call(self, op: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``op(client)`` within the timeout; RedisUnavailable when that fails."""
        if self._paused_until and time.monotonic() < self._paused_until:
            raise RedisUnavailable("paused after a recent failure")
        try:
            async with asyncio.timeout(self.timeout):  # no extra task, unlike wait_for
                result = await op(self.client)
        except (RedisError, OSError, TimeoutError) as exc:
            self._paused_until = time.monotonic() + self.pause
            metrics.REDIS_FAILURES.inc()
            if not self._was_down:
                log.warning("redis %s unavailable: %r", redacted(self.url), exc)
            self._was_down = True
            raise RedisUnavailable(exc.__class__.__name__) from exc
        if self._was_down:
            log.warning("redis %s reachable again", redacted(self.url))
            self._was_down = False
        self._paused_until = 0.0
        return result

    @property
    def available(self) -> bool:
        """False while paused after a failure (what /readyz details report)."""
        return not (self._paused_until and time.monotonic() < self._paused_until)

    async def close(self) -> None:
        await self.client.aclose()
