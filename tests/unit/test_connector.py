"""Unit tests for broker.http.connector: connect-time refusal of non-public addresses.

A real aiohttp server listens on 127.0.0.1; every request in this module targets it (or is
refused before any socket is opened). Names other than ``localhost`` are only ever resolved by
an injected in-memory resolver, so no packet leaves the machine.
"""

from __future__ import annotations

import pickle
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestServer

from broker.http.connector import (
    DNS_CACHE_TTL_SECONDS,
    NonPublicAddressError,
    PublicOnlyConnector,
    PublicOnlyResolver,
    find_refusal,
    keep_public_addresses,
    make_connector,
)

HITS = web.AppKey("hits", list[str])


async def hello(request: web.Request) -> web.Response:
    request.app[HITS].append(request.host)
    return web.Response(text="hello")


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    app = web.Application()
    app[HITS] = []
    app.router.add_get("/", hello)
    test_server = TestServer(app, host="127.0.0.1")
    await test_server.start_server()
    try:
        yield test_server
    finally:
        await test_server.close()


def result(host: str, address: str, port: int = 443) -> ResolveResult:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    return ResolveResult(hostname=host, host=address, port=port, family=family, proto=0, flags=0)


class TableResolver(AbstractResolver):
    """In-memory DNS: answers from a dict, never touches the network."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.closed = False

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host not in self.table:
            raise OSError(socket.EAI_NONAME, f"{host} not found")
        return [result(host, address, port) for address in self.table[host]]

    async def close(self) -> None:
        self.closed = True


# ------------------------------------------------------------------------------------------
# Against a real server on 127.0.0.1
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]"])
async def test_public_only_connector_refuses_loopback(server: TestServer, host: str) -> None:
    url = f"http://{host}:{server.port}/"
    async with aiohttp.ClientSession(connector=make_connector(allow_private=False)) as session:
        with pytest.raises(aiohttp.ClientError) as info:
            async with session.get(url):
                pass
    assert server.app[HITS] == []  # refused before any byte reached the server
    error = info.value
    assert isinstance(error, aiohttp.ClientConnectorError)
    assert "non-public" in str(error)
    refusal = find_refusal(error)
    assert refusal is not None
    assert str(refusal).startswith("refused: host ")
    assert "non-public address" in str(refusal)


async def test_refusal_message_names_the_address(server: TestServer) -> None:
    async with aiohttp.ClientSession(connector=make_connector(allow_private=False)) as session:
        with pytest.raises(aiohttp.ClientError) as info:
            async with session.get(f"http://localhost:{server.port}/"):
                pass
    refusal = find_refusal(info.value)
    assert refusal is not None
    assert str(refusal).startswith("refused: host localhost resolves to non-public address ")
    assert refusal.host == "localhost"
    assert "loopback" in refusal.reason


async def test_legacy_numeric_literal_is_refused(server: TestServer) -> None:
    # aiohttp >= 3.14 rejects the spelling itself; older versions reach our filter. Either way
    # the request must fail without reaching the server.
    async with aiohttp.ClientSession(connector=make_connector(allow_private=False)) as session:
        with pytest.raises(aiohttp.ClientError):
            async with session.get(f"http://2130706433:{server.port}/"):
                pass


async def test_repeated_requests_stay_refused(server: TestServer) -> None:
    # The second attempt may be served from the DNS cache; it must be filtered all the same.
    async with aiohttp.ClientSession(connector=make_connector(allow_private=False)) as session:
        for _ in range(2):
            with pytest.raises(aiohttp.ClientError, match="non-public"):
                async with session.get(f"http://localhost:{server.port}/"):
                    pass


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_allow_private_connector_reaches_loopback(server: TestServer, host: str) -> None:
    async with (
        aiohttp.ClientSession(connector=make_connector(allow_private=True)) as session,
        session.get(f"http://{host}:{server.port}/") as response,
    ):
        assert response.status == 200
        assert await response.text() == "hello"
    assert len(server.app[HITS]) == 1


# ------------------------------------------------------------------------------------------
# Construction
# ------------------------------------------------------------------------------------------


async def test_make_connector_types_and_settings() -> None:
    strict = make_connector(allow_private=False, limit=7, limit_per_host=3)
    plain = make_connector(allow_private=True)
    try:
        assert isinstance(strict, PublicOnlyConnector)
        assert type(plain) is aiohttp.TCPConnector
        assert strict.limit == 7
        assert strict.limit_per_host == 3
        assert plain.limit == 0
        assert DNS_CACHE_TTL_SECONDS > 0
    finally:
        await strict.close()
        await plain.close()


def test_aiohttp_still_has_the_hooked_method() -> None:
    # The connector's IP-literal check depends on this private aiohttp method.
    assert PublicOnlyConnector._resolve_host is not aiohttp.TCPConnector._resolve_host
    assert hasattr(aiohttp.TCPConnector, "_resolve_host")


# ------------------------------------------------------------------------------------------
# Resolution paths, without opening sockets
# ------------------------------------------------------------------------------------------


async def test_connector_passes_public_ip_literals() -> None:
    connector = make_connector(allow_private=False)
    try:
        hosts = await connector._resolve_host("93.184.216.34", 443)
        assert [h["host"] for h in hosts] == ["93.184.216.34"]
    finally:
        await connector.close()


@pytest.mark.parametrize("literal", ["10.1.2.3", "169.254.169.254", "::1", "fd00::1"])
async def test_connector_refuses_private_ip_literals(literal: str) -> None:
    connector = make_connector(allow_private=False)
    try:
        with pytest.raises(NonPublicAddressError, match=r"is a non-public address"):
            await connector._resolve_host(literal, 443)
    finally:
        await connector.close()


async def test_connector_with_injected_dns_keeps_only_public_addresses() -> None:
    dns = TableResolver(
        {
            "mixed.example": ["10.0.0.1", "93.184.216.34", "::1", "2606:4700::1111"],
            "private.example": ["192.168.0.10"],
        }
    )
    connector = PublicOnlyConnector(resolver=PublicOnlyResolver(dns))
    try:
        hosts = await connector._resolve_host("mixed.example", 443)
        assert [h["host"] for h in hosts] == ["93.184.216.34", "2606:4700::1111"]
        with pytest.raises(NonPublicAddressError, match=r"192\.168\.0\.10"):
            await connector._resolve_host("private.example", 443)
    finally:
        await connector.close()


async def test_resolver_filters_and_refuses() -> None:
    dns = TableResolver({"a.example": ["93.184.216.34", "127.0.0.1"], "b.example": ["10.9.8.7"]})
    resolver = PublicOnlyResolver(dns)
    answer = await resolver.resolve("a.example", 443)
    assert [r["host"] for r in answer] == ["93.184.216.34"]
    with pytest.raises(NonPublicAddressError) as info:
        await resolver.resolve("b.example", 443)
    assert isinstance(info.value, OSError)
    assert str(info.value) == (
        "refused: host b.example resolves to non-public address 10.9.8.7 (a private address)"
    )
    await resolver.close()
    assert dns.closed


async def test_resolver_passes_lookup_failures_through() -> None:
    resolver = PublicOnlyResolver(TableResolver({}))
    with pytest.raises(OSError) as info:
        await resolver.resolve("missing.example", 443)
    assert not isinstance(info.value, NonPublicAddressError)


async def test_default_inner_resolver_refuses_localhost() -> None:
    # ThreadedResolver answers "localhost" from /etc/hosts: no DNS query is sent.
    resolver = PublicOnlyResolver()
    with pytest.raises(NonPublicAddressError, match="localhost resolves to non-public"):
        await resolver.resolve("localhost", 80, family=socket.AF_UNSPEC)
    await resolver.close()


@pytest.mark.parametrize(
    ("address", "shown"),
    [
        ("2130706433", "127.0.0.1"),  # legacy spellings older aiohttp passes to the socket
        ("0177.0.0.1", "127.0.0.1"),
        ("fe80::1%eth0", "fe80::1%eth0"),
        ("garbage", "garbage"),  # unreadable: fail closed
    ],
)
def test_keep_public_addresses_reads_every_spelling(address: str, shown: str) -> None:
    with pytest.raises(NonPublicAddressError) as info:
        keep_public_addresses("h.example", [result("h.example", address)])
    assert info.value.address == shown


def test_keep_public_addresses_leaves_empty_answers_alone() -> None:
    assert keep_public_addresses("h.example", []) == []


def test_error_is_readable_and_picklable() -> None:
    error = NonPublicAddressError("127.0.0.1", "127.0.0.1", "a loopback address")
    assert str(error) == "refused: host 127.0.0.1 is a non-public address (a loopback address)"
    clone = pickle.loads(pickle.dumps(error))
    assert isinstance(clone, NonPublicAddressError)
    assert str(clone) == str(error)
    assert clone.address == "127.0.0.1"


def test_find_refusal_ignores_other_errors() -> None:
    assert find_refusal(ValueError("boom")) is None
    try:
        try:
            raise NonPublicAddressError("x.example", "10.0.0.1", "a private address")
        except OSError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        found = find_refusal(outer)
    assert found is not None
    assert found.address == "10.0.0.1"
