"""Gauges for /metrics and the housekeeping jobs (history partitions, retention, secrets).

The gauges are database-wide and their queries read the queue, so they are computed by one
housekeeping job per cluster every few seconds and kept in ``gauge_snapshot``; a scrape reads
that one row.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import date

import asyncpg

from broker.domain.states import Status
from broker.store.base import StoreBase
from broker.store.queries import Q
from broker.store.records import (
    GaugeSnapshot,
    RetentionResult,
)


class UpkeepQueries(StoreBase):
    async def gauge_snapshot(self) -> GaugeSnapshot:
        async with self.pool.acquire() as conn:
            queue = await conn.fetch(Q.gauge_queue)
            regs = await conn.fetch(Q.gauge_registrations)
            breakers = await conn.fetch(Q.gauge_breakers)
            oldest_due = await conn.fetchrow(Q.gauge_oldest_due)
        zero = GaugeSnapshot.zero()
        depth = zero.queue_depth | {r["registration_status"]: r["depth"] for r in queue}
        oldest = zero.oldest_pending_age_seconds | {
            r["registration_status"]: r["oldest_age"] for r in queue
        }
        lag = next((r["due_lag"] for r in queue if r["registration_status"] == Status.ACTIVE), 0.0)
        return GaugeSnapshot(
            queue_depth=depth,
            oldest_pending_age_seconds=oldest,
            delivery_lag_seconds=lag,
            registrations_by_status=zero.registrations_by_status
            | {r["status"]: r["n"] for r in regs},
            breakers=zero.breakers | {r["state"]: r["n"] for r in breakers},
            oldest_due_age_seconds={
                "delivery": max(oldest_due["delivery"], 0.0),
                "aggregator": max(oldest_due["aggregator"], 0.0),
            },
        )

    async def refresh_gauge_snapshot(self) -> GaugeSnapshot:
        """Compute the gauges and store them for every process's /metrics."""
        snapshot = await self.gauge_snapshot()
        gauges = dataclasses.asdict(snapshot)
        del gauges["age_seconds"]
        await self.pool.execute(Q.write_gauge_snapshot, gauges)
        return snapshot

    async def expire_pending_events(self, ttl_days: int) -> int:
        return int((await self.pool.execute(Q.expire_pending_events, ttl_days)).split()[-1])

    async def ensure_history_partitions(self, *, days_back: int = 1, days_ahead: int) -> int:
        """Create the missing day partitions of windows, events and attempts around today."""
        return int(await self.pool.fetchval(Q.ensure_history_partitions, days_back, days_ahead))

    async def drop_expired_history(
        self, retention_days: int, *, lock_timeout_ms: int = 200, tries: int = 5
    ) -> RetentionResult:
        """Drop the day partitions older than the retention period (migration 0011).

        One transaction per day. Dropping a partition waits for the queries using it and every
        query asked after it waits for the drop, so each waits at most ``lock_timeout_ms``
        before giving up for a moment and trying again: deliveries stall for that long at
        worst, never for a long history page. A day still holding queued work is kept.
        """
        dropped: list[date] = []
        kept: list[date] = []
        busy: list[date] = []
        for row in await self.pool.fetch(Q.expired_history_days, retention_days):
            day = row["day"]
            for attempt in range(tries):
                try:
                    async with self.pool.acquire() as conn, conn.transaction():
                        await conn.execute(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}")
                        outcome = await conn.fetchval(Q.drop_history_day, day)
                except asyncpg.LockNotAvailableError:
                    if attempt + 1 == tries:
                        busy.append(day)
                    else:
                        await asyncio.sleep(0.05 * (attempt + 1))
                    continue
                if outcome == "dropped":
                    dropped.append(day)
                elif outcome == "queued":
                    kept.append(day)
                break
        return RetentionResult(dropped=dropped, kept_queued=kept, busy=busy)

    async def drop_expired_secrets(self) -> int:
        return int((await self.pool.execute(Q.drop_expired_previous_secrets)).split()[-1])

    async def discard_orphaned_events(self) -> int:
        """Pending events of Deleted registrations that were in flight at delete time."""
        return int((await self.pool.execute(Q.discard_orphaned_events)).split()[-1])

    async def vacuum_queue_tables(self) -> None:
        """VACUUM the delivery queue's hot tables (outside any transaction, as VACUUM must)."""
        await self.pool.execute(Q.vacuum_queue_tables)

    async def purge_idempotency_keys(self) -> int:
        return int((await self.pool.execute(Q.purge_idempotency_keys)).split()[-1])
