"""Measuring helpers of ``bench.peers``: database counters, backend states, CPU deltas."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg

if TYPE_CHECKING:
    from bench.peers.run import PeersBench


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


async def db_counters(conn: Any, name: str) -> dict[str, int]:
    """Transactions and rows written in one database (pg_stat_database, flushed first)."""
    with contextlib.suppress(asyncpg.PostgresError):
        await conn.execute("SELECT pg_stat_force_next_flush()")
    await asyncio.sleep(1.1)  # other backends flush their counters at most once a second
    row = await conn.fetchrow(
        "SELECT xact_commit, tup_inserted, tup_updated, tup_deleted, tup_fetched"
        " FROM pg_stat_database WHERE datname = $1",
        name,
    )
    return dict(row) if row else {}


async def sample_waits(pool: Any, db_name: str) -> dict[str, float]:
    """Until cancelled, every 100 ms: what each busy backend of ``db_name`` is doing (state,
    wait event, the statement's first words). Returns backends per sample, by kind."""
    counts: dict[str, int] = {}
    samples = 0
    try:
        while True:
            rows = await pool.fetch(
                "SELECT state, wait_event_type, wait_event,"
                " left(regexp_replace(query, '\\s+', ' ', 'g'), 70) AS q"
                " FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()"
                " AND state <> 'idle'",
                db_name,
            )
            samples += 1
            for r in rows:
                key = f"{r['state']} | {r['wait_event_type']}:{r['wait_event']} | {r['q']}"
                counts[key] = counts.get(key, 0) + 1
            await asyncio.sleep(0.1)
    except asyncio.CancelledError:
        top = sorted(counts.items(), key=lambda kv: -kv[1])[:15]
        return {k: round(v / max(samples, 1), 3) for k, v in top}


async def stop_sampler(sampler: asyncio.Task[dict[str, float]] | None) -> dict[str, float]:
    if sampler is None:
        return {}
    sampler.cancel()
    return await sampler


def cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    used = {k: after[k] - before.get(k, 0.0) for k in after}
    ours = sum(v for k, v in used.items() if k != "machine")
    used["other"] = max(0.0, used.get("machine", 0.0) - ours)
    return used


@dataclass
class Metered:
    """One side's timed span: what the counters and CPU read when it began."""

    conn: Any
    db_name: str
    counters: dict[str, int]
    before: dict[str, float]
    started: float


async def begin_metering(
    bench: PeersBench, conn: Any, db_name: str, profile_name: str, pid: int
) -> Metered:
    """Counters and CPU of ``db_name`` read, the clock started, the profiler (if any) on ``pid``."""
    counters = await db_counters(conn, db_name)
    bench.meter.db_name = db_name
    await bench.meter.sample()
    before = bench.meter.snapshot()
    started = time.perf_counter()
    bench.profiler.start(profile_name, pid, bench.profile_seconds)
    return Metered(conn, db_name, counters, before, started)


async def end_metering(bench: PeersBench, metered: Metered) -> tuple[float, dict[str, float]]:
    """Wall seconds and CPU used since ``begin_metering``; the profiler is waited for."""
    await bench.meter.sample()
    wall = time.perf_counter() - metered.started
    used = cpu_used(metered.before, bench.meter.snapshot())
    bench.profiler.wait()
    return wall, used
