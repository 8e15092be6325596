"""One signed webhook POST and what came of it.

Redirects are never followed (a 3xx is a failure: following it could lead to an address the
registration check never saw). The response body is read only up to 1 KiB, so a receiver that
answers with gigabytes or drips bytes slowly costs a bounded amount of memory and, with the
session's total timeout, a bounded amount of time.
"""

from __future__ import annotations

import codecs
import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp

from broker import __version__
from broker.domain.policy import STANDARD_WEBHOOKS, SignatureSpec, is_reserved_header
from broker.domain.retry import parse_retry_after
from broker.domain.signatures import signature_headers

USER_AGENT = f"broker-webhooks/{__version__}"
RESPONSE_EXCERPT_BYTES = 1024


@dataclass(frozen=True, kw_only=True, slots=True)
class SendOutcome:
    success: bool
    status: int | None
    error: str | None
    body: str | None
    duration_ms: int
    retry_after: float | None


def unreadable_secret() -> SendOutcome:
    """The attempt of a registration whose stored secret would not open: nothing was sent.

    The partner sees why in the attempt and can repair it (a rotation stores a new secret);
    the operator's log has the details (which column, which key id)."""
    return SendOutcome(
        success=False,
        status=None,
        error="not sent: the registration's stored secret or basicAuth could not be opened; "
        "rotate the secret with graceSeconds 0 (POST .../rotate-secret) and set basicAuth "
        "again if it has one",
        body=None,
        duration_ms=0,
        retry_after=None,
    )


def signed_headers(
    *,
    msg_id: str,
    body: bytes,
    secrets: Sequence[str],
    basic_auth: str | None,
    now: float,
    signature: SignatureSpec = STANDARD_WEBHOOKS,
    extra: Sequence[tuple[str, str]] = (),
) -> dict[str, str]:
    """The request headers: the registration's own extra headers first, then broker's, which
    therefore win over any extra header of the same name (the API refuses such names anyway)."""
    headers = {name: value for name, value in extra if not is_reserved_header(name)}
    own = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        **signature_headers(
            signature, msg_id=msg_id, body=body, secrets=secrets, timestamp=int(now)
        ),
    }
    if basic_auth:
        own["Authorization"] = f"Basic {basic_auth}"
    for name in own:
        for taken in [h for h in headers if h.lower() == name.lower()]:
            del headers[taken]
    headers.update(own)
    return headers


async def _read_excerpt(response: aiohttp.ClientResponse) -> bytes:
    data = b""
    while len(data) < RESPONSE_EXCERPT_BYTES:
        chunk = await response.content.read(RESPONSE_EXCERPT_BYTES - len(data))
        if not chunk:
            break
        data += chunk
    return data


def excerpt_text(data: bytes) -> str:
    """The stored text of a response excerpt: at most its bytes, never a NUL.

    A character cut in two at the byte limit is dropped rather than turned into U+FFFD (which
    would make the text longer than the limit). PostgreSQL text cannot hold NUL, and one attempt
    that cannot be written would hold back every result recorded with it, so NUL becomes U+FFFD.
    """
    if data.isascii() and b"\x00" not in data:  # the common case ("ok", JSON): as it is
        return data.decode("ascii")
    text = codecs.getincrementaldecoder("utf-8")("replace").decode(data, final=False)
    text = text.replace("\x00", "\ufffd")
    # Replacement characters are 3 bytes: binary bodies can grow past the limit; trim again.
    return text.encode()[:RESPONSE_EXCERPT_BYTES].decode("utf-8", "ignore")


async def send(
    session: aiohttp.ClientSession,
    *,
    url: str,
    msg_id: str,
    body: bytes,
    secrets: Sequence[str],
    basic_auth: str | None,
    timeout: float,
    signature: SignatureSpec = STANDARD_WEBHOOKS,
    extra_headers: Sequence[tuple[str, str]] = (),
) -> SendOutcome:
    started = time.monotonic()
    headers = signed_headers(
        msg_id=msg_id,
        body=body,
        secrets=secrets,
        basic_auth=basic_auth,
        now=time.time(),
        signature=signature,
        extra=extra_headers,
    )
    status: int | None = None
    excerpt: bytes | None = None
    retry_after: float | None = None
    error: str | None = None
    try:
        # aiohttp's own total timeout covers connecting, sending and reading the excerpt; one
        # timer a request (an asyncio.timeout around it was a second one: 12 us a request).
        async with session.post(
            url, data=body, headers=headers, allow_redirects=False, timeout=_timeout(timeout)
        ) as response:
            status = response.status
            if status in (429, 503):
                retry_after = parse_retry_after(
                    response.headers.get("Retry-After"), now_epoch=time.time()
                )
            excerpt = await _read_excerpt(response)
            if not response.content.at_eof():
                # Unread body: drop the connection rather than drain an unbounded stream.
                response.close()
    except TimeoutError:
        error = f"timeout after {timeout:g}s" + (f" (status {status} received)" if status else "")
    except aiohttp.ClientError as exc:
        error = _describe(exc)
    except (OSError, ValueError) as exc:  # e.g. an invalid URL or a refused address
        error = f"{type(exc).__name__}: {exc}"
    duration_ms = int((time.monotonic() - started) * 1000)
    text = excerpt_text(excerpt) if excerpt is not None else None
    if error is not None:
        error = error.replace("\x00", "\ufffd")
    success = error is None and status is not None and 200 <= status < 300
    if error is None and status is not None and not success:
        error = f"HTTP {status}" + (" (redirects are not followed)" if 300 <= status < 400 else "")
    return SendOutcome(
        success=success,
        status=status if error is None or status is not None else None,
        error=error,
        body=text,
        duration_ms=duration_ms,
        retry_after=retry_after,
    )


@functools.lru_cache(maxsize=64)
def _timeout(seconds: float) -> aiohttp.ClientTimeout:
    # ceil_threshold: aiohttp rounds longer timeouts up to a whole second; a registration's
    # timeout is kept to the millisecond instead.
    return aiohttp.ClientTimeout(total=seconds, ceil_threshold=3600)


def _describe(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"TLS error: {exc}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"connection failed: {exc}"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"
