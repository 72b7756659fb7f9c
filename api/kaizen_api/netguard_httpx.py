"""The SSRF guard (kaizen_api.netguard) where httpx2 connects: the HTTP client of the
official ``mcp`` SDK, which the gateway uses to reach MCP tool servers.

The twin of netguard_aiohttp, one step lower: the check runs in the connection pool's
network backend, on every address about to be connected to, IP literals included (so
a host the client normalises into an address is checked as that address). The backend
then connects to the address it checked, so a name cannot resolve to another address
in between (DNS rebinding). TLS still verifies the certificate against the URL's host.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from typing import Any

import anyio
import httpcore2
import httpx2

from kaizen_api.netguard import check_resolved

SocketOption = Any  # httpcore2's SOCKET_OPTION union, private to it


class GuardedBackend(httpcore2.AnyIOBackend):
    """httpcore2's anyio backend, refusing link-local and metadata destinations
    (raises DestinationNotAllowed out of the request)."""

    def __init__(self, how_to_allow: str) -> None:
        self.how_to_allow = how_to_allow

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        with anyio.fail_after(timeout):
            infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        check_resolved(host, addresses, self.how_to_allow)
        error: Exception | None = None
        for address in addresses:
            try:
                return await super().connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except httpcore2.ConnectError as exc:  # try the next address, as the resolver would
                error = exc
        raise error or httpcore2.ConnectError(f"{host} resolved to no address")


class GuardedTransport(httpx2.AsyncHTTPTransport):
    """httpx2's transport whose connection pool connects through GuardedBackend."""

    def __init__(self, how_to_allow: str, **options: Any) -> None:
        super().__init__(trust_env=False, **options)
        # httpx2's transport takes no network backend; its pool does. Environment
        # proxies are off (trust_env=False): a proxy would connect on our behalf, unchecked.
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=self._pool._ssl_context,
            network_backend=GuardedBackend(how_to_allow),
        )


def guarded_transport(*, allow_link_local: bool, how_to_allow: str) -> httpx2.AsyncHTTPTransport:
    """An httpx2 transport whose connections are guarded (unless ``allow_link_local``)."""
    if allow_link_local:
        return httpx2.AsyncHTTPTransport(trust_env=False)
    return GuardedTransport(how_to_allow)


def guarded_client(
    *, allow_link_local: bool, how_to_allow: str, **options: Any
) -> httpx2.AsyncClient:
    """An httpx2 client whose connections are guarded (unless ``allow_link_local``)."""
    transport = guarded_transport(allow_link_local=allow_link_local, how_to_allow=how_to_allow)
    return httpx2.AsyncClient(transport=transport, trust_env=False, **options)
