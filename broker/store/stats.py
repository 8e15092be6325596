"""Per-registration delivery stats: rollups written with each result flush, read per period.

``add_rollups`` runs inside the transactions that record attempts (the result flush in
``delivery``, the test delivery in ``history``); ``registration_stats`` reads at most 420 rollup
rows and the registration's queue. Rows and periods: migration 0009 and sql/queries/stats.sql.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from broker.domain import latency
from broker.store.base import StoreBase
from broker.store.queries import Q

_EPOCH = datetime.fromisoformat("1970-01-01T00:00:00+00:00")
SERIES_BUCKETS = 60


@dataclass(frozen=True, slots=True)
class Period:
    name: str
    row_minutes: int  # the rollup rows it reads (1 or 24)
    bucket_minutes: int  # one of its 60 buckets: a whole number of rows


PERIODS = {p.name: p for p in (Period("1h", 1, 1), Period("24h", 24, 24), Period("7d", 24, 168))}


@dataclass(frozen=True, slots=True)
class AttemptToRoll:
    """One real attempt result, as the rollups count it."""

    registration_id: uuid.UUID
    event_id: uuid.UUID
    attempt_number: int
    attempted_at: datetime
    duration_ms: int
    success: bool


@dataclass(frozen=True, slots=True)
class StatsBucket:
    start: datetime
    success: int
    failure: int
    p95_ms: float | None


@dataclass(frozen=True, slots=True)
class RegistrationStats:
    period: str
    success: int
    failure: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    pending: int
    oldest_pending_at: datetime | None
    series: list[StatsBucket]


async def add_rollups(conn: asyncpg.Connection, attempts: Sequence[AttemptToRoll]) -> None:
    """Count these attempts in their registrations' rollups, in the caller's transaction, before
    the attempt rows are written (the query skips attempts already recorded for real)."""
    if attempts:
        await conn.execute(
            Q.add_attempt_rollups,
            [a.registration_id for a in attempts],
            [a.event_id for a in attempts],
            [a.attempt_number for a in attempts],
            [a.attempted_at for a in attempts],
            [a.duration_ms for a in attempts],
            [a.success for a in attempts],
        )


class StatsQueries(StoreBase):
    async def registration_stats(
        self, registration_id: uuid.UUID, partner_id: uuid.UUID, period: Period
    ) -> RegistrationStats | None:
        """The period's totals, percentiles and 60 buckets, oldest first; None: no such
        registration for this partner. The last bucket is the one holding now (so the period is
        its 60 buckets: up to one bucket shorter than its name)."""
        async with self.pool.acquire() as conn:
            reg = await conn.fetchrow(Q.stats_registration, registration_id, partner_id)
            if reg is None:
                return None
            width = timedelta(minutes=period.bucket_minutes)
            current = _EPOCH + (reg["db_now"] - _EPOCH) // width * width
            first = current - (SERIES_BUCKETS - 1) * width
            rows = await conn.fetch(
                Q.stats_rollups, registration_id, period.row_minutes, first, current + width
            )
        counts = [[0, 0] for _ in range(SERIES_BUCKETS)]
        histograms = [[0] * latency.BUCKETS for _ in range(SERIES_BUCKETS)]
        for row in rows:
            i = (row["bucket_start"] - first) // width
            counts[i][0] += row["success"]
            counts[i][1] += row["failure"]
            hist = histograms[i]
            for k, n in enumerate(row["latency"]):
                hist[k] += n
        total = latency.add(histograms)
        return RegistrationStats(
            period=period.name,
            success=sum(c[0] for c in counts),
            failure=sum(c[1] for c in counts),
            p50_ms=latency.percentile(total, 0.50),
            p95_ms=latency.percentile(total, 0.95),
            p99_ms=latency.percentile(total, 0.99),
            pending=reg["pending"],
            oldest_pending_at=reg["oldest_pending_at"],
            series=[
                StatsBucket(
                    start=first + i * width,
                    success=counts[i][0],
                    failure=counts[i][1],
                    p95_ms=latency.percentile(histograms[i], 0.95),
                )
                for i in range(SERIES_BUCKETS)
            ],
        )

    async def rebuild_attempt_rollups(self, registration_id: uuid.UUID | None) -> int:
        """Rollups recomputed from the attempts table (the migration's backfill)."""
        return int(await self.pool.fetchval(Q.rebuild_attempt_rollups, registration_id))

    async def prune_attempt_rollups(self) -> int:
        return int((await self.pool.execute(Q.prune_attempt_rollups)).split()[-1])
