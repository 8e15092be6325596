"""Delivery claims (SKIP LOCKED + lease) and batched result recording."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from broker.domain.states import Status, Trigger, next_status, sources
from broker.store.base import StoreBase
from broker.store.queries import Q
from broker.store.records import (
    ClaimedDelivery,
    DeliveryResult,
    DeliveryTarget,
)

# Advisory lock taken by every delivery claim ("brkc"); see DeliveryQueries.claim_deliveries.
CLAIM_LOCK_ID = 0x62726B63


class DeliveryQueries(StoreBase):
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
                await conn.execute(Q.take_claim_lock, CLAIM_LOCK_ID)
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


def _claimed(
    row: asyncpg.Record, *, probe: bool, targets: dict[uuid.UUID, DeliveryTarget]
) -> ClaimedDelivery:
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
