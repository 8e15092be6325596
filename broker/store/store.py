"""The store: the one object that talks SQL.

Every query runs here, by name from ``sql/queries``, and comes back as domain objects. The API and
the workers hold a :class:`Store` and never touch the pool. Methods are grouped by the part of the
flow they serve: keys and catalog, registrations, ingest, windows, delivery, event history,
housekeeping.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import asyncpg

from broker.domain.ids import uuid7
from broker.domain.models import (
    Attempt,
    Event,
    EventType,
    IssuedKey,
    Partner,
    Principal,
    Registration,
    ResourceEvent,
)
from broker.domain.states import Status, TransitionRefused, Trigger, next_status, sources
from broker.store.keylookup import KeyLookups
from broker.store.queries import Q

KEY_PREFIXES = {"partner": "bk_partner_", "producer": "bk_producer_"}
# Advisory lock taken by every delivery claim ("brkc"); see Store.claim_deliveries.
CLAIM_LOCK_ID = 0x62726B63


def hash_key(api_key: str) -> bytes:
    # surrogateescape: aiohttp passes undecodable header bytes on as surrogates; hash those raw
    # bytes (they match no key, so 401) instead of failing to encode them (a 500).
    return hashlib.sha256(api_key.encode("utf-8", "surrogateescape")).digest()


def _new_api_key(kind: str) -> str:
    return KEY_PREFIXES[kind] + secrets.token_urlsafe(32)


def _registration(row: asyncpg.Record) -> Registration:
    return Registration(
        id=row["id"],
        partner_id=row["partner_id"],
        url=row["url"],
        event_types=list(row["event_types"]),
        description=row["description"],
        status=Status(row["status"]),
        secret=row["secret"],
        previous_secret=row["previous_secret"],
        previous_secret_expires_at=row["previous_secret_expires_at"],
        basic_auth=row["basic_auth"],
        failure_count=row["failure_count"],
        last_success_at=row["last_success_at"],
        last_failure_at=row["last_failure_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _event(row: asyncpg.Record) -> Event:
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


def _attempt(row: asyncpg.Record) -> Attempt:
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
class WindowRules:
    min_seconds: float
    max_seconds: float
    max_resources: int


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
    # Where to send it, read in the same statement as the claim (None: look it up).
    target: DeliveryTarget | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class DeliveryTarget:
    id: uuid.UUID
    url: str
    status: Status
    secrets: tuple[str, ...]
    basic_auth: str | None


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


@dataclass(frozen=True, kw_only=True, slots=True)
class GaugeSnapshot:
    # Pending event objects, keyed by the status of their registration.
    queue_depth: dict[str, int]
    oldest_pending_age_seconds: dict[str, float]
    # The oldest due, unclaimed event of an Active registration: 0 while workers keep up.
    delivery_lag_seconds: float
    registrations_by_status: dict[str, int]


class Store:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        # Partners and event types are never deleted, so a positive answer can be cached for the
        # life of the process: ingest validation then costs no query in the steady state.
        self._known_partners: set[uuid.UUID] = set()
        self._known_event_types: set[str] = set()
        self._key_lookups = KeyLookups(pool)

    async def close(self) -> None:
        await self.pool.close()

    # ---------------------------------------------------------------- service

    async def ping(self) -> bool:
        from broker.store.db import is_migrated

        async with self.pool.acquire() as conn:
            return await is_migrated(conn)

    # ---------------------------------------------------------------- keys and catalog

    async def principal_for_key(self, api_key: str) -> Principal | None:
        # Concurrent requests share one query (broker/store/keylookup.py); nothing is cached.
        return await self._key_lookups.lookup(hash_key(api_key))

    async def create_partner(self, name: str) -> tuple[Partner, IssuedKey]:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(Q.insert_partner, uuid7(), name)
            partner = Partner(id=row["id"], name=row["name"], created_at=row["created_at"])
            key = await self._issue_key(conn, "partner", partner_id=partner.id, name=None)
        self._known_partners.add(partner.id)
        return partner, key

    async def list_partners(self) -> list[Partner]:
        rows = await self.pool.fetch(Q.list_partners)
        return [Partner(id=r["id"], name=r["name"], created_at=r["created_at"]) for r in rows]

    async def create_partner_key(self, partner_id: uuid.UUID) -> IssuedKey | None:
        async with self.pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval(Q.partner_exists, partner_id):
                return None
            return await self._issue_key(conn, "partner", partner_id=partner_id, name=None)

    async def create_producer_key(self, name: str) -> IssuedKey:
        async with self.pool.acquire() as conn:
            return await self._issue_key(conn, "producer", partner_id=None, name=name)

    async def _issue_key(
        self, conn: asyncpg.Connection, kind: str, *, partner_id: uuid.UUID | None, name: str | None
    ) -> IssuedKey:
        api_key = _new_api_key(kind)
        row = await conn.fetchrow(
            Q.insert_api_key,
            uuid7(),
            kind,
            partner_id,
            name,
            hash_key(api_key),
            api_key[: len(KEY_PREFIXES[kind]) + 4],
        )
        return IssuedKey(
            id=row["id"],
            api_key=api_key,
            created_at=row["created_at"],
            name=name,
            partner_id=partner_id,
        )

    async def revoke_key(self, key_id: uuid.UUID) -> bool:
        """True when the key exists (revoking twice is still a success: DELETE is idempotent)."""
        if await self.pool.fetchval(Q.revoke_api_key, key_id) is not None:
            return True
        return bool(await self.pool.fetchval(Q.api_key_exists, key_id))

    async def put_event_type(self, name: str, description: str) -> tuple[EventType, bool]:
        row = await self.pool.fetchrow(Q.upsert_event_type, name, description)
        self._known_event_types.add(name)
        return (
            EventType(
                name=row["name"],
                description=row["description"],
                created_at=row["created_at"],
                updated_at=row["updated_at"],
            ),
            bool(row["inserted"]),
        )

    async def list_event_types(self) -> list[EventType]:
        rows = await self.pool.fetch(Q.list_event_types)
        return [
            EventType(
                name=r["name"],
                description=r["description"],
                created_at=r["created_at"],
                updated_at=r["updated_at"],
            )
            for r in rows
        ]

    async def unknown_event_types(self, names: Iterable[str]) -> set[str]:
        wanted = set(names) - self._known_event_types
        if wanted:
            rows = await self.pool.fetch(Q.existing_event_type_names, list(wanted))
            found = {r["name"] for r in rows}
            self._known_event_types |= found
            wanted -= found
        return wanted

    async def unknown_partners(self, ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
        wanted = set(ids) - self._known_partners
        if wanted:
            rows = await self.pool.fetch(Q.existing_partner_ids, list(wanted))
            found = {r["id"] for r in rows}
            self._known_partners |= found
            wanted -= found
        return wanted

    # ---------------------------------------------------------------- registrations

    async def create_registration(
        self,
        *,
        partner_id: uuid.UUID,
        url: str,
        event_types: list[str],
        description: str,
        secret: str,
        basic_auth: str | None,
    ) -> Registration:
        row = await self.pool.fetchrow(
            Q.insert_registration,
            uuid7(),
            partner_id,
            url,
            event_types,
            description,
            secret,
            basic_auth,
        )
        return _registration(row)

    async def list_registrations(self, partner_id: uuid.UUID) -> list[Registration]:
        return [_registration(r) for r in await self.pool.fetch(Q.list_registrations, partner_id)]

    async def get_registration(
        self, registration_id: uuid.UUID, partner_id: uuid.UUID
    ) -> Registration | None:
        row = await self.pool.fetchrow(Q.get_registration, registration_id, partner_id)
        return None if row is None else _registration(row)

    async def _current_status(
        self, conn: asyncpg.Connection, registration_id: uuid.UUID, partner_id: uuid.UUID
    ) -> Status | None:
        row = await conn.fetchrow(Q.get_registration_any_status, registration_id, partner_id)
        return None if row is None else Status(row["status"])

    async def registration_status(
        self, registration_id: uuid.UUID, partner_id: uuid.UUID
    ) -> Status | None:
        """The status, Deleted included (None when unknown to this partner): lets the API tell
        "gone" (409 for a change) from "never existed" (404)."""
        async with self.pool.acquire() as conn:
            return await self._current_status(conn, registration_id, partner_id)

    async def update_registration(
        self,
        registration_id: uuid.UUID,
        partner_id: uuid.UUID,
        *,
        url: str | None,
        event_types: list[str] | None,
        description: str | None,
        set_basic_auth: bool,
        basic_auth: str | None,
    ) -> Registration | None:
        """None when unknown; TransitionRefused when Deleted."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                Q.update_registration,
                registration_id,
                partner_id,
                url,
                event_types,
                description,
                set_basic_auth,
                basic_auth,
            )
            if row is not None:
                return _registration(row)
            current = await self._current_status(conn, registration_id, partner_id)
        if current is None:
            return None
        raise TransitionRefused(current, Trigger.UPDATE)

    async def transition(
        self,
        registration_id: uuid.UUID,
        partner_id: uuid.UUID,
        trigger: Trigger,
        *,
        resend_failed: bool = False,
    ) -> Registration | None:
        """Apply a partner trigger (restart, pause, unpause, delete) through the state machine.

        None when the registration is unknown to this partner, and for a second delete (a
        Deleted registration is gone for the partner); TransitionRefused when the table does not
        allow it (so restart/pause/unpause of a Deleted one is refused, naming its status).
        """
        async with self.pool.acquire() as conn:
            for _ in range(5):  # re-read when a concurrent change moved the status under us
                current = await self._current_status(conn, registration_id, partner_id)
                if current is None or (current is Status.DELETED and trigger is Trigger.DELETE):
                    return None
                new = next_status(current, trigger)  # raises TransitionRefused
                async with conn.transaction():
                    row = await conn.fetchrow(
                        Q.transition_registration,
                        registration_id,
                        partner_id,
                        [current.value],
                        new.value,
                    )
                    if row is None:
                        continue
                    if new is Status.DELETED:
                        await conn.execute(Q.discard_queued_events, registration_id)
                    if trigger is Trigger.RESTART:
                        if resend_failed:
                            await conn.execute(Q.requeue_failed_events, registration_id)
                        await conn.execute(Q.reorder_queue_for_restart, registration_id)
                    if new in (Status.ACTIVE, Status.RESTARTING):
                        await conn.execute(Q.notify_events)
                    return _registration(row)
        raise TransitionRefused(current or Status.DELETED, trigger)

    async def rotate_secret(
        self, registration_id: uuid.UUID, partner_id: uuid.UUID, secret: str, grace_seconds: int
    ) -> Registration | None:
        """None when unknown; TransitionRefused when Deleted (a rotation is an update)."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                Q.rotate_secret, registration_id, partner_id, secret, float(grace_seconds)
            )
            if row is not None:
                return _registration(row)
            current = await self._current_status(conn, registration_id, partner_id)
        if current is None:
            return None
        raise TransitionRefused(current, Trigger.UPDATE)

    # ---------------------------------------------------------------- ingest

    async def ingest(
        self, requests: Sequence[IngestRequest], rules: WindowRules
    ) -> list[IngestAnswer]:
        """Store several producers' requests in one transaction (group commit).

        Each answer is durable when this returns. A request whose Idempotency-Key was seen in
        the last 24 h stores nothing and gets the first answer back.
        """
        answers: list[IngestAnswer | None] = [None] * len(requests)
        fresh: list[int] = []
        first_with_key: dict[tuple[uuid.UUID, str], int] = {}
        # Claim keys in one global order: another process's group commit may hold the same keys,
        # and claiming them in arrival order would let two batches deadlock on each other.
        claim_order = sorted(
            range(len(requests)),
            key=lambda i: (
                requests[i].idempotency_key is not None,
                str(requests[i].producer_key_id),
                requests[i].idempotency_key or "",
            ),
        )
        async with self.pool.acquire() as conn, conn.transaction():
            for i in claim_order:
                request = requests[i]
                answer = IngestAnswer(status=202, body={"accepted": len(request.items)})
                if request.idempotency_key is None:
                    fresh.append(i)
                    answers[i] = answer
                    continue
                ident = (request.producer_key_id, request.idempotency_key)
                if ident in first_with_key:  # same key twice in one group commit
                    answers[i] = None
                    continue
                await conn.execute(Q.reclaim_expired_idempotency_key, *ident)
                claimed = await conn.fetchval(
                    Q.claim_idempotency_key, *ident, answer.status, answer.body
                )
                if claimed:
                    first_with_key[ident] = i
                    fresh.append(i)
                    answers[i] = answer
                else:
                    row = await conn.fetchrow(Q.get_idempotent_answer, *ident)
                    answers[i] = IngestAnswer(
                        status=row["response_status"], body=row["response_body"], replayed=True
                    )
            records: list[tuple[Any, ...]] = []
            groups: dict[tuple[uuid.UUID, str], int] = {}
            for i in sorted(fresh):  # arrival order: resources keep their first-seen order
                for item in requests[i].items:
                    records.append(
                        (item.partner_id, item.event_name, item.resource, item.occurred_at)
                    )
                    group = (item.partner_id, item.event_name)
                    groups[group] = groups.get(group, 0) + 1
            if records:
                await conn.copy_records_to_table(
                    "resource_events",
                    records=records,
                    columns=("partner_id", "event_name", "resource", "occurred_at"),
                )
                ordered = sorted(groups.items(), key=lambda kv: (str(kv[0][0]), kv[0][1]))
                await conn.execute(
                    Q.upsert_window_groups,
                    [g[0][0] for g in ordered],
                    [g[0][1] for g in ordered],
                    [g[1] for g in ordered],
                    rules.min_seconds,
                    rules.max_seconds,
                    rules.max_resources,
                )
        for i, request in enumerate(requests):
            if answers[i] is None:
                assert request.idempotency_key is not None
                first = first_with_key[(request.producer_key_id, request.idempotency_key)]
                first_answer = answers[first]
                assert first_answer is not None
                answers[i] = IngestAnswer(
                    status=first_answer.status, body=first_answer.body, replayed=True
                )
        return [a for a in answers if a is not None]

    # ---------------------------------------------------------------- windows

    async def close_due_windows(self, rules: WindowRules, *, limit: int = 50) -> WindowCloseResult:
        """Close due windows (up to ``limit`` groups claimed)."""
        created = 0
        closed = 0
        async with self.pool.acquire() as conn, conn.transaction():
            groups = await conn.fetch(Q.claim_due_windows, limit)
            for group in groups:
                made = await self._close_window(conn, group, rules)
                if made is not None:
                    closed += 1
                    created += made
            if created:
                await conn.execute(Q.notify_events)
        return WindowCloseResult(claimed=len(groups), closed=closed, created=created)

    async def _close_window(
        self, conn: asyncpg.Connection, group: asyncpg.Record, rules: WindowRules
    ) -> int | None:
        """Event objects created, or None when the window did not close (empty, or kept open)."""
        partner_id, event_name = group["partner_id"], group["event_name"]
        seen: dict[str, None] = {}  # insertion-ordered set: first-seen order
        cutoff = 0
        after = 0
        capped = False
        chunk = 20000
        while not capped:
            rows = await conn.fetch(Q.window_resource_events, partner_id, event_name, after, chunk)
            for row in rows:
                resource = row["resource"]
                if resource not in seen:
                    if len(seen) == rules.max_resources:
                        capped = True
                        break
                    seen[resource] = None
                cutoff = row["id"]
            if len(rows) < chunk:
                break
            after = rows[-1]["id"]
        if not seen:
            await conn.execute(Q.delete_window_group, partner_id, event_name)
            return None
        now = group["db_now"]
        quiet = (now - group["last_event_at"]).total_seconds() >= rules.min_seconds
        old = (now - group["opened_at"]).total_seconds() >= rules.max_seconds
        full = len(seen) >= rules.max_resources
        if not (quiet or old or full):
            await conn.execute(
                Q.reschedule_window_group,
                partner_id,
                event_name,
                len(seen),
                rules.min_seconds,
                rules.max_seconds,
            )
            return None
        await conn.execute(Q.consume_resource_events, partner_id, event_name, cutoff)
        remaining = await conn.fetchval(Q.count_remaining_resource_events, partner_id, event_name)
        if remaining:
            await conn.execute(
                Q.reopen_window_group,
                partner_id,
                event_name,
                remaining,
                rules.min_seconds,
                rules.max_seconds,
                rules.max_resources,
            )
        else:
            await conn.execute(Q.delete_window_group, partner_id, event_name)
        registrations = [
            r["id"] for r in await conn.fetch(Q.matching_registrations, partner_id, event_name)
        ]
        if registrations:
            await conn.execute(
                Q.insert_events,
                [uuid7() for _ in registrations],
                partner_id,
                event_name,
                list(seen),
                registrations,
            )
        return len(registrations)

    async def seconds_until_next_window(self) -> float | None:
        value = await self.pool.fetchval(Q.next_window_due_in)
        return None if value is None else float(value)

    # ---------------------------------------------------------------- delivery

    async def claim_deliveries(
        self,
        *,
        limit: int,
        per_registration: int,
        lease_seconds: float,
        worker_id: str,
        probes: bool = True,
    ) -> list[ClaimedDelivery]:
        """Claim due events: the single probe of each Restarting registration (skipped when
        ``probes`` is False: one statement less), then Active registrations' events."""
        claimed: list[ClaimedDelivery] = []
        targets: dict[uuid.UUID, DeliveryTarget] = {}
        async with self.pool.acquire() as conn:
            # Claims take turns across all worker processes. Each claim counts the leases already
            # held (the per-registration cap, one probe per Restarting registration), and one
            # statement's snapshot cannot see a claim another worker commits while it runs: three
            # workers claiming at once could put 3x the cap in flight. Under this lock every
            # claim starts after the previous one committed, so the counts are exact. It costs
            # two round trips per claimed batch, not per event.
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", CLAIM_LOCK_ID)
                if probes:
                    probe_rows = await conn.fetch(
                        Q.claim_restarting_deliveries, limit, lease_seconds, worker_id
                    )
                    claimed.extend(_claimed(r, probe=True, targets=targets) for r in probe_rows)
                room = limit - len(claimed)
                if room > 0:
                    rows = await conn.fetch(
                        Q.claim_active_deliveries, room, per_registration, lease_seconds, worker_id
                    )
                    claimed.extend(_claimed(r, probe=False, targets=targets) for r in rows)
            await self._record_lost_attempts(conn, claimed)
        return claimed

    async def _record_lost_attempts(
        self, conn: asyncpg.Connection, claimed: Sequence[ClaimedDelivery]
    ) -> None:
        # Only an event attempted before can have lost an attempt (a first claim never has).
        again = [c for c in claimed if c.attempt_count > 1 and c.previous_attempted_at]
        if again:
            await conn.execute(
                Q.record_lost_attempts,
                [c.id for c in again],
                [c.attempt_count - 1 for c in again],
                [c.previous_attempted_at for c in again],
            )

    async def delivery_targets(
        self, registration_ids: Iterable[uuid.UUID]
    ) -> dict[uuid.UUID, DeliveryTarget]:
        rows = await self.pool.fetch(Q.delivery_targets, list(set(registration_ids)))
        targets: dict[uuid.UUID, DeliveryTarget] = {}
        for r in rows:
            live = (r["secret"],) + ((r["previous_secret"],) if r["previous_secret"] else ())
            targets[r["id"]] = DeliveryTarget(
                id=r["id"],
                url=r["url"],
                status=Status(r["status"]),
                secrets=live,
                basic_auth=r["basic_auth"],
            )
        return targets

    async def record_results(
        self, results: Sequence[DeliveryResult]
    ) -> list[tuple[uuid.UUID, Status]]:
        """Write a batch of attempt outcomes in one transaction.

        Returns the registrations whose status the batch really changed, with their new status
        (a trigger whose guard no longer held, e.g. the partner paused meanwhile, is not listed).
        """
        if not results:
            return []
        async with self.pool.acquire() as conn, conn.transaction():
            # Every attempt is kept, even one whose result arrives too late to count.
            await conn.execute(
                Q.insert_attempts,
                [r.event_id for r in results],
                [r.attempt_number for r in results],
                [r.attempted_at for r in results],
                [r.duration_ms for r in results],
                [r.response_status for r in results],
                [r.error for r in results],
                [r.response_body for r in results],
            )
            finished = await conn.fetch(
                Q.finish_events,
                [r.event_id for r in results],
                [r.attempt_number for r in results],
                [r.new_event_status for r in results],
                [r.next_attempt_at for r in results],
                [r.round_attempts for r in results],
            )
            # A stale result (its lease expired and the event was claimed again, maybe already
            # delivered) or one written twice must not count a failure again or suspend.
            applied = {row["id"] for row in finished}
            (
                reg_ids,
                failures_after,
                had_success,
                last_success,
                last_failure,
                transitions,
            ) = _registration_outcomes([r for r in results if r.event_id in applied])
            if not reg_ids:
                return []
            await conn.execute(
                Q.record_registration_outcomes,
                reg_ids,
                failures_after,
                had_success,
                last_success,
                last_failure,
            )
            moved: list[asyncpg.Record] = []
            if transitions:
                moved = await conn.fetch(
                    Q.transition_registrations,
                    [t[0] for t in transitions],
                    [t[1] for t in transitions],
                    [t[2] for t in transitions],
                )
                if any(r["status"] == Status.ACTIVE.value for r in moved):
                    await conn.execute(Q.notify_events)
        return [(r["id"], Status(r["status"])) for r in moved]

    async def release_leases(self, event_ids: Sequence[uuid.UUID], worker_id: str) -> None:
        if event_ids:
            await self.pool.execute(Q.release_leases, list(event_ids), worker_id)

    # ---------------------------------------------------------------- event history

    async def list_events(
        self,
        partner_id: uuid.UUID,
        *,
        registration_id: uuid.UUID | None,
        event_name: str | None,
        status: str | None,
        created_after: datetime | None,
        created_before: datetime | None,
        after: tuple[datetime, uuid.UUID] | None,
        limit: int,
    ) -> list[Event]:
        rows = await self.pool.fetch(
            Q.list_events,
            partner_id,
            registration_id,
            event_name,
            status,
            created_after,
            after[0] if after else None,
            after[1] if after else None,
            created_before,
            limit,
        )
        return [_event(r) for r in rows]

    async def get_event(self, event_id: uuid.UUID, partner_id: uuid.UUID) -> Event | None:
        row = await self.pool.fetchrow(Q.get_event, event_id, partner_id)
        return None if row is None else _event(row)

    async def list_attempts(self, event_id: uuid.UUID) -> list[Attempt]:
        return [_attempt(r) for r in await self.pool.fetch(Q.list_attempts, event_id)]

    async def resend_event(self, event_id: uuid.UUID, partner_id: uuid.UUID) -> Event | None:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(Q.resend_event, event_id, partner_id)
            if row is not None:
                await conn.execute(Q.notify_events)
        return None if row is None else _event(row)

    async def record_test_delivery(
        self,
        *,
        event_id: uuid.UUID,
        partner_id: uuid.UUID,
        registration_id: uuid.UUID,
        success: bool,
        attempt: Attempt,
    ) -> Event:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                Q.insert_test_event,
                event_id,
                partner_id,
                registration_id,
                "Success" if success else "Failed",
                attempt.attempted_at,
            )
            await conn.execute(
                Q.insert_attempts,
                [event_id],
                [attempt.attempt_number],
                [attempt.attempted_at],
                [attempt.duration_ms],
                [attempt.response_status],
                [attempt.error],
                [attempt.response_body],
            )
        return _event(row)

    # ---------------------------------------------------------------- housekeeping

    async def gauge_snapshot(self) -> GaugeSnapshot:
        async with self.pool.acquire() as conn:
            queue = await conn.fetch(Q.gauge_queue)
            regs = await conn.fetch(Q.gauge_registrations)
        by_status = {s.value: 0 for s in Status}
        by_status.update({r["status"]: r["n"] for r in regs})
        depth = {s.value: 0 for s in Status}
        depth.update({r["registration_status"]: r["depth"] for r in queue})
        oldest = {s.value: 0.0 for s in Status}
        oldest.update({r["registration_status"]: r["oldest_age"] for r in queue})
        lag = next((r["due_lag"] for r in queue if r["registration_status"] == Status.ACTIVE), 0.0)
        return GaugeSnapshot(
            queue_depth=depth,
            oldest_pending_age_seconds=oldest,
            delivery_lag_seconds=lag,
            registrations_by_status=by_status,
        )

    async def purge_finished_events(self, retention_days: int, *, batch: int = 10000) -> int:
        total = 0
        while True:
            status = await self.pool.execute(Q.purge_finished_events, retention_days, batch)
            deleted = int(status.split()[-1])
            total += deleted
            if deleted < batch:
                return total

    async def drop_expired_secrets(self) -> int:
        return int((await self.pool.execute(Q.drop_expired_previous_secrets)).split()[-1])

    async def discard_orphaned_events(self) -> int:
        """Pending events of Deleted registrations that were in flight at delete time."""
        return int((await self.pool.execute(Q.discard_orphaned_events)).split()[-1])

    async def release_stale_leases(self) -> int:
        return int((await self.pool.execute(Q.release_stale_leases)).split()[-1])

    async def purge_idempotency_keys(self) -> int:
        return int((await self.pool.execute(Q.purge_idempotency_keys)).split()[-1])


def _claimed(
    row: asyncpg.Record, *, probe: bool, targets: dict[uuid.UUID, DeliveryTarget] | None = None
) -> ClaimedDelivery:
    target = None
    if targets is not None and row.get("url") is not None:
        # One DeliveryTarget per registration and claim batch, shared by its events.
        target = targets.get(row["registration_id"])
        if target is None:
            live = (row["secret"],) + ((row["previous_secret"],) if row["previous_secret"] else ())
            target = targets[row["registration_id"]] = DeliveryTarget(
                id=row["registration_id"],
                url=row["url"],
                status=Status(row["registration_status"]),
                secrets=live,
                basic_auth=row["basic_auth"],
            )
    return ClaimedDelivery(
        id=row["id"],
        partner_id=row["partner_id"],
        registration_id=row["registration_id"],
        event_name=row["event_name"],
        resources=list(row["resources"]),
        created_at=row["created_at"],
        previous_attempted_at=row["previous_attempted_at"],
        attempt_count=row["attempt_count"],
        round_attempts=row["round_attempts"],
        attempted_at=row["attempted_at"],
        probe=probe,
        target=target,
    )


def _registration_outcomes(
    results: Sequence[DeliveryResult],
) -> tuple[
    list[uuid.UUID],
    list[int],
    list[bool],
    list[datetime | None],
    list[datetime | None],
    list[tuple[uuid.UUID, str, str]],
]:
    """Per registration: failures since its last success in the batch, whether it had one, the
    latest success and failure times, and the guarded status transitions the batch fires."""
    per_registration: dict[uuid.UUID, list[DeliveryResult]] = {}
    for result in results:
        per_registration.setdefault(result.registration_id, []).append(result)
    reg_ids: list[uuid.UUID] = []
    failures_after: list[int] = []
    had_success: list[bool] = []
    last_success: list[datetime | None] = []
    last_failure: list[datetime | None] = []
    transitions: list[tuple[uuid.UUID, str, str]] = []
    for reg_id, items in per_registration.items():
        items.sort(key=lambda r: r.attempted_at)
        successes = [r for r in items if r.success]
        failures = [r for r in items if not r.success]
        after = items
        if successes:
            last_ok = successes[-1].attempted_at
            after = [r for r in items if r.attempted_at > last_ok]
        reg_ids.append(reg_id)
        failures_after.append(sum(1 for r in after if not r.success))
        had_success.append(bool(successes))
        last_success.append(successes[-1].attempted_at if successes else None)
        last_failure.append(failures[-1].attempted_at if failures else None)
        for trigger in _registration_triggers(items):
            for old in sources(trigger):
                transitions.append((reg_id, old.value, next_status(old, trigger).value))
    return reg_ids, failures_after, had_success, last_success, last_failure, transitions


def _registration_triggers(items: Sequence[DeliveryResult]) -> list[Trigger]:
    """The state-machine triggers a batch of one registration's results fires, in order.

    Each is applied as a guarded update from every status that allows it, so a trigger that
    no longer applies (the partner paused meanwhile) changes nothing.
    """
    seen: list[Trigger] = []
    for result in items:
        trigger = result.registration_trigger
        if trigger is not None and trigger not in seen:
            seen.append(trigger)
    return seen
