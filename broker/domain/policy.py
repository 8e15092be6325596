"""Per-registration delivery policy: what a registration may set for itself, the rules its values
obey, and how an unset value falls back to the global ``BROKER_*`` default.

A stored policy keeps ``None`` for "the global default" (never a copy of the default), so changing
``BROKER_DELIVERY_TIMEOUT_SECONDS`` or ``BROKER_RETRY_SCHEDULE`` still reaches every registration
that did not choose its own. :func:`resolve` turns a stored policy plus the defaults into the
:class:`EffectivePolicy` the delivery engine works with.

The ranges below are the contract's, declared once: the API's request models and the OpenAPI
document read them from here, and :func:`policy_errors` checks the rules that span several fields
(reserved header names, scheme-specific fields, the secret a scheme can sign with).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple, Protocol

from broker.domain.errors import FieldError


class Ordering(StrEnum):
    UNORDERED = "unordered"
    FIFO = "fifo"  # one attempt in flight, strict createdAt order


class SignatureScheme(StrEnum):
    STANDARD_WEBHOOKS = "standard-webhooks"
    HMAC_SHA256_HEX = "hmac-sha256-hex"
    NONE = "none"


class Bounds(NamedTuple):
    low: float
    high: float

    def __contains__(self, value: object) -> bool:
        return isinstance(value, int | float) and self.low <= value <= self.high

    def describe(self) -> str:
        return f"{self.low:g} to {self.high:g}"


# ------------------------------------------------------------------ the contract's ranges

TIMEOUT_SECONDS = Bounds(1, 30)
RETRY_DELAY_SECONDS = Bounds(0, 86400)
MAX_RETRY_DELAYS = 20
SUSPEND_AFTER_FAILURES = Bounds(1, 1000)
RATE_LIMIT_PER_SECOND = Bounds(0.1, 10000)

MAX_HEADERS = 20
HEADER_NAME_LENGTH = Bounds(1, 64)
HEADER_VALUE_LENGTH = Bounds(1, 1024)
MAX_PREFIX_LENGTH = 64

DEFAULT_ORDERING = Ordering.UNORDERED
DEFAULT_SCHEME = SignatureScheme.STANDARD_WEBHOOKS
DEFAULT_SIGNATURE_HEADER = "X-Webhook-Signature"
DEFAULT_SIGNATURE_PREFIX = "sha256="

# RFC 9110 token: the characters a header name may have.
HTTP_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# Header values and prefixes: visible ASCII and space. Tabs, CR/LF and non-ASCII are refused:
# CR/LF would split the request, and non-ASCII bytes are read differently by different servers.
PRINTABLE = re.compile(r"^[\x20-\x7e]*$")

# Headers broker sets itself or that a partner must not control (framing, identity, cookies).
# Names compare case-insensitively; every ``webhook-*`` name belongs to Standard Webhooks.
RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-type",
        "content-length",
        "transfer-encoding",
        "connection",
        "user-agent",
        "authorization",
        "cookie",
    }
)
RESERVED_HEADER_PREFIX = "webhook-"

# Which fields only mean something with a given scheme.
HMAC_ONLY_FIELDS = ("header", "prefix", "timestampHeader")


def is_reserved_header(name: str) -> bool:
    low = name.lower()
    return low in RESERVED_HEADERS or low.startswith(RESERVED_HEADER_PREFIX)


# ------------------------------------------------------------------ stored policy (None = default)


@dataclass(frozen=True, kw_only=True, slots=True)
class DeliveryPolicy:
    timeout_seconds: float | None = None
    # () is a choice (a single attempt), None is the global schedule.
    retry_schedule: tuple[float, ...] | None = None
    suspend_after_consecutive_failures: int | None = None
    rate_limit_per_second: float | None = None
    ordering: Ordering | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class SignaturePolicy:
    scheme: SignatureScheme | None = None
    header: str | None = None
    prefix: str | None = None
    timestamp_header: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class RegistrationPolicy:
    delivery: DeliveryPolicy = DeliveryPolicy()
    signature: SignaturePolicy = SignaturePolicy()
    # Extra request headers in the partner's order and spelling; none by default.
    headers: tuple[tuple[str, str], ...] = ()


DEFAULT_POLICY = RegistrationPolicy()


def merge_headers(
    current: Sequence[tuple[str, str]], changes: Mapping[str, str | None] | None
) -> tuple[tuple[str, str], ...]:
    """JSON merge patch (RFC 7396) of the header map: a value sets, ``null`` removes, an absent
    name is kept; ``changes=None`` removes them all. Names match case-insensitively, and a
    changed header takes the spelling of the change."""
    if changes is None:
        return ()
    merged = {name.lower(): (name, value) for name, value in current}
    for name, value in changes.items():
        if value is None:
            merged.pop(name.lower(), None)
        else:
            merged[name.lower()] = (name, value)
    return tuple(merged.values())


def patched(
    current: RegistrationPolicy,
    *,
    delivery: Mapping[str, Any] | None = None,
    signature: Mapping[str, Any] | None = None,
    reset_delivery: bool = False,
    reset_signature: bool = False,
    headers: Mapping[str, str | None] | None = None,
    reset_headers: bool = False,
) -> RegistrationPolicy:
    """The policy after a PATCH, with merge-patch meaning: ``delivery`` and ``signature`` map the
    fields the request names (by their attribute names) to new values, ``None`` meaning "back to
    the global default"; a ``reset_*`` flag stands for the whole object sent as ``null``."""
    new_delivery = DeliveryPolicy() if reset_delivery else current.delivery
    if delivery:
        new_delivery = dataclasses.replace(new_delivery, **delivery)
    new_signature = SignaturePolicy() if reset_signature else current.signature
    if signature:
        new_signature = dataclasses.replace(new_signature, **signature)
    if reset_headers:
        new_headers: tuple[tuple[str, str], ...] = ()
    elif headers is not None:
        new_headers = merge_headers(current.headers, headers)
    else:
        new_headers = current.headers
    return RegistrationPolicy(delivery=new_delivery, signature=new_signature, headers=new_headers)


# ------------------------------------------------------------------ resolution


@dataclass(frozen=True, kw_only=True, slots=True)
class Defaults:
    """The global settings a policy falls back to."""

    timeout_seconds: float
    retry_schedule: tuple[float, ...]
    # No threshold and no rate limit unless a registration sets one.
    suspend_after_consecutive_failures: int | None = None
    rate_limit_per_second: float | None = None
    ordering: Ordering = DEFAULT_ORDERING


class _GlobalSettings(Protocol):
    delivery_timeout_seconds: float
    retry_schedule: tuple[float, ...]


def policy_defaults(settings: _GlobalSettings) -> Defaults:
    """The defaults a policy falls back to, from the process's settings."""
    return Defaults(
        timeout_seconds=settings.delivery_timeout_seconds,
        retry_schedule=tuple(settings.retry_schedule),
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class SignatureSpec:
    """How one registration's requests are signed, every default filled in."""

    scheme: SignatureScheme
    header: str | None  # the hmac-sha256-hex header; None for the other schemes
    prefix: str
    timestamp_header: str | None

    def own_headers(self) -> tuple[str, ...]:
        """Header names the signature writes (besides the reserved webhook-* ones)."""
        return tuple(h for h in (self.header, self.timestamp_header) if h)


STANDARD_WEBHOOKS = SignatureSpec(
    scheme=SignatureScheme.STANDARD_WEBHOOKS, header=None, prefix="", timestamp_header=None
)


@dataclass(frozen=True, kw_only=True, slots=True)
class EffectivePolicy:
    timeout_seconds: float
    retry_schedule: tuple[float, ...]
    suspend_after_consecutive_failures: int | None
    rate_limit_per_second: float | None
    ordering: Ordering
    signature: SignatureSpec
    headers: tuple[tuple[str, str], ...]


def signature_spec(policy: SignaturePolicy) -> SignatureSpec:
    scheme = policy.scheme or DEFAULT_SCHEME
    if scheme is not SignatureScheme.HMAC_SHA256_HEX:
        return SignatureSpec(scheme=scheme, header=None, prefix="", timestamp_header=None)
    return SignatureSpec(
        scheme=scheme,
        header=policy.header or DEFAULT_SIGNATURE_HEADER,
        prefix=DEFAULT_SIGNATURE_PREFIX if policy.prefix is None else policy.prefix,
        timestamp_header=policy.timestamp_header,
    )


def resolve(policy: RegistrationPolicy, defaults: Defaults) -> EffectivePolicy:
    d = policy.delivery

    def pick(value: Any, default: Any) -> Any:
        return default if value is None else value

    return EffectivePolicy(
        timeout_seconds=pick(d.timeout_seconds, defaults.timeout_seconds),
        retry_schedule=pick(d.retry_schedule, defaults.retry_schedule),
        suspend_after_consecutive_failures=pick(
            d.suspend_after_consecutive_failures, defaults.suspend_after_consecutive_failures
        ),
        rate_limit_per_second=pick(d.rate_limit_per_second, defaults.rate_limit_per_second),
        ordering=pick(d.ordering, defaults.ordering),
        signature=signature_spec(policy.signature),
        headers=policy.headers,
    )


# ------------------------------------------------------------------ rules


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def delivery_errors(policy: DeliveryPolicy) -> list[FieldError]:
    errors: list[FieldError] = []

    def need(ok: bool, field: str, message: str) -> None:
        if not ok:
            errors.append(FieldError(field=f"delivery.{field}", message=message))

    if policy.timeout_seconds is not None:
        need(
            _number(policy.timeout_seconds) and policy.timeout_seconds in TIMEOUT_SECONDS,
            "timeoutSeconds",
            f"must be a number of seconds, {TIMEOUT_SECONDS.describe()}",
        )
    if policy.retry_schedule is not None:
        need(
            len(policy.retry_schedule) <= MAX_RETRY_DELAYS,
            "retrySchedule",
            f"must be a list of at most {MAX_RETRY_DELAYS} delays ([] = a single attempt)",
        )
        for i, delay in enumerate(policy.retry_schedule):
            need(
                _number(delay) and delay in RETRY_DELAY_SECONDS,
                f"retrySchedule[{i}]",
                f"must be a delay in seconds, {RETRY_DELAY_SECONDS.describe()}",
            )
    if policy.suspend_after_consecutive_failures is not None:
        count = policy.suspend_after_consecutive_failures
        need(
            isinstance(count, int)
            and not isinstance(count, bool)
            and count in SUSPEND_AFTER_FAILURES,
            "suspendAfterConsecutiveFailures",
            f"must be an integer, {SUSPEND_AFTER_FAILURES.describe()}",
        )
    if policy.rate_limit_per_second is not None:
        need(
            _number(policy.rate_limit_per_second)
            and policy.rate_limit_per_second in RATE_LIMIT_PER_SECOND,
            "rateLimitPerSecond",
            f"must be a number of attempts per second, {RATE_LIMIT_PER_SECOND.describe()}",
        )
    if policy.ordering is not None:
        need(
            policy.ordering in set(Ordering),
            "ordering",
            f"must be one of {', '.join(o.value for o in Ordering)}",
        )
    return errors


def header_name_problem(name: Any) -> str | None:
    if not isinstance(name, str) or len(name) not in HEADER_NAME_LENGTH:
        return f"a header name must be {HEADER_NAME_LENGTH.describe()} characters"
    if not HTTP_TOKEN.match(name):
        return "a header name must be an HTTP token (letters, digits and !#$%&'*+-.^_`|~)"
    return None


def signature_errors(policy: SignaturePolicy) -> list[FieldError]:
    errors: list[FieldError] = []

    def add(field: str, message: str) -> None:
        errors.append(FieldError(field=f"signature.{field}", message=message))

    scheme = policy.scheme
    if scheme is not None and scheme not in set(SignatureScheme):
        add("scheme", f"must be one of {', '.join(s.value for s in SignatureScheme)}")
        return errors
    if (scheme or DEFAULT_SCHEME) is not SignatureScheme.HMAC_SHA256_HEX:
        for attr, field in zip(
            ("header", "prefix", "timestamp_header"), HMAC_ONLY_FIELDS, strict=True
        ):
            if getattr(policy, attr) is not None:
                add(field, "applies only to the hmac-sha256-hex scheme; send null or omit it")
        return errors
    for attr, field in (("header", "header"), ("timestamp_header", "timestampHeader")):
        name = getattr(policy, attr)
        if name is None:
            continue
        problem = header_name_problem(name)
        if problem is None and is_reserved_header(name):
            problem = f"{name} is reserved: broker sets it itself or it must not be set"
        if problem is not None:
            add(field, problem)
    spec = signature_spec(policy)
    if (
        policy.timestamp_header is not None
        and spec.header is not None
        and policy.timestamp_header.lower() == spec.header.lower()
    ):
        add("timestampHeader", "must differ from the signature header")
    if policy.prefix is not None and (
        not isinstance(policy.prefix, str)
        or len(policy.prefix) > MAX_PREFIX_LENGTH
        or not PRINTABLE.match(policy.prefix)
    ):
        add("prefix", f"must be at most {MAX_PREFIX_LENGTH} printable ASCII characters")
    return errors


def headers_errors(
    headers: Iterable[tuple[str, str]], signature: SignatureSpec
) -> list[FieldError]:
    """Custom headers: count, names, values, duplicates and every name broker writes itself
    (including this registration's own signature and timestamp headers)."""
    errors: list[FieldError] = []
    items = list(headers)
    if len(items) > MAX_HEADERS:
        errors.append(
            FieldError(field="headers", message=f"must hold at most {MAX_HEADERS} headers")
        )
    own = {h.lower() for h in signature.own_headers()}
    seen: set[str] = set()
    for name, value in items:
        field = f"headers.{name}"
        problem = header_name_problem(name)
        if problem is None:
            low = name.lower()
            if is_reserved_header(name):
                problem = f"{name} is reserved: broker sets it itself or it must not be set"
            elif low in own:
                problem = f"{name} is this registration's signature or timestamp header"
            elif low in seen:
                problem = "the same header name is given twice (names are case-insensitive)"
            seen.add(low)
        if problem is None and (
            not isinstance(value, str)
            or len(value) not in HEADER_VALUE_LENGTH
            or not PRINTABLE.match(value)
        ):
            problem = (
                f"a header value must be {HEADER_VALUE_LENGTH.describe()} printable ASCII "
                "characters (no CR, LF or tab)"
            )
        if problem is not None:
            errors.append(FieldError(field=field, message=problem))
    return errors


def policy_errors(policy: RegistrationPolicy) -> list[FieldError]:
    """Every rule a whole policy must satisfy, each error naming its field."""
    errors = delivery_errors(policy.delivery) + signature_errors(policy.signature)
    if not any(e.field.startswith("signature.") for e in errors):
        errors += headers_errors(policy.headers, signature_spec(policy.signature))
    else:  # the signature is unusable, so its own headers are unknown; check the rest alone
        errors += headers_errors(policy.headers, STANDARD_WEBHOOKS)
    return errors
