"""What the store hands in and out: request/result records, row mappers and key hashing."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, NamedTuple

import asyncpg

from broker.crypto import KeyRing
from broker.domain.isolation import CLOSED, Breaker
from broker.domain.models import (
    Attempt,
    Event,
    Registration,
    ResourceEvent,
)
from broker.domain.policy import DEFAULT_POLICY, RegistrationPolicy
from broker.domain.states import Status, Trigger
from broker.store.policy_rows import policy_from_row

KEY_PREFIXES = {
    "partner": "bk_partner_",
    "producer": "bk_producer_",
    "admin": "bk_admin_",
    "portal": "bk_portal_",
}


def hash_key(api_key: str) -> bytes:
    # surrogateescape: aiohttp passes undecodable header bytes on as surrogates; hash those raw
    # bytes (they match no key, so 401) instead of failing to encode them (a 500).
    return hashlib.sha256(api_key.encode("utf-8", "surrogateescape")).digest()


def new_api_key(kind: str) -> str:
    return KEY_PREFIXES[kind] + secrets.token_urlsafe(32)


def registration_from_row(row: asyncpg.Record) -> Registration:
    return Registration(
        id=row["id"],
        partner_id=row["partner_id"],
        url=row["url"],
        event_types=list(row["event_types"]),
        description=row["description"],
        status=Status(row["status"]),
        previous_secret_expires_at=row["previous_secret_expires_at"],
        has_basic_auth=row["basic_auth_sealed"] is not None,
        failure_count=row["failure_count"],
        last_success_at=row["last_success_at"],
        last_failure_at=row["last_failure_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        breaker=breaker_from_row(row),
        policy=policy_from_row(row),
    )


def breaker_from_row(row: asyncpg.Record) -> Breaker:
    # Rows without the delivery-state columns (RETURNING *), or a registration that never had
    # work: closed.
    state = row.get("breaker_state")
    if state is None:
        return CLOSED
    return Breaker(
        state=state,
        opened_at=row["breaker_opened_at"],
        next_probe_at=row["breaker_next_probe_at"],
    )


# Associated data labels (broker/crypto.py): both secret columns share one, so a rotation moves
# the current secret to previous_secret_sealed in SQL without opening it.
SECRET = "secret"
BASIC_AUTH = "basic_auth"


def open_target(
    keys: KeyRing,
    *,
    registration_id: uuid.UUID,
    url: str,
    secret_sealed: bytes,
    previous_secret_sealed: bytes | None,
    basic_auth_sealed: bytes | None,
    policy: RegistrationPolicy = DEFAULT_POLICY,
) -> DeliveryTarget:
    """The one place secrets are opened: a delivery target from the sealed values (the previous
    secret only while it is live). Raises UnreadableSecret rather than return a target that
    would sign with nothing."""
    rid = registration_id
    live = [keys.open(secret_sealed, row=rid, column=SECRET)]
    if previous_secret_sealed is not None:
        live.append(keys.open(previous_secret_sealed, row=rid, column=SECRET))
    return DeliveryTarget(
        id=rid,
        url=url,
        secrets=tuple(live),
        basic_auth=keys.open_optional(basic_auth_sealed, row=rid, column=BASIC_AUTH),
        policy=policy,
    )


def event_from_row(row: asyncpg.Record) -> Event:
    return Event(
        id=row["id"],
        partner_id=row["partner_id"],
        registration_id=row["registration_id"],
        event_name=row["event_name"],
        resources=list(row["resources"]),
        status=row["status"],
        created_at=row["created_at"],
        last_attempted_at=row["last_attempted_at"],
    )


def attempt_from_row(row: asyncpg.Record) -> Attempt:
    return Attempt(
        event_id=row["event_id"],
        attempt_number=row["attempt_number"],
        attempted_at=row["attempted_at"],
        duration_ms=row["duration_ms"],
        response_status=row["response_status"],
        error=row["error"],
        response_body=row["response_body"],
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class IngestRequest:
    """One producer request inside a group commit."""

    producer_key_id: uuid.UUID
    idempotency_key: str | None
    items: Sequence[ResourceEvent]


@dataclass(frozen=True, kw_only=True, slots=True)
class IngestAnswer:
    status: int
    body: dict[str, Any]
    replayed: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class ClaimedDelivery:
    id: uuid.UUID
    partner_id: uuid.UUID
    registration_id: uuid.UUID
    event_name: str
    resources: list[str]
    created_at: datetime
    previous_attempted_at: datetime | None
    attempt_count: int
    round_attempts: int
    attempted_at: datetime
    probe: bool  # the single attempt of a Restarting registration
    slow: bool  # claimed into the slow lane (the registration failed recently)
    # Where to send it (cached per registration version, see DeliveryQueries.delivery_targets).
    target: DeliveryTarget
    # The window close that made it (broker/tracing.py); its attempts are that span's children.
    trace_parent: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class DeliveryTarget:
    id: uuid.UUID
    url: str
    secrets: tuple[str, ...]  # the live ones: the current, and the previous during its grace
    basic_auth: str | None
    policy: RegistrationPolicy = DEFAULT_POLICY  # timeout, retries, signature, headers
    # Why the stored secrets would not open (tampered with, or sealed for another row), when
    # they would not: nothing is sent, the attempt is recorded as failed with this reason.
    unreadable: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class DeliveryResult:
    """What one attempt did, and what follows from it (decided by the delivery worker)."""

    event_id: uuid.UUID
    registration_id: uuid.UUID
    attempt_number: int
    attempted_at: datetime
    duration_ms: int
    response_status: int | None
    error: str | None
    response_body: str | None
    success: bool
    new_event_status: str  # Pending | Success | Failed
    next_attempt_at: datetime | None
    round_attempts: int
    registration_trigger: Trigger | None  # EXHAUSTED, GONE, PROBE_OK, PROBE_FAILED or None


class WindowCloseResult(NamedTuple):
    claimed: int  # due groups taken in this pass (the aggregator loops while a batch is full)
    closed: int  # windows that really closed (not merely rescheduled because of duplicates)
    created: int  # event objects created
    read: int = 0  # resource events read to decide and fold the windows (the work done)


@dataclass(frozen=True, kw_only=True, slots=True)
class GaugeSnapshot:
    # Pending event objects, keyed by the status of their registration.
    queue_depth: dict[str, int]
    oldest_pending_age_seconds: dict[str, float]
    # The oldest due, unclaimed event of an Active registration: 0 while workers keep up.
    delivery_lag_seconds: float
    registrations_by_status: dict[str, int]
    # Registrations with delivery state, by breaker state (closed / open / half-open).
    breakers: dict[str, int]
    # Per worker role (delivery, aggregator): how long the oldest due work has waited for a
    # worker. A default, so a snapshot stored before it existed still reads.
    oldest_due_age_seconds: dict[str, float] = field(
        default_factory=lambda: {"delivery": 0.0, "aggregator": 0.0}
    )
    # Seconds since the snapshot was taken (0 for one just computed).
    age_seconds: float = 0.0

    @classmethod
    def zero(cls, *, age_seconds: float = 0.0) -> GaugeSnapshot:
        """Every series at 0: what a count with no rows reads, and what /metrics serves
        before the first refresh (with age -1), instead of whatever the process held."""
        return cls(
            queue_depth={s.value: 0 for s in Status},
            oldest_pending_age_seconds={s.value: 0.0 for s in Status},
            delivery_lag_seconds=0.0,
            registrations_by_status={s.value: 0 for s in Status},
            breakers={"closed": 0, "open": 0, "half-open": 0},
            age_seconds=age_seconds,
        )


@dataclass(frozen=True, slots=True)
class RetentionResult:
    """One retention run: days whose partitions were dropped, days kept because they still
    hold queued (Pending) event objects, days skipped because their tables stayed busy."""

    dropped: list[date]
    kept_queued: list[date]
    busy: list[date]
