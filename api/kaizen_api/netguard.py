"""Where our outbound HTTP calls may go: the guard against server-side request forgery.

Promotion webhooks and model providers' base URLs are written by users; without a
guard, a URL such as ``http://169.254.169.254/latest/meta-data`` makes the operator or
a gateway pod fetch the cloud's instance metadata (credentials) on their behalf.

Refused: schemes other than http(s), link-local addresses (169.254.0.0/16, fe80::/10,
where clouds serve instance metadata), the known metadata addresses fd00:ec2::/32 (AWS
IMDS over IPv6 and EKS Pod Identity), 168.63.129.16 (Azure WireServer) and
100.100.100.200 (also inside IPv4-mapped, IPv4-compatible, NAT64 and 6to4 IPv6
addresses), and the metadata host names. Loopback and private ranges stay allowed:
in-cluster services and tests use them. ``allow_link_local=True`` lifts the address
and name rules (an operator's explicit choice); the scheme rule always applies.

``check_url`` looks at what needs no DNS: the scheme, the metadata names, and hosts
that are addresses (including the legacy decimal, hex and octal IPv4 forms the C
resolver accepts). Host names are checked where the HTTP client resolves them, by
every address it is about to connect to (``check_resolved``; see netguard_aiohttp): a
lookup before the request would be repeated by the client anyway, and could be raced
by DNS rebinding.

Host names outside ASCII are first normalised the way the HTTP clients do (IDNA 2008
with the UTS 46 mapping, the codec yarl and httpx use), so the guard judges the host
the client will connect to: 169.254.169.254 spelled with circled or fullwidth digits, or
with the ideographic full stop U+3002, is that address to aiohttp, which then skips
the resolver. A host that spells an
address with non-ASCII characters, or that is no valid IDNA name, is refused outright.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import idna

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SCHEMES = frozenset({"http", "https"})
# network -> why it is refused (said in the error)
BLOCKED_NETWORKS = {
    ipaddress.ip_network("169.254.0.0/16"): "a link-local address (169.254.0.0/16; clouds "
    "serve instance metadata at 169.254.169.254)",
    ipaddress.ip_network("fe80::/10"): "a link-local address (fe80::/10)",
    # fd00:ec2::254 (IMDS over IPv6), fd00:ec2::23 (EKS Pod Identity), and the rest of
    # the range AWS reserves for instance services.
    ipaddress.ip_network("fd00:ec2::/32"): "an AWS instance service address (fd00:ec2::/32: "
    "instance metadata at fd00:ec2::254, EKS Pod Identity at fd00:ec2::23)",
    ipaddress.ip_network("168.63.129.16/32"): "Azure's WireServer (168.63.129.16: host "
    "agent and platform metadata)",
    ipaddress.ip_network("100.100.100.200/32"): "the Alibaba Cloud instance metadata address",
}
BLOCKED_NAMES = frozenset({"metadata.google.internal", "metadata"})
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
DEFAULT_HOW_TO_ALLOW = "pass allow_link_local=True"


class DestinationNotAllowed(ValueError):
    """An outbound URL the guard refuses; the message names the host, the address it
    resolved to (when it did) and how to allow it."""

    def __init__(self, host: str, reason: str, address: str | None = None) -> None:
        self.host, self.reason, self.address = host, reason, address
        super().__init__(reason)


@dataclass(frozen=True)
class Destination:
    """The parts of a URL the guard looks at."""

    scheme: str
    host: str  # lower case, without brackets or an IPv6 zone


def parse(url: str) -> Destination:
    """Scheme and host of ``url``; refuses other schemes, bad ports and URLs without a
    host."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise DestinationNotAllowed("", f"{url[:200]!r} is not a valid URL: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise DestinationNotAllowed(
            parts.hostname or "",
            f"scheme {scheme or '(none)'!r} of {url[:200]!r} is not allowed (only http and "
            "https are)",
        )
    host = (parts.hostname or "").split("%", 1)[0]
    if not host.isascii():
        host = ascii_host(host)
    host = host.rstrip(".")
    if not host:
        raise DestinationNotAllowed("", f"{url[:200]!r} has no host")
    return Destination(scheme, host)


def ascii_host(host: str) -> str:
    """The ASCII form of a non-ASCII host name, as the HTTP clients compute it (IDNA
    2008 with UTS 46 mapping); refuses invalid names and addresses spelled in Unicode."""
    try:
        normalised = idna.encode(host, uts46=True).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError, ValueError) as exc:
        raise DestinationNotAllowed(
            host[:200],
            f"host {host[:200]!r} is not a valid internationalised domain name (IDNA): {exc}",
        ) from exc
    if literal(normalised.rstrip(".")) is not None:
        raise DestinationNotAllowed(
            host[:200],
            f"host {host[:200]!r} spells the address {normalised.rstrip('.')} with non-ASCII "
            "characters; addresses must be written in ASCII",
        )
    return normalised


def display_url(url: str) -> str:
    """``url`` without credentials, query or fragment: what logs, status and events may
    show of a user's outbound URL (tokens often ride in the userinfo or the query)."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(invalid URL)"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}{parts.path}"


def literal(host: str) -> IPAddress | None:
    """The address ``host`` spells, in any form getaddrinfo would read without DNS
    (dotted, IPv6, or the legacy forms 2852039166, 0xa9fea9fe, 0251.0376.0251.0376)."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    if ":" in host or not host or not all(c in "0123456789abcdefx." for c in host.lower()):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, compatible, NAT64, 6to4), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    packed = int(address)
    if address in NAT64 or (packed >> 32 == 0 and packed > 0xFFFF):  # NAT64, ::a.b.c.d
        return ipaddress.IPv4Address(packed & 0xFFFFFFFF)
    return None


def refusal(address: IPAddress) -> str | None:
    """Why ``address`` is refused (None: allowed)."""
    candidates: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            candidates.append(embedded)
    for candidate in candidates:
        for network, why in BLOCKED_NETWORKS.items():
            if candidate.version == network.version and candidate in network:
                return why if candidate is address else f"{why}, carried as {candidate} in IPv6"
    return None


def _refuse(host: str, address: IPAddress, why: str, how_to_allow: str) -> DestinationNotAllowed:
    shown = "is" if literal(host) == address else "resolves to"
    return DestinationNotAllowed(
        host,
        f"host {host!r} {shown} {address}, {why}; to allow link-local and metadata "
        f"destinations, {how_to_allow}",
        str(address),
    )


def check_resolved(
    host: str, addresses: Iterable[str | IPAddress], how_to_allow: str = DEFAULT_HOW_TO_ALLOW
) -> None:
    """Raise DestinationNotAllowed when any address ``host`` resolved to is refused."""
    for raw in addresses:
        address = ipaddress.ip_address(str(raw).split("%", 1)[0])
        why = refusal(address)
        if why is not None:
            raise _refuse(host, address, why, how_to_allow)


def check_url(
    url: str, *, allow_link_local: bool = False, how_to_allow: str = DEFAULT_HOW_TO_ALLOW
) -> None:
    """Raise DestinationNotAllowed unless ``url`` may be called, as far as can be told
    without DNS (a host name is checked by what it resolves to when connecting)."""
    destination = parse(url)
    if allow_link_local:
        return
    host = destination.host
    if host in BLOCKED_NAMES:
        raise DestinationNotAllowed(
            host,
            f"host {host!r} is a cloud instance metadata service; to allow link-local and "
            f"metadata destinations, {how_to_allow}",
        )
    address = literal(host)
    if address is not None:
        check_resolved(host, [address], how_to_allow)
