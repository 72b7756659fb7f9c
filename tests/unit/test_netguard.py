"""The SSRF guard (kaizen_api.netguard): which outbound destinations are refused, in
every spelling, what the error says, and the explicit allow switch."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from kaizen_api.netguard import DestinationNotAllowed, check_resolved, check_url, literal
from kaizen_api.netguard_aiohttp import GuardedResolver, guarded_connector

REFUSED = {
    # IPv4 link-local, the metadata address itself and the ends of the range
    "http://169.254.169.254/latest/meta-data": "169.254.169.254",
    "http://169.254.0.1/": "169.254.0.1",
    "https://169.254.255.255:8443/x": "169.254.255.255",
    # the legacy numeric spellings the C resolver reads as 169.254.169.254
    "http://2852039166/": "169.254.169.254",
    "http://0xa9fea9fe/": "169.254.169.254",
    "http://0xa9.0xfe.0xa9.0xfe/": "169.254.169.254",
    "http://0251.0376.0251.0376/": "169.254.169.254",
    "http://169.254.43518/": "169.254.169.254",
    # IPv6 link-local (with a zone), the AWS IPv6 metadata address
    "http://[fe80::1]/": "fe80::1",
    "http://[fe80::a9fe:a9fe%25eth0]:8080/": "fe80::a9fe:a9fe",
    "http://[febf:ffff::1]/": "febf:ffff::1",
    "http://[fd00:ec2::254]/latest": "fd00:ec2::254",
    "http://[fd00:ec2::23]/v1/credentials": "fd00:ec2::23",  # EKS Pod Identity
    # IPv4 inside IPv6: mapped, compatible, NAT64, 6to4
    "http://[::ffff:169.254.169.254]/": "::ffff:a9fe:a9fe",
    "http://[::ffff:a9fe:a9fe]/": "::ffff:a9fe:a9fe",
    "http://[::169.254.169.254]/": "::a9fe:a9fe",
    "http://[64:ff9b::169.254.169.254]/": "64:ff9b::a9fe:a9fe",
    "http://[2002:a9fe:a9fe::1]/": "2002:a9fe:a9fe::1",
    # Azure's WireServer (host agent, platform metadata), and Alibaba Cloud's metadata
    "http://168.63.129.16/machine?comp=goalstate": "168.63.129.16",
    "http://[::ffff:168.63.129.16]/": "::ffff:a83f:8110",
    "http://100.100.100.200/latest/meta-data": "100.100.100.200",
}

ALLOWED = [
    "http://127.0.0.1:8080/v1",
    "http://localhost:9/",
    "http://[::1]/",
    "http://10.0.0.7/",
    "http://192.168.1.1/",
    "http://172.16.0.1/",
    "http://100.100.100.201/",  # next to Alibaba's metadata address: an ordinary CGNAT one
    "http://169.253.255.255/",
    "http://169.255.0.0/",
    "http://[fec0::1]/",  # just past fe80::/10
    "http://[fd00:ec3::254]/",  # just past fd00:ec2::/32
    "http://168.63.129.17/",
    "http://[::ffff:10.0.0.1]/",
    "https://8.8.8.8/",
]


@pytest.mark.parametrize(("url", "address"), sorted(REFUSED.items()))
def test_link_local_and_metadata_addresses_are_refused(url: str, address: str) -> None:
    with pytest.raises(DestinationNotAllowed) as refused:
        check_url(url)
    message = str(refused.value)
    assert refused.value.address == address
    assert address in message and refused.value.host in message
    assert "pass allow_link_local=True" in message  # how to allow it


@pytest.mark.parametrize("url", ALLOWED)
def test_loopback_private_and_public_addresses_are_allowed(url: str) -> None:
    check_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://METADATA.Google.Internal./computeMetadata/v1/",
        "http://metadata/computeMetadata/v1/",
    ],
)
def test_metadata_host_names_are_refused_without_a_lookup(url: str) -> None:
    with pytest.raises(DestinationNotAllowed, match="cloud instance metadata service") as refused:
        check_url(url, how_to_allow="say please")
    assert refused.value.host in ("metadata.google.internal", "metadata")
    assert str(refused.value).endswith("say please")


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "gopher://127.0.0.1:6379/_INFO", "ftp://example.com/", "//x/y", "x"],
)
def test_only_http_and_https_are_allowed(url: str) -> None:
    with pytest.raises(DestinationNotAllowed, match=r"is not allowed|has no host"):
        check_url(url, allow_link_local=True)  # the switch does not lift the scheme rule


def test_malformed_urls_are_refused_with_the_reason() -> None:
    with pytest.raises(DestinationNotAllowed, match="not a valid URL"):
        check_url("http://example.com:port/")
    with pytest.raises(DestinationNotAllowed, match="has no host"):
        check_url("http:///path")


def test_the_allow_switch_lets_every_refused_destination_through() -> None:
    for url in [*REFUSED, "http://metadata.google.internal/"]:
        check_url(url, allow_link_local=True)


def test_names_are_left_to_the_connect_time_check_and_cost_no_lookup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_dns(*args: Any, **kwargs: Any) -> list[Any]:
        raise AssertionError("check_url looked a name up")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    check_url("https://rebind.example/hook")  # the guarded resolver checks it later
    with pytest.raises(DestinationNotAllowed):
        check_url("http://169.254.169.254/")


def test_literal_reads_what_getaddrinfo_reads_without_dns() -> None:
    assert str(literal("2852039166")) == "169.254.169.254"
    assert str(literal("127.1")) == "127.0.0.1"
    assert str(literal("fe80::1%eth0")) == "fe80::1"
    assert literal("example.com") is None
    assert literal("deadbeef") is None  # a name, not hex without 0x
    assert literal("") is None


def test_check_resolved_names_host_and_address() -> None:
    check_resolved("ok.example", ["10.0.0.1", "::1"])
    with pytest.raises(DestinationNotAllowed, match=r"host 'x\.example' resolves to 169\.254"):
        check_resolved("x.example", ["10.0.0.1", "169.254.1.1"], "do X")


class _Answers:
    """A stand-in aiohttp resolver with fixed answers."""

    def __init__(self, addresses: list[str]) -> None:
        self.addresses = addresses
        self.closed = False

    async def resolve(self, host: str, port: int = 0, family: Any = 0) -> list[dict[str, Any]]:
        return [
            {"hostname": host, "host": a, "port": port, "family": family, "proto": 0, "flags": 0}
            for a in self.addresses
        ]

    async def close(self) -> None:
        self.closed = True


def test_the_aiohttp_resolver_refuses_what_a_name_resolves_to_at_connect_time() -> None:
    async def scenario() -> None:
        bad = GuardedResolver("set the flag", _Answers(["93.184.216.34", "169.254.169.254"]))  # type: ignore[arg-type]
        with pytest.raises(DestinationNotAllowed, match="set the flag"):
            await bad.resolve("rebind.example", 443)
        good = _Answers(["10.0.0.1"])
        resolver = GuardedResolver("set the flag", good)  # type: ignore[arg-type]
        assert [r["host"] for r in await resolver.resolve("svc.example", 80)] == ["10.0.0.1"]
        await resolver.close()
        assert good.closed
        plain = guarded_connector(allow_link_local=True, how_to_allow="-")
        guarded = guarded_connector(allow_link_local=False, how_to_allow="-")
        assert isinstance(guarded._resolver, GuardedResolver)
        assert not isinstance(plain._resolver, GuardedResolver)
        await plain.close()
        await guarded.close()

    asyncio.run(scenario())


def test_the_operator_refuses_before_opening_a_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """Promotion webhooks: refused destinations fail the gate without any request (the
    bearer token goes nowhere); --allow-link-local-destinations lets the call be made."""
    import aiohttp

    from kaizen_api.v1alpha1.promotion import WebhookTarget
    from kaizen_operator.__main__ import parse_args
    from kaizen_operator.promotion import gates

    opened: list[str] = []

    def connector(**options: Any) -> None:
        opened.append("connector")

    def session(*args: Any, **kwargs: Any) -> None:
        opened.append("session")
        raise aiohttp.ClientConnectionError("stopped by the test")

    monkeypatch.setattr(gates, "guarded_connector", connector)
    monkeypatch.setattr(gates.aiohttp, "ClientSession", session)

    async def post(url: str, allow: bool) -> gates.GateOutcome:
        return await gates.post_json(WebhookTarget(url=url), {}, "s3cret", allow_link_local=allow)

    refused = asyncio.run(post("http://169.254.169.254/latest/meta-data", False))
    assert not refused.passed and not opened
    assert refused.message.startswith("webhook destination not allowed: host '169.254.169.254'")
    assert "--allow-link-local-destinations" in refused.message
    assert "s3cret" not in refused.message
    named = asyncio.run(post("http://metadata.google.internal/x", False))
    assert "cloud instance metadata service" in named.message and not opened
    tried = asyncio.run(post("http://169.254.169.254/latest/meta-data", True))
    assert opened == ["connector", "session"] and "unreachable" in tried.message

    assert parse_args([]).allow_link_local_destinations is False
    assert parse_args(["--allow-link-local-destinations"]).allow_link_local_destinations
    monkeypatch.setenv("KAIZEN_OPERATOR_ALLOW_LINK_LOCAL_DESTINATIONS", "1")
    assert parse_args([]).allow_link_local_destinations


def test_the_gateway_flag_and_variable() -> None:
    from kaizen_gateway.__main__ import parse_args

    assert parse_args([]).allow_link_local_upstreams is False
    assert parse_args(["--allow-link-local-upstreams"]).allow_link_local_upstreams
