"""The SSRF guard (kaizen_api.netguard) where aiohttp connects, for the operator and
the gateway: a resolver that refuses link-local and metadata addresses.

Checking a URL before the request is not enough for host names: the name can resolve
to a public address for the check and to 169.254.169.254 when the client connects (DNS
rebinding). This resolver checks the very addresses aiohttp then connects to. IP
literals never reach a resolver, so URLs are still checked with netguard first.

Every outbound call of the operator and the gateway also passes
``allow_redirects=False`` (a redirect could lead to a refused host, and aiohttp would
follow it unchecked) and reads answers with ``read_capped`` (a peer is not trusted to
exhaust our memory).
"""

from __future__ import annotations

import socket
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from kaizen_api.netguard import check_resolved


class ResponseTooLarge(aiohttp.ClientPayloadError):
    """An answer longer than the caller's cap (a ClientError, so handlers that treat a
    peer's failure treat this one too)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"the answer exceeded {limit} bytes")


async def read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The (decoded) body of ``resp``, refusing with ResponseTooLarge once it exceeds
    ``limit`` bytes: no more than ``limit`` plus one chunk is ever held."""
    declared = resp.content_length
    if declared is not None and declared > limit:
        raise ResponseTooLarge(limit)
    parts: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise ResponseTooLarge(limit)
        parts.append(chunk)
    return b"".join(parts)


async def read_at_most(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The first ``limit`` bytes of the body (all of it when shorter); the rest is never
    read. (``resp.content.read(n)`` may return fewer than ``n`` bytes before the end.)"""
    parts: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_any():
        parts.append(chunk[: limit - size])
        size += len(parts[-1])
        if size >= limit:
            break
    return b"".join(parts)


async def read_prefix(resp: aiohttp.ClientResponse, limit: int) -> str:
    """At most ``limit`` bytes of the body as text (for messages); the rest is never read."""
    return (await read_at_most(resp, limit)).decode("utf-8", errors="replace")


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, refusing names that resolve to a refused address
    (raises DestinationNotAllowed out of the request call)."""

    def __init__(self, how_to_allow: str, inner: AbstractResolver | None = None) -> None:
        self.how_to_allow = how_to_allow
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        check_resolved(host, [r["host"] for r in results], self.how_to_allow)
        return results

    async def close(self) -> None:
        await self._inner.close()


def guarded_connector(
    *, allow_link_local: bool, how_to_allow: str, **options: Any
) -> aiohttp.TCPConnector:
    """A TCPConnector whose name lookups are guarded (unless ``allow_link_local``).
    Call it inside the event loop."""
    resolver = None if allow_link_local else GuardedResolver(how_to_allow)
    return aiohttp.TCPConnector(resolver=resolver, **options)
