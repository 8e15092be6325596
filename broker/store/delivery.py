"""The delivery queue: enqueueing event objects, claims (SKIP LOCKED + lease), batched results.

The claim visits only registrations with due work (``delivery_ready``), one statement, no
cluster-wide lock; recording a batch locks its registrations in id order and applies each one's
results in attempt order. See sql/queries/delivery.sql and docs/architecture.md.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from broker.crypto import KeyRing, UnreadableSecret
from broker.domain.isolation import Breaker, IsolationState, Outcome, after_results
from broker.domain.policy import RegistrationPolicy
from broker.domain.states import TRANSITIONS, Status, Trigger
from broker.store.base import StoreBase
from broker.store.policy_rows import policy_from_row
from broker.store.queries import Q
from broker.store.records import ClaimedDelivery, DeliveryResult, DeliveryTarget, open_target
from broker.store.stats import AttemptToRoll, add_rollups

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _TargetRow:
    """A registration's delivery target as stored: secrets still sealed. The cache keeps these,
    never plaintext; opening one costs microseconds per registration and claim (bench/README)."""

    version: datetime  # the registration's updated_at: any change to it makes a new version
    url: str
    secret_sealed: bytes
    previous_secret_sealed: bytes | None
    previous_secret_expires_at: datetime | None
    basic_auth_sealed: bytes | None
    policy: RegistrationPolicy


async def insert_event_objects(
    conn: asyncpg.Connection,
    *,
    partner_id: uuid.UUID,
    event_name: str,
    resources: Sequence[str],
    registration_ids: Sequence[uuid.UUID],
    event_ids: Sequence[uuid.UUID],
    trace_parent: str | None = None,
) -> None:
    """A closed window's event objects: their history rows, queue rows and the registrations'
    ready rows, in the caller's transaction (the window close). The one way event objects for
    delivery are made."""
    await conn.execute(
        Q.insert_events,
        list(event_ids),
        partner_id,
        event_name,
        list(resources),
        list(registration_ids),
        trace_parent,
    )


class DeliveryQueries(StoreBase):
    _delivery_target_cache: dict[uuid.UUID, _TargetRow]

    def __init__(self, pool: asyncpg.Pool, *, keys: KeyRing | None = None) -> None:
        super().__init__(pool, keys=keys)
        self._delivery_target_cache = {}

    async def claim_deliveries(
        self,
        *,
        limit: int,
        per_registration: int,
        lease_seconds: float,
        worker_id: str,
        slow_slots: int | None = None,
        timeout_seconds: float | None = None,
    ) -> list[ClaimedDelivery]:
        """Claim due work: at most ``limit`` attempts, of which at most ``slow_slots`` (default
        ``limit``) for registrations in the slow lane."""
        slow = limit if slow_slots is None else min(slow_slots, limit)
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                Q.claim_deliveries,
                max(limit, 1),
                per_registration,
                lease_seconds,
                worker_id,
                slow,
                # the timeout lease_seconds was sized for: a registration with a longer one of
                # its own gets a longer lease (None: every lease is lease_seconds)
                1e9 if timeout_seconds is None else timeout_seconds,
            )
            if not rows:
                return []
            targets = await self._delivery_targets(
                conn, {r["registration_id"]: r["target_version"] for r in rows}
            )
            claimed = [_claimed(r, targets[r["registration_id"]]) for r in rows]
            await self._record_lost_attempts(conn, claimed)
        return claimed

    async def next_delivery_due_in(self) -> float | None:
        """Seconds until the next ready row falls due, None when none will."""
        due: float | None = await self.pool.fetchval(Q.next_delivery_due_in)
        return due

    async def _delivery_targets(
        self, conn: asyncpg.Connection, versions: dict[uuid.UUID, datetime]
    ) -> dict[uuid.UUID, DeliveryTarget]:
        """Each registration's delivery target, from a per-process cache keyed by the
        registration's version; only changed or unknown registrations are read (one query).
        This is the one place the delivery path reads secrets."""
        cache = self._delivery_target_cache
        stale = [
            rid
            for rid, version in versions.items()
            if (hit := cache.get(rid)) is None or hit.version != version
        ]
        if stale:
            if len(cache) + len(stale) > TARGET_CACHE_SIZE:  # bounded: keep what is needed now
                for rid in [r for r in cache if r not in versions]:
                    del cache[rid]
            for row in await conn.fetch(Q.delivery_targets, stale):
                cache[row["id"]] = _TargetRow(
                    version=row["updated_at"],
                    url=row["url"],
                    secret_sealed=row["secret_sealed"],
                    previous_secret_sealed=row["previous_secret_sealed"],
                    previous_secret_expires_at=row["previous_secret_expires_at"],
                    basic_auth_sealed=row["basic_auth_sealed"],
                    policy=policy_from_row(row),
                )
        now = datetime.now(UTC)
        targets: dict[uuid.UUID, DeliveryTarget] = {}
        for rid in versions:
            row = cache[rid]
            previous_live = (
                row.previous_secret_expires_at is not None and row.previous_secret_expires_at > now
            )
            try:
                targets[rid] = open_target(
                    self.keys,
                    registration_id=rid,
                    url=row.url,
                    secret_sealed=row.secret_sealed,
                    previous_secret_sealed=row.previous_secret_sealed if previous_live else None,
                    basic_auth_sealed=row.basic_auth_sealed,
                    policy=row.policy,
                )
            except UnreadableSecret as exc:
                # This registration's deliveries fail (nothing is sent unsigned), the others'
                # go on: failing the whole claim would stop every partner behind this one row.
                # The start-up check proved the key ring opens each key id in use, so this is
                # one row altered in the database; rotating the secret replaces it.
                log.error("%s; its deliveries fail until its secret is rotated", exc)
                targets[rid] = DeliveryTarget(
                    id=rid,
                    url=row.url,
                    secrets=(),
                    basic_auth=None,
                    policy=row.policy,
                    unreadable=str(exc),
                )
        return targets

    async def delivery_target(self, registration_id: uuid.UUID) -> DeliveryTarget | None:
        """Where a delivery to this registration goes, secrets opened (the test delivery)."""
        row = await self.pool.fetchrow(Q.get_delivery_target, registration_id)
        if row is None:
            return None
        return open_target(
            self.keys,
            registration_id=registration_id,
            url=row["url"],
            secret_sealed=row["secret_sealed"],
            previous_secret_sealed=row["previous_secret_sealed"],
            basic_auth_sealed=row["basic_auth_sealed"],
        )

    async def _record_lost_attempts(
        self, conn: asyncpg.Connection, claimed: Sequence[ClaimedDelivery]
    ) -> None:
        # Only a row attempted before can have lost an attempt (a first claim never has).
        again = [c for c in claimed if c.attempt_count > 1 and c.previous_attempted_at]
        if again:
            await conn.execute(
                Q.record_lost_attempts,
                [c.id for c in again],
                [c.attempt_count - 1 for c in again],
                [c.previous_attempted_at for c in again],
            )

    async def record_results(
        self, results: Sequence[DeliveryResult], *, per_registration: int = 16
    ) -> list[tuple[uuid.UUID, Status]]:
        """Write a batch of attempt outcomes: one statement for the registrations with only
        plain successes in it, one transaction for the others.

        Returns the registrations whose status the batch really changed, with their new status.
        Each registration's triggers are applied in attempt order from the status it has under
        the lock (so a probe success followed by a 410 ends Suspended, and a trigger whose guard
        no longer holds, e.g. the partner paused meanwhile, does nothing).
        """
        if not results:
            return []
        # A registration whose results in this batch are all plain successes needs no decision
        # made under its lock: those are recorded in one statement (record_successes), the
        # rest as below. Each registration's results stay together, so each is still applied
        # in attempt order, under its own lock.
        failing = {r.registration_id for r in results if not _plain_success(r)}
        plain = [r for r in results if r.registration_id not in failing]
        if plain:
            await self._record_successes(plain, per_registration)
        if not failing:
            return []
        return await self._record_in_transaction(
            [r for r in results if r.registration_id in failing], per_registration
        )

    async def _record_successes(self, results: Sequence[DeliveryResult], cap: int) -> None:
        await self.pool.execute(
            Q.record_successes,
            sorted({r.registration_id for r in results}),
            [r.registration_id for r in results],
            [r.event_id for r in results],
            [r.attempt_number for r in results],
            [r.round_attempts for r in results],
            [r.attempted_at for r in results],
            [r.duration_ms for r in results],
            [r.response_status for r in results],
            [r.error for r in results],
            [r.response_body for r in results],
            cap,
        )

    async def _record_in_transaction(
        self, results: Sequence[DeliveryResult], per_registration: int
    ) -> list[tuple[uuid.UUID, Status]]:
        """Results that may fail, suspend or probe: decided in Python under the locks."""
        reg_ids = sorted({r.registration_id for r in results})
        async with self.pool.acquire() as conn, conn.transaction():
            locked = {r["id"]: r for r in await conn.fetch(Q.lock_for_results, reg_ids)}
            # Every real attempt counts in the stats, stale ones too (they reached the
            # receiver); before finish_attempts, which is what tells a duplicate (store/stats).
            await add_rollups(conn, [_to_roll(r) for r in results])
            finished = await conn.fetch(
                Q.finish_attempts,
                [r.event_id for r in results],
                [r.attempt_number for r in results],
                [r.new_event_status for r in results],
                [r.next_attempt_at for r in results],
                [r.round_attempts for r in results],
                [r.attempted_at for r in results],
                [r.duration_ms for r in results],
                [r.response_status for r in results],
                [r.error for r in results],
                [r.response_body for r in results],
            )
            # A stale result (its lease expired and the event was claimed again, maybe already
            # delivered) or one written twice must not count a failure again or suspend.
            applied_ids = {row["id"] for row in finished}
            per_reg: dict[uuid.UUID, list[DeliveryResult]] = {}
            for result in results:
                if result.event_id in applied_ids and result.registration_id in locked:
                    per_reg.setdefault(result.registration_id, []).append(result)
            if not per_reg:
                return []
            moved: list[tuple[uuid.UUID, Status]] = []
            for reg_id, items in per_reg.items():
                items.sort(key=lambda r: r.attempted_at)
                current = Status(locked[reg_id]["status"])
                triggers = [r.registration_trigger for r in items]
                if _reaches_failure_threshold(locked[reg_id], items):
                    triggers.append(Trigger.FAILURE_THRESHOLD)
                final = fold_triggers(current, triggers)
                if final is not current:
                    moved.append((reg_id, final))
            if moved:
                await conn.execute(
                    Q.set_registration_status,
                    [m[0] for m in moved],
                    [m[1].value for m in moved],
                )
            await self._record_outcomes(conn, per_reg, locked, per_registration)
            if any(status is Status.ACTIVE for _, status in moved):
                await conn.execute(Q.notify_events)
        return moved

    async def _record_outcomes(
        self,
        conn: asyncpg.Connection,
        per_reg: dict[uuid.UUID, list[DeliveryResult]],
        locked: dict[uuid.UUID, asyncpg.Record],
        cap: int,
    ) -> None:
        columns: list[list[object]] = [[] for _ in range(12)]
        for reg_id in sorted(per_reg):
            items = per_reg[reg_id]
            lock = locked[reg_id]
            successes = [r for r in items if r.success]
            failures = [r for r in items if not r.success]
            after = items
            if successes:
                last_ok = successes[-1].attempted_at
                after = [r for r in items if r.attempted_at > last_ok]
            state = after_results(
                IsolationState(
                    concurrency=lock["concurrency"],
                    slow_until=lock["slow_until"],
                    breaker=Breaker(
                        state=lock["breaker_state"],
                        opened_at=lock["breaker_opened_at"],
                        next_probe_at=lock["breaker_next_probe_at"],
                    ),
                    breaker_failures=lock["breaker_failures"],
                ),
                [Outcome(success=r.success, attempted_at=r.attempted_at) for r in items],
                cap=cap,
                now=lock["db_now"],
            )
            for column, value in zip(
                columns,
                (
                    reg_id,
                    sum(1 for r in after if not r.success),
                    bool(successes),
                    successes[-1].attempted_at if successes else None,
                    failures[-1].attempted_at if failures else None,
                    len(items),
                    state.concurrency,
                    state.slow_until,
                    state.breaker.state,
                    state.breaker_failures,
                    state.breaker.opened_at,
                    state.breaker.next_probe_at,
                ),
                strict=True,
            ):
                column.append(value)
        await conn.execute(Q.record_registration_outcomes, *columns)

    async def release_leases(self, event_ids: Sequence[uuid.UUID], worker_id: str) -> None:
        if event_ids:
            await self.pool.execute(Q.release_leases, list(event_ids), worker_id)


# Registrations whose delivery target a worker process keeps (url, secrets, basic auth).
TARGET_CACHE_SIZE = 10000


def _plain_success(r: DeliveryResult) -> bool:
    """A success that moves nothing but the isolation state's success path."""
    return r.success and r.registration_trigger is None and r.new_event_status == "Success"


def _reaches_failure_threshold(lock: asyncpg.Record, items: Sequence[DeliveryResult]) -> bool:
    """Whether the batch ends with the registration's suspendAfterConsecutiveFailures reached:
    failed attempts since its last success (in the batch, or before it) at the threshold."""
    threshold = lock["suspend_after_consecutive_failures"]
    if threshold is None or items[-1].success:
        return False
    last_ok = max((i for i, r in enumerate(items) if r.success), default=None)
    if last_ok is not None:
        return bool(len(items) - 1 - last_ok >= threshold)
    return bool(lock["consecutive_failures"] + len(items) >= threshold)


def _to_roll(r: DeliveryResult) -> AttemptToRoll:
    return AttemptToRoll(
        registration_id=r.registration_id,
        event_id=r.event_id,
        attempt_number=r.attempt_number,
        attempted_at=r.attempted_at,
        duration_ms=r.duration_ms,
        success=r.success,
    )


def fold_triggers(current: Status, triggers: Sequence[Trigger | None]) -> Status:
    """Apply a registration's triggers in order; one the table does not allow from the status
    reached so far is ignored (the partner's change won)."""
    status = current
    for trigger in triggers:
        if trigger is not None:
            status = TRANSITIONS.get((status, trigger), status)
    return status


def _claimed(row: asyncpg.Record, target: DeliveryTarget) -> ClaimedDelivery:
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
        probe=row["probe"],
        slow=row["slow"],
        target=target,
        trace_parent=row["trace_parent"],
    )
