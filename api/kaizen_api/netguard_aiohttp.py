"""The SSRF guard (kaizen_api.netguard) where aiohttp connects, for the operator and
the gateway: a resolver that refuses link-local and metadata addresses.

Checking a URL before the request is not enough for host names: the name can resolve
to a public address for the check and to 169.254.169.254 when the client connects (DNS
rebinding). This resolver checks the very addresses aiohttp then connects to. IP
literals never reach a resolver, so URLs are still checked with netguard first.
"""

from __future__ import annotations

import socket
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from kaizen_api.netguard import check_resolved


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
