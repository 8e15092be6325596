"""Connect-time SSRF enforcement for outbound aiohttp sessions.

Registration-time checks (:mod:`broker.http.addresses`) are not enough on their own: a name
can be re-pointed at 127.0.0.1 after it was registered (DNS rebinding), and a redirect can send
a delivery anywhere. This module owns the last line of defence: a connector that refuses to
dial any non-public address, whatever URL led to it.

Two hooks are needed because aiohttp's ``TCPConnector`` skips the resolver for hosts that look
like IP literals (``http://127.0.0.1/``):

* :class:`PublicOnlyResolver` filters what DNS returns, before aiohttp caches it;
* :class:`PublicOnlyConnector` overrides ``TCPConnector._resolve_host`` (present, with the
  same signature, in aiohttp 3.10 through 3.14), so IP literals and cached answers are
  filtered too, on every connection attempt.

Refusals surface as :class:`NonPublicAddressError` (an ``OSError``), which aiohttp wraps in
``ClientConnectorDNSError``, so callers catching ``aiohttp.ClientError`` see a message such as
``Cannot connect to host localhost:80 ssl:default [refused: host localhost resolves to
non-public address 127.0.0.1 (a loopback address)]``; :func:`find_refusal` digs the plain
refusal out for recording.

A session using this connector must not route through a proxy (``trust_env=True`` with
``HTTP_PROXY`` set): the proxy, not this process, would resolve the target host.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Sequence
from ssl import SSLContext
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from broker.http.addresses import non_public_reason, parse_ip_literal

if TYPE_CHECKING:
    from aiohttp.tracing import Trace

__all__ = [
    "DNS_CACHE_TTL_SECONDS",
    "NonPublicAddressError",
    "PublicOnlyConnector",
    "PublicOnlyResolver",
    "find_refusal",
    "keep_public_addresses",
    "make_connector",
]

# Short enough that a re-pointed name is re-checked soon; long enough to spare DNS during a
# burst of deliveries to one endpoint.
DNS_CACHE_TTL_SECONDS = 10

if not hasattr(aiohttp.TCPConnector, "_resolve_host"):  # pragma: no cover - aiohttp upgrade
    # Fail loudly at import rather than silently lose connect-time SSRF protection.
    raise ImportError(
        f"aiohttp {aiohttp.__version__} has no TCPConnector._resolve_host; "
        "broker.http.connector must be updated"
    )


class NonPublicAddressError(OSError):
    """A connection was refused because its host is, or resolves to, a non-public address."""

    def __init__(self, host: str, address: str, reason: str) -> None:
        if parse_ip_literal(host) is not None:
            message = f"refused: host {host} is a non-public address ({reason})"
        else:
            message = f"refused: host {host} resolves to non-public address {address} ({reason})"
        # errno + strerror, because aiohttp's ClientConnectorError prints ``strerror``.
        super().__init__(errno.EACCES, message)
        self.host = host
        self.address = address
        self.reason = reason

    def __str__(self) -> str:
        return str(self.strerror)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.host, self.address, self.reason))


def keep_public_addresses(host: str, results: Sequence[ResolveResult]) -> list[ResolveResult]:
    """Return the public entries of ``results``; raise if there were some and none is public.

    An entry whose address cannot be read as an IP counts as non-public (fail closed). Legacy
    numeric spellings (``2130706433``) are read the way ``getaddrinfo`` reads them, since older
    aiohttp versions hand such hosts straight to the socket layer.
    """
    public: list[ResolveResult] = []
    first_refused: tuple[str, str] | None = None
    for result in results:
        ip = parse_ip_literal(result["host"])
        reason = "not an IP address" if ip is None else non_public_reason(ip)
        if reason is None:
            public.append(result)
        elif first_refused is None:
            first_refused = (result["host"] if ip is None else str(ip), reason)
    if not public and first_refused is not None:
        raise NonPublicAddressError(host, *first_refused)
    return public


class PublicOnlyResolver(AbstractResolver):
    """An aiohttp resolver that drops non-public addresses from another resolver's answer."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        # ThreadedResolver (getaddrinfo) honours /etc/hosts, as the registration check does.
        self._inner = inner if inner is not None else ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        return keep_public_addresses(host, results)

    async def close(self) -> None:
        await self._inner.close()


class PublicOnlyConnector(aiohttp.TCPConnector):
    """A ``TCPConnector`` that never dials a non-public address, IP literal or DNS name."""

    async def _resolve_host(
        self, host: str, port: int, traces: Sequence[Trace] | None = None
    ) -> list[ResolveResult]:
        # The base method returns IP literals without asking the resolver and serves cached
        # answers, so filtering here covers every path to a socket.
        results = await super()._resolve_host(host, port, traces=traces)
        return keep_public_addresses(host, results)


def make_connector(
    *,
    allow_private: bool,
    limit: int = 0,
    limit_per_host: int = 0,
    ssl: bool | SSLContext | aiohttp.Fingerprint = True,
) -> aiohttp.TCPConnector:
    """Build the connector for outbound deliveries.

    ``allow_private=False`` (the default policy) enforces public-only addresses at connect
    time; ``allow_private=True`` (``BROKER_ALLOW_PRIVATE_URLS``) gives a plain connector.
    ``limit``/``limit_per_host`` of 0 mean unlimited, as in aiohttp.
    """
    if allow_private:
        return aiohttp.TCPConnector(
            limit=limit, limit_per_host=limit_per_host, ssl=ssl, ttl_dns_cache=DNS_CACHE_TTL_SECONDS
        )
    return PublicOnlyConnector(
        resolver=PublicOnlyResolver(),
        limit=limit,
        limit_per_host=limit_per_host,
        ssl=ssl,
        ttl_dns_cache=DNS_CACHE_TTL_SECONDS,
    )


def make_outbound_session(
    *, allow_private: bool, limit: int, total_timeout: float
) -> aiohttp.ClientSession:
    """The one client session deliveries go through.

    - No cookies: a receiver's ``Set-Cookie`` must never ride along on another delivery (the
      session is shared by every partner), so the jar is a DummyCookieJar that stores nothing.
    - ``trust_env=False``: a proxy would resolve hosts itself and bypass the address check.
    - No decompression: only the first bytes of a response body are kept, raw.
    """
    return aiohttp.ClientSession(
        connector=make_connector(allow_private=allow_private, limit=limit, limit_per_host=0),
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        timeout=aiohttp.ClientTimeout(total=total_timeout),
        auto_decompress=False,
    )


def find_refusal(exc: BaseException) -> NonPublicAddressError | None:
    """Return the :class:`NonPublicAddressError` behind an aiohttp error, if that was the cause.

    Lets a delivery worker record ``str(refusal)`` ("refused: host ... non-public address ...")
    instead of aiohttp's longer wrapper message.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, NonPublicAddressError):
            return current
        seen.add(id(current))
        nested = current.os_error if isinstance(current, aiohttp.ClientConnectorError) else None
        current = nested or current.__cause__ or current.__context__
    return None
