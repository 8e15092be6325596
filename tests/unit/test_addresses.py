"""Unit tests for broker.http.addresses: IP spellings, the non-public table, URL validation.

DNS is never queried here except for ``localhost`` (answered from /etc/hosts): names are
resolved by an injected ``resolve`` function, so no packet leaves the machine.
"""

from __future__ import annotations

import asyncio
import socket
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest

from broker.http.addresses import (
    MAX_URL_LENGTH,
    Resolve,
    UrlRefused,
    _default_resolve,
    check_url_shape,
    is_public_ip,
    non_public_reason,
    parse_ip_literal,
    validate_callback_url,
)


async def no_dns(host: str, port: int) -> list[str]:
    raise AssertionError(f"unexpected DNS lookup of {host}:{port}")


def answering(*addresses: str, calls: list[tuple[str, int]] | None = None) -> Resolve:
    async def resolve(host: str, port: int) -> list[str]:
        if calls is not None:
            calls.append((host, port))
        return list(addresses)

    return resolve


# ------------------------------------------------------------------------------------------
# parse_ip_literal
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0X7F000001", "127.0.0.1"),
        ("0x7f.0.0.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("10.1.1", "10.1.0.1"),
        ("10.65535", "10.0.255.255"),
        ("127.0.0.1.", "127.0.0.1"),
        ("0", "0.0.0.0"),
        ("0x", "0.0.0.0"),
        ("93.184.216.34", "93.184.216.34"),
        ("１２７.０.０.１", "127.0.0.1"),  # full-width digits, folded as IDNA folds them
        ("127。0。0。1", "127.0.0.1"),  # ideographic full stops
        ("::1", "::1"),
        ("[::1]", "::1"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
        ("::ffff:7f00:1", "::ffff:7f00:1"),
        ("[FE80::1]", "fe80::1"),
        ("[fe80::1%25eth0]", "fe80::1%eth0"),
        ("2606:4700::1111", "2606:4700::1111"),
    ],
)
def test_parse_ip_literal_recognises_spellings(host: str, expected: str) -> None:
    assert parse_ip_literal(host) == ip_address(expected)


@pytest.mark.parametrize(
    "host",
    [
        "example.com",
        "localhost",
        "1.2.3.4.5",
        "256.0.0.1",
        "1.2.3.256",
        "4294967296",
        "0x100000000",
        "08.0.0.1",  # 8 is not an octal digit
        "0xg1",
        "1..2",
        "",
        "[not-an-ip]",
        "::g",
        "1e3",
    ],
)
def test_parse_ip_literal_returns_none_for_non_ips(host: str) -> None:
    assert parse_ip_literal(host) is None


# ------------------------------------------------------------------------------------------
# is_public_ip / non_public_reason
# ------------------------------------------------------------------------------------------

NON_PUBLIC = [
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "this network"),
    ("10.1.2.3", "private"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("100.127.255.254", "carrier-grade NAT"),
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("169.254.169.254", "link-local"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.0.0.9", "IETF protocol-assignment"),
    ("192.0.2.1", "documentation"),
    ("192.88.99.1", "6to4 relay"),
    ("192.168.1.1", "private"),
    ("198.18.0.1", "benchmarking"),
    ("198.19.255.255", "benchmarking"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.9", "documentation"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "broadcast"),
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:10.0.0.1", "private"),
    ("::ffff:0:169.254.169.254", "link-local"),  # IPv4-translated (SIIT)
    ("::127.0.0.1", "loopback"),  # IPv4-compatible
    ("64:ff9b::7f00:1", "loopback"),  # NAT64
    ("64:ff9b::a9fe:a9fe", "link-local"),
    ("64:ff9b:1::1", "local-use NAT64"),
    ("2002:7f00:1::1", "loopback"),  # 6to4 of 127.0.0.1
    ("2002:c0a8:101::1", "private"),  # 6to4 of 192.168.1.1
    ("2001::1", "Teredo"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
    ("2001:db8::1", "documentation"),
    ("3fff::1", "documentation"),
    ("100::1", "discard-only"),
    ("5f00::1", "SRv6"),
    ("fc00::1", "unique-local"),
    ("fd00::1", "unique-local"),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("febf::1", "link-local"),
    ("fec0::1", "site-local"),
    ("ff02::1", "multicast"),
    ("4000::1", "reserved"),  # outside 2000::/3 global unicast
]


@pytest.mark.parametrize(("address", "reason"), NON_PUBLIC)
def test_non_public_addresses_are_named(address: str, reason: str) -> None:
    ip = ip_address(address)
    assert not is_public_ip(ip)
    found = non_public_reason(ip)
    assert found is not None
    assert reason in found


@pytest.mark.parametrize(
    "address",
    [
        "93.184.216.34",
        "8.8.8.8",
        "1.1.1.1",
        "100.63.255.255",  # just below CGNAT
        "100.128.0.0",  # just above CGNAT
        "172.15.255.255",
        "172.32.0.0",
        "198.17.255.255",
        "198.20.0.0",
        "223.255.255.255",
        "2606:4700::1111",
        "2a00:1450:4001:80b::200e",
        "::ffff:93.184.216.34",  # mapped form of a public address
        "64:ff9b::808:808",  # NAT64 of 8.8.8.8
        "2002:808:808::1",  # 6to4 of 8.8.8.8
    ],
)
def test_public_addresses_are_public(address: str) -> None:
    ip = ip_address(address)
    assert is_public_ip(ip), non_public_reason(ip)


def test_reason_is_none_exactly_when_public() -> None:
    assert non_public_reason(IPv4Address("8.8.4.4")) is None
    assert non_public_reason(IPv6Address("::1")) == "a loopback address"


# ------------------------------------------------------------------------------------------
# check_url_shape
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "normalized"),
    [
        ("https://example.com/hook", "https://example.com/hook"),
        ("HTTPS://Example.COM:8443/Hook?A=B#frag", "https://example.com:8443/Hook?A=B#frag"),
        ("http://2130706433/x", "http://127.0.0.1/x"),
        ("http://0x7f.1/", "http://127.0.0.1/"),
        ("http://[::FFFF:127.0.0.1]:8080/", "http://[::ffff:7f00:1]:8080/"),
        ("http://example.com:/", "http://example.com/"),
        ("http://example.com", "http://example.com"),
        ("http://bücher.example/", "http://bücher.example/"),
        ("http://１２７.0.0.1/", "http://127.0.0.1/"),
        ("http://a_b.example./", "http://a_b.example./"),
    ],
)
def test_check_url_shape_normalizes(url: str, normalized: str) -> None:
    assert check_url_shape(url) == normalized


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("", "empty"),
        ("ftp://example.com/", "scheme 'ftp'"),
        ("javascript:alert(1)", "scheme 'javascript'"),
        ("file:///etc/passwd", "scheme 'file'"),
        ("gopher://127.0.0.1:25/", "scheme 'gopher'"),
        ("//example.com/", "scheme '(none)'"),
        ("example.com/hook", "scheme '(none)'"),
        ("http:///path", "no host"),
        ("http:example.com", "no host"),
        ("http://:8080/", "no host"),
        ("http://user:pass@example.com/", "credentials"),
        ("http://user@example.com/", "credentials"),
        ("http://@example.com/", "credentials"),
        ("http://example.com:0/", "port"),
        ("http://example.com:65536/", "port"),
        ("http://example.com:http/", "port"),
        ("http://example.com:-1/", "port"),
        ("http://exa mple.com/", "whitespace"),
        (" http://example.com/", "whitespace"),
        ("http://example.com/\n", "whitespace"),
        ("http://exam\tple.com/", "whitespace"),
        ("http://example.com/\x00", "control"),
        ("http://example.com\u200b/", "control"),  # zero-width space
        ("http://example.com\\@127.0.0.1/", "backslash"),
        ("http://example.com/" + "a" * MAX_URL_LENGTH, "longer than"),
        ("http://[::1/", "malformed"),
        ("http://[::1]x/", "after its IPv6"),
        ("http://[fe80::1%25eth0]/", "not a valid IPv6"),
        ("http://::1/", "IPv6 address without brackets"),
        ("http://1.2.3.4.5/", "not a valid IP"),
        ("http://256.0.0.1/", "not a valid IP"),
        ("http://example.0x10/", "not a valid IP"),
        ("http://exa%6dple.com/", "not a valid host name"),
        ("http://exa$mple.com/", "not a valid host name"),
        ("http://a..b/", "not a valid host name"),
        ("http://" + "a" * 64 + ".example/", "not a valid host name"),
    ],
)
def test_check_url_shape_refuses(url: str, reason: str) -> None:
    with pytest.raises(UrlRefused) as info:
        check_url_shape(url)
    assert reason in info.value.message
    assert str(info.value) == info.value.message


def test_url_of_max_length_is_accepted() -> None:
    base = "https://example.com/"
    url = base + "a" * (MAX_URL_LENGTH - len(base))
    assert check_url_shape(url) == url


def test_url_refused_is_a_value_error() -> None:
    assert issubclass(UrlRefused, ValueError)


# ------------------------------------------------------------------------------------------
# validate_callback_url
# ------------------------------------------------------------------------------------------

REFUSED_LITERALS = [
    ("http://127.0.0.1", "127.0.0.1 is a loopback address"),
    ("http://127.0.0.1:8080/hook", "loopback"),
    ("http://2130706433/", "2130706433 (127.0.0.1) is a loopback address"),
    ("http://0x7f.1/", "0x7f.1 (127.0.0.1) is a loopback address"),
    ("http://0x7f000001/", "loopback"),
    ("http://0177.0.0.1/", "0177.0.0.1 (127.0.0.1) is a loopback address"),
    ("http://017700000001/", "loopback"),
    ("http://127.1/", "loopback"),
    ("http://[::1]/", "::1 is a loopback address"),
    ("http://[::ffff:127.0.0.1]/", "IPv6 form of 127.0.0.1, a loopback address"),
    ("http://[::ffff:7f00:1]", "IPv6 form of 127.0.0.1, a loopback address"),
    ("http://[64:ff9b::7f00:1]/", "loopback"),
    ("http://[2002:7f00:1::1]/", "loopback"),
    ("http://10.1.2.3", "10.1.2.3 is a private address"),
    ("http://10.1.1/", "10.1.1 (10.1.0.1) is a private address"),
    ("http://172.16.0.1", "172.16.0.1 is a private address"),
    ("http://192.168.1.1", "192.168.1.1 is a private address"),
    ("http://169.254.169.254/", "169.254.169.254 is a link-local address"),
    ("http://100.64.0.1", "carrier-grade NAT"),
    ("http://224.0.0.1", "multicast"),
    ("http://0.0.0.0", "0.0.0.0 is the unspecified address"),
    ("http://0/", "unspecified"),
    ("http://255.255.255.255/", "broadcast"),
    ("http://192.0.2.1/", "documentation"),
    ("http://[fd00::1]", "fd00::1 is a unique-local (private) address"),
    ("http://[fe80::1]", "fe80::1 is a link-local address"),
    ("http://[::]/", "unspecified"),
    ("https://１２７.0.0.1/", "loopback"),
]


@pytest.mark.parametrize(("url", "message"), REFUSED_LITERALS)
async def test_non_public_ip_literals_are_refused_without_dns(url: str, message: str) -> None:
    with pytest.raises(UrlRefused) as info:
        await validate_callback_url(url, allow_private=False, resolve=no_dns)
    assert message in info.value.message
    assert info.value.message.startswith("callback URL host ")


@pytest.mark.parametrize(
    "url",
    ["http://localhost:8080", "http://localhost/", "http://LOCALHOST./", "http://foo.localhost"],
)
async def test_localhost_names_are_refused_without_dns(url: str) -> None:
    with pytest.raises(UrlRefused, match="is a loopback name"):
        await validate_callback_url(url, allow_private=False, resolve=no_dns)


@pytest.mark.parametrize(
    "url",
    ["https://93.184.216.34/", "https://[2606:4700::1111]/", "http://8.8.8.8:8080/x?y=1"],
)
async def test_public_ip_literals_are_accepted_without_dns(url: str) -> None:
    assert await validate_callback_url(url, allow_private=False, resolve=no_dns) == url


async def test_name_resolving_to_public_address_is_accepted() -> None:
    calls: list[tuple[str, int]] = []
    resolve = answering("93.184.216.34", "2606:2800:220:1::1", calls=calls)
    url = await validate_callback_url(
        "https://Hooks.Example.com/in", allow_private=False, resolve=resolve
    )
    assert url == "https://hooks.example.com/in"
    assert calls == [("hooks.example.com", 443)]


async def test_resolver_gets_explicit_port_and_http_default() -> None:
    calls: list[tuple[str, int]] = []
    resolve = answering("93.184.216.34", calls=calls)
    await validate_callback_url("http://a.example:8080/", allow_private=False, resolve=resolve)
    await validate_callback_url("http://b.example/", allow_private=False, resolve=resolve)
    assert calls == [("a.example", 8080), ("b.example", 80)]


async def test_idn_is_resolved_in_ascii_form() -> None:
    calls: list[tuple[str, int]] = []
    resolve = answering("93.184.216.34", calls=calls)
    await validate_callback_url("https://bücher.example/", allow_private=False, resolve=resolve)
    assert calls == [("xn--bcher-kva.example", 443)]


@pytest.mark.parametrize(
    ("addresses", "message"),
    [
        (["10.0.0.5"], "hooks.example.com resolves to 10.0.0.5, a private address"),
        (["127.0.0.1"], "resolves to 127.0.0.1, a loopback address"),
        (["169.254.169.254"], "link-local"),
        (["::1"], "loopback"),
        (["fe80::1%eth0"], "link-local"),
        (["::ffff:192.168.0.1"], "private"),
        (["93.184.216.34", "10.0.0.5"], "resolves to 10.0.0.5"),  # mixed: any one refuses
        (["2606:4700::1111", "fd12::1"], "unique-local"),
        (["not-an-address"], "unreadable"),
    ],
)
async def test_name_resolving_to_non_public_address_is_refused(
    addresses: list[str], message: str
) -> None:
    with pytest.raises(UrlRefused) as info:
        await validate_callback_url(
            "https://hooks.example.com/", allow_private=False, resolve=answering(*addresses)
        )
    assert message in info.value.message


async def test_name_that_does_not_resolve_is_refused() -> None:
    async def nxdomain(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(UrlRefused, match=r"nowhere\.example does not resolve"):
        await validate_callback_url(
            "https://nowhere.example/", allow_private=False, resolve=nxdomain
        )


async def test_name_with_empty_answer_is_refused() -> None:
    with pytest.raises(UrlRefused, match="does not resolve"):
        await validate_callback_url(
            "https://empty.example/", allow_private=False, resolve=answering()
        )


async def test_slow_resolution_is_refused() -> None:
    async def slow(host: str, port: int) -> list[str]:
        await asyncio.sleep(10)
        return ["93.184.216.34"]

    with pytest.raises(UrlRefused, match="did not resolve within"):
        await validate_callback_url(
            "https://slow.example/", allow_private=False, resolve=slow, resolve_timeout=0.05
        )


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/",
        "javascript:alert(1)",
        "file:///etc/passwd",
        "http://user:pass@example.com/",
    ],
)
@pytest.mark.parametrize("allow_private", [False, True])
async def test_shape_rules_apply_even_when_private_allowed(url: str, allow_private: bool) -> None:
    with pytest.raises(UrlRefused):
        await validate_callback_url(url, allow_private=allow_private, resolve=no_dns)


@pytest.mark.parametrize(
    ("url", "normalized"),
    [
        ("http://127.0.0.1:9000/hook", "http://127.0.0.1:9000/hook"),
        ("http://2130706433/", "http://127.0.0.1/"),
        ("http://localhost:8080/", "http://localhost:8080/"),
        ("http://[::1]/", "http://[::1]/"),
        ("http://10.1.2.3/", "http://10.1.2.3/"),
        ("http://internal.example/", "http://internal.example/"),
    ],
)
async def test_allow_private_accepts_without_dns(url: str, normalized: str) -> None:
    assert await validate_callback_url(url, allow_private=True, resolve=no_dns) == normalized


async def test_default_resolver_reads_local_names() -> None:
    # "localhost" is answered from /etc/hosts, so this sends no DNS query.
    addresses = await _default_resolve("localhost", 80)
    assert addresses
    assert all(not is_public_ip(ip_address(a)) for a in addresses)
    assert len(addresses) == len(set(addresses))
