"""Benchmark phase ``history_retention`` (run by ``bench.run``, part of ``make bench-history``):
retention of day partitions (migration 0011), and whether history stays the same size on disk.

A simulated month: each simulated day inserts that day's history (event objects with their
window and one attempt each, by SQL, into the day's partitions), then drops the day that left
the retention window with ``broker_drop_history_day``, exactly as the housekeeping job does.
Days are in the future (30 days ahead and on), so the bench broker's own retention job, which
drops days past ``BROKER_RETENTION_DAYS``, never touches them. Figures: the time of each drop
(``history_retention_drop_max_ms``, target <= 1000) and the on-disk size of events, attempts
and windows after each day once the window is full: the last over the first
(``history_retention_size_ratio``, flat is 1.0; a DELETE-based purge grows until vacuum
catches up).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.run import Bench

RESULT_KEYS = ("history_retention_drop_max_ms", "history_retention_size_ratio")


@dataclass(frozen=True)
class RetentionSizes:
    events_per_day: int
    window_days: int
    simulated_days: int


SIZES = {
    "full": RetentionSizes(events_per_day=300_000, window_days=7, simulated_days=21),
    "quick": RetentionSizes(events_per_day=50_000, window_days=7, simulated_days=21),
    "tiny": RetentionSizes(events_per_day=500, window_days=2, simulated_days=5),
}

# One simulated day: $1 partner, $2 registration, $3 the day's start, $4 rows.
_INSERT_DAY = """
WITH t AS MATERIALIZED (
    SELECT g, broker_uuid7($3::timestamptz + g * (interval '86399 seconds' / $4::int)) AS id
    FROM generate_series(1, $4::int) AS g
), w AS (
    INSERT INTO windows (id, partner_id, event_name, resources)
    SELECT id, $1, 'Bench.Retention', ARRAY['core/v1/dda/accounts/' || g] FROM t
), e AS (
    INSERT INTO events (id, partner_id, registration_id, event_name, window_id, status,
                        attempt_count, last_attempted_at)
    SELECT id, $1, $2, 'Bench.Retention', id, 'Success', 1, broker_uuid7_time(id) FROM t
)
INSERT INTO attempts (event_id, attempt_number, attempted_at, duration_ms, response_status)
SELECT id, 1, broker_uuid7_time(id), 12, 200 FROM t
"""

# Only the simulated days' partitions ($1, $2: the first and last day): a history loaded by
# another phase (history_filters' 10M) would otherwise hide this phase's growth in its size.
_SIZE = """
SELECT coalesce(sum(pg_total_relation_size(i.inhrelid)), 0)::bigint
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent IN ('events'::regclass, 'attempts'::regclass, 'windows'::regclass)
  AND substring(c.relname FROM '_p([0-9]{8})$') BETWEEN to_char($1::date, 'YYYYMMDD')
                                                    AND to_char($2::date, 'YYYYMMDD')
"""


def _say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


async def phase_history_retention(bench: Bench) -> None:
    assert bench.pool is not None
    sizes = SIZES[bench.sizes.mode]
    partner, registration = uuid.uuid4(), uuid.uuid4()
    await bench.pool.execute(
        "INSERT INTO partners (id, name) VALUES ($1, 'bench-retention')", partner
    )
    await bench.pool.execute(
        "INSERT INTO registrations (id, partner_id, url, event_types, status, secret_sealed)"
        " VALUES ($1, $2, 'http://127.0.0.1:9/retention', '{Bench.Retention}', 'Paused', $3)",
        registration,
        partner,
        # Sealed as every secret is: a broker process refuses to start on one it cannot open.
        bench.key_ring.seal(
            "whsec_cmV0ZW50aW9ucmV0ZW50aW9ucmV0ZW50aW9u", row=registration, column="secret"
        ),
    )
    today = datetime.now(UTC).date()
    first_day = today + timedelta(days=30)
    _say(
        f"history_retention: {sizes.simulated_days} simulated days of"
        f" {sizes.events_per_day:,} event objects, {sizes.window_days} kept"
    )
    drops_ms: list[float] = []
    sizes_mb: list[float] = []
    for s in range(sizes.simulated_days):
        day = first_day + timedelta(days=s)
        await bench.pool.execute("SELECT broker_ensure_history_partitions($1::date, $1::date)", day)
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        await bench.pool.execute(_INSERT_DAY, partner, registration, start, sizes.events_per_day)
        if s >= sizes.window_days:
            leaving = day - timedelta(days=sizes.window_days)
            t0 = time.perf_counter()
            async with bench.pool.acquire() as conn, conn.transaction():
                await conn.execute("SET LOCAL lock_timeout = 1000")
                outcome = await conn.fetchval("SELECT broker_drop_history_day($1)", leaving)
            drops_ms.append((time.perf_counter() - t0) * 1000)
            if outcome != "dropped":
                raise RuntimeError(f"history_retention: {leaving} was {outcome}, not dropped")
            sizes_mb.append(
                await bench.pool.fetchval(
                    _SIZE, first_day, first_day + timedelta(days=sizes.simulated_days - 1)
                )
                / 2**20
            )
    # Leave nothing behind for later phases.
    for s in range(sizes.simulated_days):
        day = first_day + timedelta(days=s)
        await bench.pool.execute("SELECT broker_drop_history_day($1)", day)
    ratio = sizes_mb[-1] / sizes_mb[0]
    bench.results["history_retention_drop_max_ms"] = round(max(drops_ms), 1)
    bench.results["history_retention_size_ratio"] = round(ratio, 3)
    bench.details["history_retention"] = {
        "events_per_day": sizes.events_per_day,
        "window_days": sizes.window_days,
        "simulated_days": sizes.simulated_days,
        "drop_ms": [round(ms, 1) for ms in drops_ms],
        "size_mb_after_each_drop": [round(mb, 1) for mb in sizes_mb],
    }
    _say(
        f"history_retention: drops {min(drops_ms):.0f}-{max(drops_ms):.0f} ms;"
        f" size {sizes_mb[0]:.0f} -> {sizes_mb[-1]:.0f} MB (x{ratio:.3f})"
    )
