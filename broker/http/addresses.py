"""Callback-URL safety rules: which URLs and which IP addresses a webhook may target.

This module owns the pure policy of SSRF protection (no aiohttp here):

* :func:`parse_ip_literal` recognises every spelling a URL host can use for an IP address,
  including the legacy ``inet_aton`` forms (``2130706433``, ``0x7f.1``, ``0177.0.0.1``) that
  ``getaddrinfo``, curl and browsers quietly accept;
* :func:`non_public_reason` / :func:`is_public_ip` judge an address against an explicit,
  documented table of non-public networks;
* :func:`check_url_shape` and :func:`validate_callback_url` apply the contract at registration:
  only ``http``/``https``, no credentials, and (unless private URLs are allowed) no host that is,
  or resolves to, a loopback, private, link-local or otherwise non-public address.

Connect-time enforcement (DNS can change after registration) lives in
:mod:`broker.http.connector`, which reuses these rules.
"""

from __future__ import annotations

import asyncio
import re
import socket
import string
import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from urllib.parse import SplitResult, urlsplit, urlunsplit

__all__ = [
    "MAX_URL_LENGTH",
    "IPAddress",
    "Resolve",
    "UrlRefused",
    "check_url_shape",
    "is_public_ip",
    "non_public_reason",
    "parse_ip_literal",
    "validate_callback_url",
]

IPAddress = IPv4Address | IPv6Address
Resolve = Callable[[str, int], Awaitable[list[str]]]

MAX_URL_LENGTH = 2048
ALLOWED_SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}
# getaddrinfo can wait for several resolver timeouts; a registration request should not.
DEFAULT_RESOLVE_TIMEOUT = 5.0


class UrlRefused(ValueError):
    """A callback URL is not acceptable; ``message`` says why, for the API caller to read."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --------------------------------------------------------------------------------------------
# Non-public address table
# --------------------------------------------------------------------------------------------
# Explicit tables rather than ``ip.is_global`` alone: ``is_global`` has quirks that matter here
# (IPv4 multicast such as 224.0.0.1 and NAT64/6to4 forms of 127.0.0.1 count as "global" on
# Python 3.11), and its lists change between Python releases. ``is_global`` is still consulted
# afterwards as a backstop, so a range Python learns about later is refused too. The first
# matching row gives the reason, so narrower rows come before the ranges that contain them.

_IPV4_NON_PUBLIC: tuple[tuple[IPv4Network, str], ...] = tuple(
    (IPv4Network(net), reason)
    for net, reason in (
        ("0.0.0.0/32", "the unspecified address"),
        ("0.0.0.0/8", "a 'this network' address"),  # RFC 791; Linux connects it to the host
        ("10.0.0.0/8", "a private address"),  # RFC 1918
        ("100.64.0.0/10", "a carrier-grade NAT (shared) address"),  # RFC 6598
        ("127.0.0.0/8", "a loopback address"),
        ("169.254.0.0/16", "a link-local address"),  # cloud metadata lives at 169.254.169.254
        ("172.16.0.0/12", "a private address"),  # RFC 1918
        ("192.0.0.0/24", "an IETF protocol-assignment address"),  # RFC 6890
        ("192.0.2.0/24", "a documentation address"),  # TEST-NET-1, RFC 5737
        ("192.88.99.0/24", "a deprecated 6to4 relay address"),  # RFC 7526
        ("192.168.0.0/16", "a private address"),  # RFC 1918
        ("198.18.0.0/15", "a benchmarking address"),  # RFC 2544
        ("198.51.100.0/24", "a documentation address"),  # TEST-NET-2
        ("203.0.113.0/24", "a documentation address"),  # TEST-NET-3
        ("224.0.0.0/4", "a multicast address"),
        ("255.255.255.255/32", "the broadcast address"),
        ("240.0.0.0/4", "a reserved address"),  # RFC 1112 "future use"
    )
)

_IPV6_NON_PUBLIC: tuple[tuple[IPv6Network, str], ...] = tuple(
    (IPv6Network(net), reason)
    for net, reason in (
        ("::/128", "the unspecified address"),
        ("::1/128", "a loopback address"),
        ("64:ff9b:1::/48", "a local-use NAT64 address"),  # RFC 8215
        ("100::/64", "a discard-only address"),  # RFC 6666
        # RFC 2928 block: Teredo (2001::/32), benchmarking (2001:2::/48), ORCHID and a few
        # anycast service addresses; none is a sensible webhook target.
        ("2001::/23", "an IETF protocol-assignment address (e.g. Teredo)"),
        ("2001:db8::/32", "a documentation address"),  # RFC 3849
        ("3fff::/20", "a documentation address"),  # RFC 9637
        ("5f00::/16", "an SRv6 SID address"),  # RFC 9602
        ("fc00::/7", "a unique-local (private) address"),  # RFC 4193
        ("fe80::/10", "a link-local address"),
        ("fec0::/10", "a site-local address"),  # RFC 3879, deprecated
        ("ff00::/8", "a multicast address"),
    )
)

# Only 2000::/3 is allocated as global unicast; the embedding prefixes below sit outside it and
# are judged by their IPv4 address before this test applies.
_IPV6_GLOBAL_UNICAST = IPv6Network("2000::/3")

# IPv6 prefixes whose low 32 bits carry an IPv4 address the packet really ends up at.
_IPV6_EMBEDDING_V4_IN_LOW_BITS: tuple[IPv6Network, ...] = (
    IPv6Network("::ffff:0:0/96"),  # IPv4-mapped (dual-stack sockets connect to the IPv4 host)
    IPv6Network("::ffff:0:0:0/96"),  # IPv4-translated, RFC 2765 (SIIT)
    IPv6Network("64:ff9b::/96"),  # well-known NAT64 prefix, RFC 6052
    IPv6Network("::/96"),  # IPv4-compatible, deprecated by RFC 4291
)


def _without_scope(ip: IPv6Address) -> IPv6Address:
    """Drop a ``%zone`` suffix so table membership is judged on the address alone."""
    return IPv6Address(int(ip))


def embedded_ipv4(ip: IPv6Address) -> IPv4Address | None:
    """Return the IPv4 address an IPv6 address stands for (mapped, NAT64, 6to4, ...), if any."""
    plain = _without_scope(ip)
    for prefix in _IPV6_EMBEDDING_V4_IN_LOW_BITS:
        if plain in prefix:
            return IPv4Address(int(plain) & 0xFFFFFFFF)
    return plain.sixtofour  # 2002:AABB:CCDD::/48 -> AA.BB.CC.DD, RFC 3056


def non_public_reason(ip: IPAddress) -> str | None:
    """Say why ``ip`` is not a public address (e.g. ``"a private address"``), or None if it is."""
    if isinstance(ip, IPv4Address):
        return _ipv4_reason(ip)
    return _ipv6_reason(_without_scope(ip))


def _ipv4_reason(ip: IPv4Address) -> str | None:
    for network, reason in _IPV4_NON_PUBLIC:
        if ip in network:
            return reason
    if not ip.is_global:
        return "not a globally routable address"
    return None


def _ipv6_reason(ip: IPv6Address) -> str | None:
    for network, reason in _IPV6_NON_PUBLIC:
        if ip in network:
            return reason
    embedded = embedded_ipv4(ip)
    if embedded is not None:
        inner = _ipv4_reason(embedded)
        return None if inner is None else f"an IPv6 form of {embedded}, {inner}"
    if ip not in _IPV6_GLOBAL_UNICAST:
        return "a reserved address"
    if not ip.is_global:
        return "not a globally routable address"
    return None


def is_public_ip(ip: IPAddress) -> bool:
    """True when ``ip`` is a publicly routable unicast address a webhook may be sent to."""
    return non_public_reason(ip) is None


# --------------------------------------------------------------------------------------------
# IP literal parsing
# --------------------------------------------------------------------------------------------

# Full-width digits/letters and ideographic dots are folded the way IDNA (and so yarl/aiohttp)
# folds them, so "１２７。０。０。１" cannot slip past as a "name".
_DOT_LOOKALIKES = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
_HEX_DIGITS = frozenset(string.hexdigits)
_OCTAL_DIGITS = frozenset(string.octdigits)


def _fold(host: str) -> str:
    return unicodedata.normalize("NFKC", host.translate(_DOT_LOOKALIKES)).lower()


def parse_ip_literal(host: str) -> IPAddress | None:
    """Return the IP address a URL host denotes, or None when it is a DNS name.

    Accepts IPv6 with or without brackets (including IPv4-mapped forms and a ``%25``-encoded
    zone), canonical dotted quads, and the legacy ``inet_aton`` spellings: one to four parts,
    each decimal, ``0x`` hexadecimal or ``0``-prefixed octal, the last part filling the
    remaining bytes (``2130706433``, ``0x7f.1``, ``127.1``, ``017700000001``). One trailing dot
    (``127.0.0.1.``) is allowed, as URL parsers allow it.
    """
    text = _fold(host)
    if text.startswith("[") and text.endswith("]"):
        return _parse_ipv6(text[1:-1])
    if ":" in text:
        return _parse_ipv6(text)
    return _parse_legacy_ipv4(text)


def _parse_ipv6(text: str) -> IPv6Address | None:
    try:
        return IPv6Address(text.replace("%25", "%", 1))
    except ValueError:
        return None


def _parse_legacy_ipv4(text: str) -> IPv4Address | None:
    if text.endswith("."):
        text = text[:-1]
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers = [_parse_ipv4_number(part) for part in parts]
    if any(number is None for number in numbers):
        return None
    values = [number for number in numbers if number is not None]
    *leading, last = values
    # Each leading part is one byte; the last part fills the bytes that are left.
    if any(value > 0xFF for value in leading) or last >= 1 << (8 * (5 - len(values))):
        return None
    address = 0
    for value in leading:
        address = (address << 8) | value
    address = (address << (8 * (5 - len(values)))) | last
    return IPv4Address(address)


def _parse_ipv4_number(part: str) -> int | None:
    if not part or not part.isascii():
        return None
    if part.startswith("0x"):
        digits = part[2:]
        if not set(digits) <= _HEX_DIGITS:
            return None
        # A bare "0x" is zero to the WHATWG URL parser; treating it as an address fails closed.
        return int(digits, 16) if digits else 0
    if len(part) > 1 and part.startswith("0"):
        return int(part, 8) if set(part) <= _OCTAL_DIGITS else None
    return int(part) if part.isdigit() else None


def _ends_in_number(host: str) -> bool:
    """WHATWG's test: a host whose last label is numeric must be an IPv4 address or nothing."""
    labels = _fold(host).split(".")
    if len(labels) > 1 and labels[-1] == "":
        labels.pop()
    last = labels[-1]
    if last.isascii() and last.isdigit():
        return True
    return last.startswith("0x") and set(last[2:]) <= _HEX_DIGITS


# --------------------------------------------------------------------------------------------
# URL shape
# --------------------------------------------------------------------------------------------

_NAME_CHARS = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?")


@dataclass(frozen=True)
class _CallbackUrl:
    url: str  # normalized URL
    host: str  # host as displayed: lowercased name, or the IP literal as written
    ascii_host: str  # IDNA/ASCII form, what DNS is asked about
    ip: IPAddress | None
    port: int  # explicit port, else the scheme's default


def check_url_shape(url: str) -> str:
    """Return ``url`` normalized, or raise :class:`UrlRefused` when its shape is not allowed.

    Rules: at most 2048 characters, no whitespace or control characters, scheme ``http`` or
    ``https``, a host, no userinfo (``user:pass@``; basicAuth is the way to send credentials),
    and a port in 1..65535 when one is given. Normalization lowercases scheme and host and
    rewrites IP literals in canonical form (``http://2130706433/`` -> ``http://127.0.0.1/``),
    so every later consumer sees the address that will actually be dialled.
    """
    return _parse_callback_url(url).url


def _parse_callback_url(url: str) -> _CallbackUrl:
    _check_characters(url)
    parts = _split(url)
    if parts.scheme not in ALLOWED_SCHEMES:
        shown = parts.scheme or "(none)"
        raise UrlRefused(f"callback URL scheme {shown!r} is not allowed; use http or https")
    netloc = parts.netloc
    if not netloc:
        raise UrlRefused("callback URL has no host")
    if "@" in netloc:
        raise UrlRefused(
            "callback URL must not contain credentials (user:pass@); use basicAuth instead"
        )
    raw_host, port_text = _split_host_port(netloc)
    port = _parse_port(port_text)
    host, ascii_host, ip = _check_host(raw_host)
    if ip is None:
        display = host
    else:
        display = f"[{ip.compressed}]" if isinstance(ip, IPv6Address) else str(ip)
    new_netloc = display if port is None else f"{display}:{port}"
    normalized = urlunsplit((parts.scheme, new_netloc, parts.path, parts.query, parts.fragment))
    effective_port = port if port is not None else DEFAULT_PORTS[parts.scheme]
    return _CallbackUrl(normalized, host, ascii_host, ip, effective_port)


def _check_characters(url: str) -> None:
    if not url:
        raise UrlRefused("callback URL is empty")
    if len(url) > MAX_URL_LENGTH:
        raise UrlRefused(f"callback URL is longer than {MAX_URL_LENGTH} characters")
    # urlsplit silently strips tabs and newlines, and URL parsers disagree about other control
    # characters, so any of them could make two parsers see two different hosts.
    for char in url:
        if char.isspace() or unicodedata.category(char).startswith("C"):
            raise UrlRefused("callback URL contains whitespace or control characters")
    if "\\" in url.split("?", 1)[0].split("#", 1)[0]:
        # Browsers and WHATWG parsers read "\" as "/", urllib does not: another host mismatch.
        raise UrlRefused("callback URL contains a backslash")


def _split(url: str) -> SplitResult:
    try:
        return urlsplit(url)
    except ValueError as exc:
        raise UrlRefused(f"callback URL is malformed: {exc}") from exc


def _split_host_port(netloc: str) -> tuple[str, str | None]:
    if netloc.startswith("["):
        end = netloc.find("]")
        if end == -1:
            raise UrlRefused("callback URL has an unterminated IPv6 address")
        host, rest = netloc[: end + 1], netloc[end + 1 :]
        if rest and not rest.startswith(":"):
            raise UrlRefused("callback URL has text after its IPv6 address")
        return host, (rest[1:] if rest else None)
    host, colon, port_text = netloc.partition(":")
    if ":" in port_text:
        raise UrlRefused("callback URL has an IPv6 address without brackets")
    return host, (port_text if colon else None)


def _parse_port(port_text: str | None) -> int | None:
    if not port_text:  # "http://host:/" means the default port, as in WHATWG
        return None
    if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
        raise UrlRefused(f"callback URL port {port_text!r} is not in 1-65535")
    return int(port_text)


def _check_host(raw_host: str) -> tuple[str, str, IPAddress | None]:
    """Return (display host, ASCII host, IP if the host is an IP literal)."""
    if not raw_host:
        raise UrlRefused("callback URL has no host")
    if raw_host.startswith("["):
        ip = _parse_ipv6(raw_host[1:-1].lower())
        if ip is None or "%" in raw_host:
            raise UrlRefused(f"callback URL host {raw_host} is not a valid IPv6 address")
        return raw_host.lower(), ip.compressed, ip
    ascii_host = _ascii_host(raw_host)
    literal = parse_ip_literal(ascii_host)
    if literal is not None:
        return raw_host.lower(), str(literal), literal
    if _ends_in_number(ascii_host):
        raise UrlRefused(f"callback URL host {raw_host} is not a valid IP address")
    _check_name(raw_host, ascii_host)
    return raw_host.lower(), ascii_host, None


def _ascii_host(raw_host: str) -> str:
    if raw_host.isascii():
        return raw_host.lower()
    try:
        # The stdlib IDNA codec applies nameprep (NFKC), so look-alike digits become ASCII here.
        return raw_host.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise UrlRefused(f"callback URL host {raw_host} is not a valid host name") from exc


def _check_name(raw_host: str, ascii_host: str) -> None:
    labels = ascii_host.rstrip(".").split(".")
    if (
        not _NAME_CHARS.fullmatch(ascii_host)
        or len(ascii_host.rstrip(".")) > 253
        or any(len(label) > 63 for label in labels)
    ):
        raise UrlRefused(f"callback URL host {raw_host} is not a valid host name")


# --------------------------------------------------------------------------------------------
# Registration-time validation
# --------------------------------------------------------------------------------------------


def _is_localhost_name(ascii_host: str) -> bool:
    # RFC 6761: "localhost" and every name under it are loopback, whatever DNS says.
    name = ascii_host.rstrip(".")
    return name == "localhost" or name.endswith(".localhost")


async def _default_resolve(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def validate_callback_url(
    url: str,
    *,
    allow_private: bool,
    resolve: Resolve | None = None,
    resolve_timeout: float = DEFAULT_RESOLVE_TIMEOUT,
) -> str:
    """Return the normalized callback URL, or raise :class:`UrlRefused` naming the reason.

    The shape is always checked. Unless ``allow_private``: an IP-literal host must be public;
    ``localhost`` and ``*.localhost`` are refused without resolving; any other name is resolved
    (``resolve(host, port)``, by default ``getaddrinfo``) and refused if it does not resolve or
    if ANY of its addresses is non-public, since a connection may use any of them.
    """
    parsed = _parse_callback_url(url)
    if allow_private:
        return parsed.url
    if parsed.ip is not None:
        _refuse_literal_if_non_public(parsed)
        return parsed.url
    if _is_localhost_name(parsed.ascii_host):
        raise UrlRefused(f"callback URL host {parsed.host} is a loopback name")
    addresses = await _resolve(parsed, resolve or _default_resolve, resolve_timeout)
    for text in addresses:
        ip = parse_ip_literal(text)
        if ip is None:
            raise UrlRefused(f"callback URL host {parsed.host} resolves to unreadable {text!r}")
        reason = non_public_reason(ip)
        if reason is not None:
            raise UrlRefused(f"callback URL host {parsed.host} resolves to {ip}, {reason}")
    return parsed.url


def _refuse_literal_if_non_public(parsed: _CallbackUrl) -> None:
    assert parsed.ip is not None
    reason = non_public_reason(parsed.ip)
    if reason is None:
        return
    written = parsed.host.strip("[]")
    shown = written if written == str(parsed.ip) else f"{written} ({parsed.ip})"
    raise UrlRefused(f"callback URL host {shown} is {reason}")


async def _resolve(parsed: _CallbackUrl, resolve: Resolve, seconds: float) -> list[str]:
    host = parsed.host
    try:
        async with asyncio.timeout(seconds):
            addresses = await resolve(parsed.ascii_host, parsed.port)
    except TimeoutError as exc:
        raise UrlRefused(f"callback URL host {host} did not resolve within {seconds:g}s") from exc
    except (OSError, UnicodeError) as exc:
        detail = getattr(exc, "strerror", None) or str(exc)
        raise UrlRefused(f"callback URL host {host} does not resolve ({detail})") from exc
    if not addresses:
        raise UrlRefused(f"callback URL host {host} does not resolve")
    return addresses
