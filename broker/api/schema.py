"""Every request and response body of the API, declared once.

These pydantic models are the server's validation and serialization *and* the components of
``/openapi.json`` (``broker/api/openapi.py`` adds only paths, security and examples). A limit or
a pattern is a constant here and nowhere else.

Patterns are written so that the same text means the same thing to pydantic's (Rust) regex
engine, to JSON Schema's ECMA-262 dialect and to Python's ``re``: anchored with ``^…$`` (in Rust
and ECMA-262 ``$`` is the end of the text, unlike Python's ``re.match`` where it also matches
before a trailing newline — Python callers use :func:`full`, i.e. ``re.fullmatch``) and without
look-around, which Rust does not have.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, NotRequired

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    with_config,
)
from pydantic.alias_generators import to_camel
from typing_extensions import TypedDict

from broker.domain import errors as domain
from broker.domain import policy as P
from broker.domain.ids import format_time
from broker.domain.states import EVENT_STATUSES, EventStatus, Status
from broker.http.addresses import MAX_URL_LENGTH as URL_MAX_LENGTH

# --------------------------------------------------------------------------- limits

RESOURCE_MAX_LENGTH = 2048
DESCRIPTION_MAX_LENGTH = 1024
NAME_MAX_LENGTH = 200
EVENT_NAME_MAX_LENGTH = 200
BASIC_AUTH_MAX_LENGTH = 1024
EVENT_TYPES_MAX_ITEMS = 100
# The hard ceiling of BROKER_INGEST_MAX_EVENTS; the configured value is checked in the handler
# and written into the served document.
INGEST_MAX_EVENTS_CEILING = 1_000_000
IDEMPOTENCY_KEY_MAX_LENGTH = 255
PAGE_MAX = 500
PAGE_DEFAULT = 100
GRACE_SECONDS_MAX = 7 * 24 * 3600
GRACE_SECONDS_DEFAULT = 24 * 3600
PORTAL_LINK_TTL_MIN = 60
PORTAL_LINK_TTL_MAX = 7 * 24 * 3600
PORTAL_LINK_TTL_DEFAULT = 3600
# The most event objects one replay queues again (the contract's 100000).
REPLAY_MAX_EVENTS = 100_000

# --------------------------------------------------------------------------- patterns

# Event type names, e.g. ``Core.Account.Opened`` or ``job.transaction``.
EVENT_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)+$"
# A registration's eventTypes entry: an exact name, a prefix wildcard (``Core.Account.*``) or ``*``.
EVENT_TYPE_FILTER_PATTERN = (
    r"^(\*"
    r"|[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)*\.\*"
    r"|[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)+)$"
)
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"

# A resource is a relative URI path: no whitespace, no control characters (C0, DEL, C1, and
# Unicode spaces), no scheme (``https:``) and no authority (``//host``). Without look-ahead, "no
# scheme" reads: it starts with ``/`` not followed by ``/``, or with something that cannot begin
# a scheme, or with letters/digits/``+.-`` that are followed by anything but ``:``.
_NOT_PATH = r"\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_PATH = f"[^{_NOT_PATH}]"
RESOURCE_PATTERN = (
    f"^(/([^/{_NOT_PATH}]{_PATH}*)?"
    f"|[^A-Za-z/{_NOT_PATH}]{_PATH}*"
    f"|[A-Za-z][A-Za-z0-9+.\\-]*([^A-Za-z0-9+.:\\-{_NOT_PATH}]{_PATH}*)?)$"
)
# Free text may hold anything but NUL (PostgreSQL text cannot); names must not be blank.
TEXT_PATTERN = r"^[^\x00]*$"
NAME_PATTERN = r"^[^\x00]*[^\s\x00][^\x00]*$"
# Basic credentials: ``user:password`` in printable ASCII, or the standard base64 of it.
BASIC_AUTH_PATTERN = (
    r"^([\x20-\x7e]*:[\x20-\x7e]*"
    r"|([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{4}))$"
)
# ``whsec_`` + standard base64 of 24 to 64 bytes (32 to 88 base64 characters).
SECRET_PATTERN = r"^whsec_[A-Za-z0-9+/]{30,86}[A-Za-z0-9+/=]{2}$"
SIGNATURE_PATTERN = r"^v1,[A-Za-z0-9+/]+={0,2}( v1,[A-Za-z0-9+/]+={0,2})*$"
# A secret given for a registration: printable ASCII (its scheme's own rules are checked by the
# handler: standard-webhooks wants whsec_ + base64, see broker.domain.signatures).
OWN_SECRET_PATTERN = r"^[\x20-\x7e]*$"
# Extra header names are HTTP tokens; values and signature prefixes visible ASCII and space.
HEADER_NAME_PATTERN = P.HTTP_TOKEN.pattern
HEADER_VALUE_PATTERN = P.PRINTABLE.pattern

# What a pattern mismatch says, per pattern (pydantic would quote the regex).
_PATTERN_MESSAGES: dict[str, str | None] = {
    EVENT_NAME_PATTERN: "must be an event type name such as Core.Account.Opened",
    EVENT_TYPE_FILTER_PATTERN: "must be an event type name (Core.Account.Opened), a prefix "
    "wildcard (Core.Account.*) or *",
    UUID_PATTERN: "must be a UUID",
    RESOURCE_PATTERN: "must be a relative URI path such as core/v1/dda/accounts/2001231231, "
    "without whitespace or control characters",
    TEXT_PATTERN: "must not contain NUL characters",
    NAME_PATTERN: "must not be blank or contain NUL characters",
    BASIC_AUTH_PATTERN: "must be user:password or its base64 encoding",
    SECRET_PATTERN: "must be whsec_ followed by the base64 of 24 to 64 bytes",
    OWN_SECRET_PATTERN: "must be printable ASCII characters",
    HEADER_NAME_PATTERN: "a header name must be an HTTP token (letters, digits and "
    "!#$%&'*+-.^_`|~)",
    HEADER_VALUE_PATTERN: "must be printable ASCII characters (no CR, LF or tab)",
}

# Each pattern for Python's re, used with fullmatch (compiled once, at import).
_PYTHON = {
    pattern: re.compile(pattern.removeprefix("^").removesuffix("$"))
    for pattern in _PATTERN_MESSAGES
}


def full(pattern: str, text: str) -> bool:
    """Does ``text`` match ``pattern`` as JSON Schema means it (no trailing-newline leeway)?"""
    return _PYTHON[pattern].fullmatch(text) is not None


# --------------------------------------------------------------------------- statuses

REGISTRATION_STATUSES = tuple(s.value for s in Status)

# --------------------------------------------------------------------------- field types


def _basic_auth_header_value(value: str) -> str:
    """Plain ``user:password`` is encoded here; a base64 form must decode to ``user:password``."""
    if ":" in value:
        return base64.b64encode(value.encode()).decode()
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if b":" not in decoded:
        raise ValueError("must be user:password or its base64 encoding")
    return value


# Within these bounds an instant converts to UTC in any offset (year 1 and 9999 overflow). A bound
# rather than a conversion keeps the check in pydantic-core: a per-item Python validator cost
# 0.6 us per item (bench/README.md). PostgreSQL stores the instant; the offset does not matter.
EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, tzinfo=UTC)
OccurredAt = Annotated[
    AwareDatetime,
    Field(
        ge=EARLIEST,
        le=LATEST,
        description="When the change happened at the producer (optional).",
    ),
]

Timestamp = Annotated[
    datetime,
    PlainSerializer(format_time, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
# Produced by pattern in the request (fast, and the document shows the exact form accepted).
UuidText = Annotated[str, Field(pattern=UUID_PATTERN, json_schema_extra={"format": "uuid"})]
Id = Annotated[
    uuid.UUID,
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "format": "uuid"}),
]
RegistrationStatus = Annotated[
    Status, WithJsonSchema({"type": "string", "enum": list(REGISTRATION_STATUSES)})
]
EventName = Annotated[
    str,
    Field(
        max_length=EVENT_NAME_MAX_LENGTH,
        pattern=EVENT_NAME_PATTERN,
        description="An event type name such as `Core.Account.Opened`.",
        examples=["Core.Account.Opened", "job.transaction"],
    ),
]
EventTypeFilter = Annotated[
    str,
    Field(
        pattern=EVENT_TYPE_FILTER_PATTERN,
        description="An exact event type name (which must be in the catalog), a prefix "
        "wildcard such as `Core.Account.*`, or `*` for every event type.",
        examples=["Core.Account.Opened", "Core.Account.*", "*"],
    ),
]
Resource = Annotated[
    str,
    Field(
        min_length=1,
        max_length=RESOURCE_MAX_LENGTH,
        pattern=RESOURCE_PATTERN,
        description="A relative URI path, no whitespace or control characters.",
        examples=["core/v1/dda/accounts/2001231231"],
    ),
]
Text = Annotated[str, Field(max_length=DESCRIPTION_MAX_LENGTH, pattern=TEXT_PATTERN)]
Name = Annotated[
    str,
    Field(
        min_length=1,
        max_length=NAME_MAX_LENGTH,
        pattern=NAME_PATTERN,
        description="Surrounding whitespace is stripped; must not be blank.",
    ),
    AfterValidator(str.strip),
]
CallbackUrl = Annotated[
    str,
    Field(
        min_length=1,
        max_length=URL_MAX_LENGTH,
        json_schema_extra={"format": "uri"},
        description="Absolute http(s) callback URL. Loopback, private, link-local and other "
        "non-public addresses are refused unless BROKER_ALLOW_PRIVATE_URLS=true.",
    ),
]
EventTypeFilters = Annotated[
    list[EventTypeFilter], Field(min_length=1, max_length=EVENT_TYPES_MAX_ITEMS)
]
OwnSecret = Annotated[
    str,
    Field(
        min_length=16,
        max_length=256,
        pattern=OWN_SECRET_PATTERN,
        description="Your own secret; generated (`whsec_` + base64 of 32 random bytes) when "
        "absent or null. With the standard-webhooks scheme: `whsec_` + base64 of 24 to 64 "
        "bytes. With hmac-sha256-hex (or none): any 16 to 256 printable ASCII characters, "
        "used as the HMAC key exactly as given.",
    ),
]
BasicAuth = Annotated[
    str,
    Field(
        min_length=1,
        max_length=BASIC_AUTH_MAX_LENGTH,
        pattern=BASIC_AUTH_PATTERN,
        description="`user:password` or its base64 encoding, sent on every delivery as "
        "`Authorization: Basic <base64>`; never read back. `null` means none.",
        json_schema_extra={"writeOnly": True},
    ),
    AfterValidator(_basic_auth_header_value),
]
ApiKey = Annotated[
    str, Field(description="The bearer key. Shown only in this response; broker stores a hash.")
]
SigningSecret = Annotated[
    str,
    Field(
        description="Signing secret: `whsec_` + base64 of the HMAC key, or the secret given "
        "for the hmac-sha256-hex scheme."
    ),
]

# --------------------------------------------------------------------------- base classes


class Request(BaseModel):
    """A request body: strict JSON types, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Response(BaseModel):
    """A response body: built from the store's value objects (snake_case attributes), written
    in camelCase; every field is always present."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        serialize_by_alias=True,
        validate_by_name=True,
        from_attributes=True,
        json_schema_serialization_defaults_required=True,
    )

    def json_bytes(self) -> bytes:
        return self.__pydantic_serializer__.to_json(self, by_alias=True)


# --------------------------------------------------------------------------- problems


class FieldError(Response):
    """One invalid field of a request."""

    model_config = ConfigDict(title="domain.FieldError")
    field: str
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem detail; every 4xx and 5xx answer carries one."""

    model_config = ConfigDict(extra="allow")
    type: Annotated[str, Field(json_schema_extra={"format": "uri-reference"})]
    title: str
    status: Annotated[int, Field(ge=400, le=599)]
    detail: str
    instance: Annotated[str, Field(description="The request path.")] | None = None
    errors: list[FieldError] | None = None
    current_status: RegistrationStatus | None = Field(
        default=None,
        alias="currentStatus",
        description="With a 409 `invalid-transition`: the registration's status now.",
    )
    count: int | None = Field(
        default=None,
        ge=0,
        description="With a 422 `replay-too-large`: how many event objects the replay matched.",
    )
    limit: int | None = Field(
        default=None,
        ge=1,
        description="With a 422 `replay-too-large`: the most one replay queues.",
    )


class ValidationProblem(Problem):
    """A 400 problem. Validation failures list every bad field in `errors`; batch items are
    named by index, e.g. `events[3].resource`."""

    status: Literal[400]


class Health(Response):
    status: Annotated[str, Field(examples=["ok"])]


# --------------------------------------------------------------------------- admin


class PartnerCreate(Request):
    name: Name


class ProducerKeyCreate(Request):
    name: Name


class EventTypeUpsert(Request):
    description: Text = ""


class Partner(Response):
    id: Id
    name: str
    created_at: Timestamp


class PartnerCreated(Partner):
    api_key: ApiKey


class Key(Response):
    id: Id
    api_key: ApiKey
    created_at: Timestamp


class ProducerKey(Key):
    name: str


class EventType(Response):
    name: EventName
    description: str
    created_at: Timestamp
    updated_at: Timestamp


class PortalLinkCreate(Request):
    ttl_seconds: int = Field(
        default=PORTAL_LINK_TTL_DEFAULT,
        ge=PORTAL_LINK_TTL_MIN,
        le=PORTAL_LINK_TTL_MAX,
        alias="ttlSeconds",
        description="How long the link signs in, in seconds.",
    )
    read_only: bool = Field(
        default=False,
        alias="readOnly",
        description="A read-only link may only read: every non-GET request answers 403.",
    )


class PortalLink(Response):
    """A link that opens the portal signed in as the partner; the token is shown only here."""

    url: Annotated[str, Field(description="`<base>/portal/#token=<token>`.")]
    token: Annotated[
        str,
        Field(
            description="Bearer credential for /webhooks/v1/* of this partner only, until "
            "`expiresAt`; broker stores a hash."
        ),
    ]
    expires_at: Annotated[Timestamp, Field(description="When the token stops working.")]
    read_only: bool


class PortalSession(Response):
    """What the calling partner credential is and may do (the portal asks on sign-in)."""

    partner_id: Id
    read_only: bool
    expires_at: Annotated[
        Timestamp | None, Field(description="A portal link's end; null for a partner key.")
    ]


# --------------------------------------------------------------------------- producer


@with_config(ConfigDict(extra="forbid", strict=True))
class ResourceEvent(TypedDict):
    """One resource event as a producer sends it.

    A TypedDict rather than a model: a batch of 10,000 is validated in pydantic-core without
    building an object per item (bench/README.md, "Ingest validation")."""

    partnerId: Annotated[UuidText, Field(description="An existing partner.")]
    eventName: EventName
    resource: Resource
    occurredAt: NotRequired[OccurredAt | None]


class ResourceEventBatch(Request):
    """All or nothing: one invalid item refuses the whole batch."""

    events: Annotated[
        list[ResourceEvent], Field(min_length=1, max_length=INGEST_MAX_EVENTS_CEILING)
    ]


class IngestAccepted(Response):
    """Every item is durably committed."""

    accepted: Annotated[int, Field(ge=0)]


# --------------------------------------------------------------------------- delivery policy
# Bounds from broker.domain.policy (the contract's ranges); the rules spanning fields (reserved
# header names, scheme-only fields, the secret a scheme can sign with) are checked there on the
# policy a request would leave behind.

Timeout = Annotated[float, Field(ge=P.TIMEOUT_SECONDS.low, le=P.TIMEOUT_SECONDS.high)]
RetryDelay = Annotated[float, Field(ge=P.RETRY_DELAY_SECONDS.low, le=P.RETRY_DELAY_SECONDS.high)]
SuspendAfter = Annotated[
    int, Field(ge=P.SUSPEND_AFTER_FAILURES.low, le=P.SUSPEND_AFTER_FAILURES.high)
]
RatePerSecond = Annotated[
    float, Field(ge=P.RATE_LIMIT_PER_SECOND.low, le=P.RATE_LIMIT_PER_SECOND.high)
]
Ordering = Literal["unordered", "fifo"]
Scheme = Literal["standard-webhooks", "hmac-sha256-hex", "none"]
HeaderName = Annotated[
    str,
    Field(
        min_length=int(P.HEADER_NAME_LENGTH.low),
        max_length=int(P.HEADER_NAME_LENGTH.high),
        pattern=HEADER_NAME_PATTERN,
    ),
]
HeaderValue = Annotated[
    str,
    Field(
        min_length=int(P.HEADER_VALUE_LENGTH.low),
        max_length=int(P.HEADER_VALUE_LENGTH.high),
        pattern=HEADER_VALUE_PATTERN,
    ),
]
_HEADERS_DESCRIPTION = (
    f"Up to {P.MAX_HEADERS} extra request headers. Refused: Host, Content-Type, "
    "Content-Length, Transfer-Encoding, Connection, User-Agent, Authorization, Cookie, any "
    "webhook-* name, and the registration's own signature and timestamp headers."
)
# Names are checked with the other header rules (they name the header in the error).
_HEADER_NAMES_SCHEMA = {
    "propertyNames": {
        "minLength": int(P.HEADER_NAME_LENGTH.low),
        "maxLength": int(P.HEADER_NAME_LENGTH.high),
        "pattern": HEADER_NAME_PATTERN,
    },
    "maxProperties": P.MAX_HEADERS,
}


class DeliveryPolicyUpdate(Request):
    """How broker delivers to this registration. A field left out is kept (on create: the
    default); `null` returns it to the global default."""

    timeout_seconds: Timeout | None = Field(
        default=None, alias="timeoutSeconds", description="Seconds to wait for an answer."
    )
    retry_schedule: Annotated[list[RetryDelay], Field(max_length=P.MAX_RETRY_DELAYS)] | None = (
        Field(
            default=None,
            alias="retrySchedule",
            description="Delays in seconds before each retry (with the global jitter); `[]` "
            "means a single attempt.",
        )
    )
    suspend_after_consecutive_failures: SuspendAfter | None = Field(
        default=None,
        alias="suspendAfterConsecutiveFailures",
        description="That many failed attempts in a row (test deliveries included) suspend "
        "the registration, even before an event exhausts its retries.",
    )
    rate_limit_per_second: RatePerSecond | None = Field(
        default=None,
        alias="rateLimitPerSecond",
        description="Attempts to this registration never exceed this rate, across all worker "
        "processes.",
    )
    ordering: Ordering | None = Field(
        default=None,
        description="`fifo`: one attempt in flight, event objects in createdAt order; a "
        "failing event holds back the later ones.",
    )


class SignaturePolicyUpdate(Request):
    """How broker signs requests to this registration; `null` = the default."""

    scheme: Scheme | None = Field(default=None, description="Default `standard-webhooks`.")
    header: HeaderName | None = Field(
        default=None, description="hmac-sha256-hex only; default `X-Webhook-Signature`."
    )
    prefix: (
        Annotated[str, Field(max_length=P.MAX_PREFIX_LENGTH, pattern=HEADER_VALUE_PATTERN)] | None
    ) = Field(default=None, description="hmac-sha256-hex only; default `sha256=`.")
    timestamp_header: HeaderName | None = Field(
        default=None,
        alias="timestampHeader",
        description="hmac-sha256-hex only: this header carries the unix time and the HMAC "
        "covers `{timestamp}.{body}`.",
    )


# In a PATCH a null header value removes that header (JSON merge patch).
HeadersUpdate = Annotated[
    dict[str, HeaderValue | None],
    Field(description=_HEADERS_DESCRIPTION, json_schema_extra=_HEADER_NAMES_SCHEMA),
]


class DeliveryPolicy(Response):
    """The registration's delivery settings; `null` = the global default."""

    timeout_seconds: float | None
    retry_schedule: list[float] | None
    suspend_after_consecutive_failures: int | None
    rate_limit_per_second: float | None
    ordering: Ordering | None


class SignaturePolicy(Response):
    """How requests to the registration are signed; `null` = the default."""

    scheme: Scheme | None
    header: str | None
    prefix: str | None
    timestamp_header: str | None


class _PolicyFields(BaseModel):
    """The policy fields a registration create or update may carry (merged as described)."""

    delivery: DeliveryPolicyUpdate | None = None
    signature: SignaturePolicyUpdate | None = None
    headers: HeadersUpdate | None = None


# --------------------------------------------------------------------------- registrations


class RegistrationCreate(Request, _PolicyFields):
    url: CallbackUrl
    event_types: EventTypeFilters = Field(alias="eventTypes")
    description: Text = ""
    secret: OwnSecret | None = None
    basic_auth: BasicAuth | None = Field(default=None, alias="basicAuth")


def _absent_is_not_null(schema: dict[str, Any]) -> None:
    # An optional field that may not be null: the default (None = "absent") is not a value a
    # client may send, so the document does not show it.
    for prop in schema.get("properties", {}).values():
        if prop.get("default", 0) is None and "anyOf" not in prop:
            del prop["default"]


class RegistrationUpdate(Request, _PolicyFields):
    """Only the fields present change; `delivery`, `signature` and `headers` merge into the
    stored policy (JSON merge patch: `null` returns a field, or a whole object, to its
    default)."""

    model_config = ConfigDict(json_schema_extra=_absent_is_not_null)
    # None: absent (unchanged); an explicit null is refused, as the document says.
    url: CallbackUrl = Field(default=None)  # type: ignore[assignment]
    event_types: EventTypeFilters = Field(default=None, alias="eventTypes")  # type: ignore[arg-type]
    description: Text = Field(default=None)  # type: ignore[assignment]
    basic_auth: BasicAuth | None = Field(default=None, alias="basicAuth")


class RestartRequest(Request):
    resend_failed: bool = Field(
        default=False,
        alias="resendFailed",
        description="Also re-queue the registration's Failed events.",
    )


class RotateSecretRequest(Request):
    grace_seconds: int = Field(
        default=GRACE_SECONDS_DEFAULT,
        ge=0,
        le=GRACE_SECONDS_MAX,
        alias="graceSeconds",
        description="How long the previous secret keeps signing deliveries.",
    )
    secret: OwnSecret | None = None


class PauseRequest(Request):
    reason: Any = Field(
        default=None, description="Free text for the caller's own records; not stored."
    )


class EmptyRequest(Request):
    """An optional empty JSON object."""


class Breaker(Response):
    """Delivery circuit breaker: back-pressure, never a status. Open after repeated failures:
    nothing is attempted until nextProbeAt, then one attempt probes (half-open) and a success
    closes it."""

    state: Literal["closed", "open", "half-open"]
    opened_at: Annotated[Timestamp | None, Field(description="When the breaker last opened.")]
    next_probe_at: Annotated[
        Timestamp | None, Field(description="When an open breaker lets one attempt through.")
    ]


class Registration(Response):
    id: Id
    url: Annotated[str, Field(description="The callback URL.")]
    event_types: list[str]
    description: str
    status: RegistrationStatus
    failure_count: Annotated[int, Field(ge=0, description="Consecutive failed delivery attempts.")]
    last_success_at: Annotated[
        Timestamp | None, Field(description="Start of the latest successful attempt.")
    ]
    last_failure_at: Annotated[
        Timestamp | None, Field(description="Start of the latest failed attempt.")
    ]
    created_at: Annotated[Timestamp, Field(description="When the registration was created.")]
    updated_at: Annotated[Timestamp, Field(description="When the registration last changed.")]
    delivery: DeliveryPolicy
    signature: SignaturePolicy
    headers: Annotated[dict[str, str], Field(description=_HEADERS_DESCRIPTION)]
    breaker: Annotated[Breaker, Field(json_schema_extra={"readOnly": True})]


class RegistrationCreated(Registration):
    """The new registration with its secret, shown only here and on rotation."""

    secret: SigningSecret


class RotateResult(Response):
    secret: SigningSecret


class Attempt(Response):
    """One delivery attempt."""

    attempt_number: Annotated[int, Field(ge=1)]
    attempted_at: Annotated[Timestamp, Field(description="When the attempt started.")]
    duration_ms: Annotated[int, Field(ge=0)]
    response_status: Annotated[
        int | None,
        Field(description="The receiver's HTTP status; null when none was received."),
    ]
    error: Annotated[
        str | None,
        Field(description="Why the attempt failed without a status (timeout, refused...)."),
    ]
    response_body: Annotated[
        str | None, Field(description="The first 1024 bytes of the receiver's response body.")
    ]


class TestResult(Response):
    # The contract promises success and attempt; eventId is sent too, as an extra.
    model_config = ConfigDict(json_schema_extra={"required": ["success", "attempt"]})

    success: bool
    event_id: Annotated[Id, Field(description="The id the test delivery was signed with.")]
    attempt: Attempt


# --------------------------------------------------------------------------- stats

STATS_PERIODS = ("1h", "24h", "7d")
Millis = Annotated[float, Field(ge=0)]


class AttemptCounts(Response):
    success: Annotated[int, Field(ge=0)]
    failure: Annotated[int, Field(ge=0)]


class LatencyPercentiles(Response):
    """Attempt durations in ms, estimated from log-scale histograms: within 12% of the exact
    nearest-rank percentile (exact under 5 ms)."""

    p50: Millis
    p95: Millis
    p99: Millis


class QueueState(Response):
    pending: Annotated[int, Field(ge=0, description="Event objects waiting for delivery.")]
    oldest_pending_at: Annotated[
        Timestamp | None, Field(description="When the oldest of them was created.")
    ]


class StatsBucket(Response):
    start: Annotated[Timestamp, Field(description="The bucket's start; it lasts 1/60 period.")]
    success: Annotated[int, Field(ge=0)]
    failure: Annotated[int, Field(ge=0)]
    p95_ms: Annotated[Millis | None, Field(description="null when the bucket has no attempts.")]


class RegistrationStats(Response):
    """A registration's delivery attempts over a period, in 60 equal buckets, oldest first;
    the last is the bucket holding now. Attempts with a real result count (deliveries and test
    deliveries); an attempt whose worker stopped counts once its late result arrives."""

    period: Literal["1h", "24h", "7d"]
    attempts: AttemptCounts
    success_rate: Annotated[
        float | None, Field(ge=0, le=1, description="success / attempts; null without attempts.")
    ]
    latency_ms: Annotated[
        LatencyPercentiles | None, Field(description="null without attempts in the period.")
    ]
    queue: QueueState
    series: Annotated[list[StatsBucket], Field(min_length=60, max_length=60)]


# --------------------------------------------------------------------------- replay

ReplayStatus = Literal["Failed", "Success"]
REPLAY_STATUSES: tuple[ReplayStatus, ...] = ("Failed", "Success")


class ReplayRequest(Request):
    """Which event objects of the registration become Pending again: created in
    `[since, until)`, in one of `status`."""

    since: Annotated[OccurredAt, Field(description="Created at or after (RFC 3339).")]
    until: Annotated[
        OccurredAt | None,
        Field(description="Created before (RFC 3339); default: the time of the request."),
    ] = None
    status: Annotated[
        list[ReplayStatus],
        Field(
            min_length=1,
            max_length=len(REPLAY_STATUSES),
            description="Final statuses to replay; default both. Pending events are already "
            "queued.",
        ),
    ] = Field(default_factory=lambda: list(REPLAY_STATUSES))


class ReplayResult(Response):
    requeued: Annotated[
        int,
        Field(ge=0, le=REPLAY_MAX_EVENTS, description="Event objects that are Pending again."),
    ]


# --------------------------------------------------------------------------- events


class Event(Response):
    """An event object: the resource events of one window for one registration."""

    id: Id
    event_name: EventName
    status: Annotated[
        EventStatus,
        WithJsonSchema({"type": "string", "enum": list(EVENT_STATUSES)}),
        Field(
            description="Delivery status of the event object. A delivered body always says Pending."
        ),
    ]
    partner_id: Id
    registration_id: Id
    created_at: Annotated[Timestamp, Field(description="RFC 3339 UTC with milliseconds and Z.")]
    last_attempted_at: Annotated[
        Timestamp | None,
        Field(
            description="From the API: the latest attempt. In a delivered body: the start of "
            "the previous attempt (null on the first)."
        ),
    ]
    resources: Annotated[list[str], Field(description="Each resource once, in first-seen order.")]


# --------------------------------------------------------------------------- lists and pages

NextCursor = Annotated[
    str | None, Field(description="Pass as `cursor` for the next page; null at the end.")
]


class PartnerList(Response):
    """Partners, oldest first, a page at a time."""

    data: list[Partner]
    next_cursor: NextCursor


class EventTypeList(Response):
    """The event type catalog."""

    data: list[EventType]


class RegistrationList(Response):
    """The partner's registrations that are not Deleted, oldest first, a page at a time."""

    data: list[Registration]
    next_cursor: NextCursor


class AttemptList(Response):
    """Every attempt of the event, oldest first."""

    data: list[Attempt]


class EventPage(Response):
    """Events, newest first."""

    data: list[Event]
    next_cursor: NextCursor


# Every component of the document: (model, how it is used). Requests are shown as they are
# validated, responses as they are serialized.
REQUEST_MODELS: tuple[type[BaseModel], ...] = (
    PartnerCreate,
    ProducerKeyCreate,
    EventTypeUpsert,
    ResourceEventBatch,
    RegistrationCreate,
    RegistrationUpdate,
    DeliveryPolicyUpdate,
    SignaturePolicyUpdate,
    RestartRequest,
    RotateSecretRequest,
    PauseRequest,
    EmptyRequest,
    PortalLinkCreate,
    ReplayRequest,
)
RESPONSE_MODELS: tuple[type[BaseModel], ...] = (
    Problem,
    ValidationProblem,
    FieldError,
    Health,
    Partner,
    PartnerCreated,
    PartnerList,
    Key,
    ProducerKey,
    EventType,
    EventTypeList,
    IngestAccepted,
    Registration,
    DeliveryPolicy,
    SignaturePolicy,
    RegistrationCreated,
    RegistrationList,
    RotateResult,
    Attempt,
    AttemptList,
    TestResult,
    RegistrationStats,
    AttemptCounts,
    LatencyPercentiles,
    QueueState,
    StatsBucket,
    Event,
    EventPage,
    PortalLink,
    PortalSession,
    ReplayResult,
)
# Named string schemas the paths refer to.
NAMED_TYPES: dict[str, Any] = {"EventName": EventName, "EventTypeFilter": EventTypeFilter}


# --------------------------------------------------------------------------- parsing


class MalformedJson(ValueError):
    """The body is not UTF-8 JSON; the message is the parser's."""


def parse(adapter: TypeAdapter[Any], raw: bytes) -> tuple[Any, list[domain.FieldError]]:
    """Validate ``raw`` JSON against a model: ``(value, [])`` or ``(None, every error)``."""
    try:
        return adapter.validate_json(raw), []
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=True)
        if errors and errors[0]["type"] == "json_invalid":
            raise MalformedJson(errors[0]["ctx"].get("error", "invalid JSON")) from None
        return None, dedupe([field_error(e) for e in errors])


def check_value(adapter: TypeAdapter[Any], value: Any, field: str) -> list[domain.FieldError]:
    """Errors of one value outside a body (a path segment, a query parameter) under ``field``."""
    try:
        adapter.validate_python(value, strict=True)
    except ValidationError as exc:
        return dedupe(
            [
                field_error({**e, "loc": (field, *e["loc"])})
                for e in exc.errors(include_url=False, include_context=True)
            ]
        )
    return []


def field_name(loc: Sequence[int | str]) -> str:
    """``("events", 3, "resource")`` → ``events[3].resource`` (aliases, as the client sent)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


_MESSAGES: dict[str, str | None] = {
    "missing": "is required",
    "extra_forbidden": "unknown field",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "int_type": "must be an integer",
    "list_type": "must be a list",
    "model_type": "must be an object",
    "dict_type": "must be an object",
    "model_attributes_type": "must be an object",
    "datetime_type": "must be an RFC 3339 timestamp such as 2026-01-01T00:00:00Z",
    "datetime_parsing": "must be an RFC 3339 timestamp such as 2026-01-01T00:00:00Z",
    "datetime_from_date_parsing": "must be an RFC 3339 timestamp such as 2026-01-01T00:00:00Z",
    "timezone_aware": "must carry a time zone (Z or +hh:mm)",
    "greater_than_equal": None,
    "less_than_equal": None,
}
_OUT_OF_RANGE = "is out of the supported range (0001-01-02 to 9999-12-30 UTC)"


def field_error(error: Any) -> domain.FieldError:
    loc = tuple(error["loc"])
    kind = error["type"]
    # A union with null reports each branch; the string branch is the one to explain.
    if loc and loc[-1] in ("str", "datetime", "int", "bool", "list[str]"):
        loc = loc[:-1]
    loc = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("function-")))
    field = field_name(loc)
    ctx = error.get("ctx") or {}
    if kind == "string_pattern_mismatch":
        message = _PATTERN_MESSAGES.get(ctx.get("pattern", ""), error["msg"])
    elif kind == "value_error":
        message = str(ctx.get("error", error["msg"]))
    elif kind in ("too_short", "too_long") and field == "events":
        message = error["msg"]
    elif kind in ("greater_than_equal", "less_than_equal") and isinstance(error.get("input"), str):
        message = _OUT_OF_RANGE  # a timestamp outside EARLIEST..LATEST
    elif kind == "model_type" and not field:
        message = "the body must be a JSON object"
    else:
        message = _MESSAGES.get(kind) or error["msg"]
    return domain.FieldError(field=field, message=message)


def dedupe(errors: list[domain.FieldError]) -> list[domain.FieldError]:
    """One message per field (a nullable field's union reports a branch per type)."""
    seen: dict[str, domain.FieldError] = {}
    for error in errors:
        seen.setdefault(error.field, error)
    return list(seen.values())


def adapter(model: Any) -> TypeAdapter[Any]:
    return TypeAdapter(model)


# One adapter per shape, built at import (schema building is the slow part of pydantic).
RESOURCE_EVENT_BATCH: TypeAdapter[ResourceEventBatch] = TypeAdapter(ResourceEventBatch)
EVENT_NAME: TypeAdapter[str] = TypeAdapter(EventName)
