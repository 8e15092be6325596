"""Benchmark phase ``stats`` (run by ``bench.run``): GET .../stats of a busy registration.

One registration with 1,000,000 attempts (full run; quick 200,000, tiny 5,000) spread evenly
over the 7-day period's 60 buckets, 90% successes. The attempts (4 per event object) are
inserted by SQL with ``generate_series``; their rollups are then built by the named query
``rebuild_attempt_rollups``, which calls the very function migration 0009 backfills with, so
the rows read are made exactly as an upgrade makes them (the result flush adds to the same
rows; tests/integration/test_stats.py checks both agree). Then sequential GETs of
``?period=7d``, ``24h`` and ``1h`` on one keep-alive connection to a running ``broker serve``
API process (after 10 warm-ups each): p50 and p99 per period; target ``stats_7d_p99_ms`` <= 50.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from bench.httpclient import HttpConnection, build_request, percentile

if TYPE_CHECKING:
    from bench.run import Bench

RESULT_KEYS = ("stats_7d_p99_ms", "stats_24h_p99_ms", "stats_1h_p99_ms")
PERIODS = ("7d", "24h", "1h")
ATTEMPTS_PER_EVENT = 4
CHUNK_EVENTS = 25_000
BUCKET_7D = timedelta(minutes=168)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class StatsSizes:
    attempts: int
    requests: int


SIZES = {
    "full": StatsSizes(attempts=1_000_000, requests=200),
    "quick": StatsSizes(attempts=200_000, requests=100),
    "tiny": StatsSizes(attempts=5_000, requests=10),
}

# Event objects with ATTEMPTS_PER_EVENT attempts each, evenly spaced from $4 by $5 per attempt:
# the last of every 10 attempts fails (HTTP 500), durations 5 to ~400 ms.
_INSERT = f"""
WITH ev AS (
    INSERT INTO events (id, partner_id, registration_id, event_name, status, attempt_count,
                        last_attempted_at)
    SELECT broker_uuid7($4::timestamptz + g * {ATTEMPTS_PER_EVENT} * $5::interval), $1, $2, $3,
           'Success', {ATTEMPTS_PER_EVENT},
           $4::timestamptz + (g * {ATTEMPTS_PER_EVENT} + {ATTEMPTS_PER_EVENT - 1}) * $5
    FROM generate_series($6::bigint, $7::bigint) AS g
    RETURNING id, created_at
)
INSERT INTO attempts (event_id, attempt_number, attempted_at, duration_ms, response_status,
                      error)
SELECT ev.id, n, ev.created_at + (n - 1) * $5::interval,
       5 + (hashtext(ev.id::text || n) & 1023) % 400,
       CASE WHEN x.fails THEN 500 ELSE 200 END, CASE WHEN x.fails THEN 'HTTP 500' END
FROM ev CROSS JOIN generate_series(1, {ATTEMPTS_PER_EVENT}) AS n
CROSS JOIN LATERAL (SELECT hashtext(ev.id::text || n) % 10 = 0) AS x(fails)
"""


def _say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


async def phase_stats(bench: Bench) -> None:
    from bench.run import DELIVERY_EVENT
    from broker.store.queries import Q

    sizes = SIZES[bench.sizes.mode]
    assert bench.pool is not None
    # A partner of its own: the other phases' partners may be at their registration quota.
    partner = await bench.call("POST", "/admin/v1/partners", body={"name": "bench-stats"})
    reg = await bench.call(
        "POST",
        "/webhooks/v1/registrations",
        key=partner["apiKey"],
        body={
            "url": f"http://127.0.0.1:{bench.receiver_port}/hook/stats",
            "eventTypes": [DELIVERY_EVENT],
        },
    )
    reg_id = uuid.UUID(reg["id"])
    # The 7-day period's first bucket, as the API cuts it (epoch-aligned 168-minute buckets):
    # every attempt falls inside the period, so its total must equal what was inserted.
    now = datetime.now(UTC)
    first = EPOCH + (now - EPOCH) // BUCKET_7D * BUCKET_7D - 59 * BUCKET_7D
    events = sizes.attempts // ATTEMPTS_PER_EVENT
    step = (now - first - timedelta(seconds=5)) / sizes.attempts
    _say(f"stats: inserting {sizes.attempts:,} attempts over 7 days for one registration")
    await bench.pool.execute(
        "SELECT broker_ensure_history_partitions($1::date, now()::date)", first.date()
    )
    started = time.perf_counter()
    for lo in range(0, events, CHUNK_EVENTS):
        hi = min(events, lo + CHUNK_EVENTS) - 1
        await bench.pool.execute(
            _INSERT, uuid.UUID(partner["id"]), reg_id, DELIVERY_EVENT, first, step, lo, hi
        )
    inserted = time.perf_counter() - started
    t0 = time.perf_counter()
    rows = await bench.pool.fetchval(Q.rebuild_attempt_rollups, reg_id)
    rebuild = time.perf_counter() - t0
    await bench.pool.execute("ANALYZE attempt_rollups")
    _say(f"stats: {rows} rollup rows built in {rebuild:.1f}s (inserts {inserted:.1f}s)")

    port = bench.api_ports[0]
    auth = {"Authorization": f"Bearer {partner['apiKey']}"}
    conn = HttpConnection(port)
    detail: dict[str, dict[str, float]] = {}
    try:
        for period in PERIODS:
            request = build_request(
                "GET",
                f"/webhooks/v1/registrations/{reg_id}/stats?period={period}",
                port,
                headers=auth,
            )
            for _ in range(10):
                reply = await conn.send(request)
            body = json.loads(reply.body)
            if reply.status != 200 or len(body["series"]) != 60:
                raise RuntimeError(f"stats {period} -> {reply.status}: {reply.body[:300]!r}")
            total = body["attempts"]["success"] + body["attempts"]["failure"]
            if period == "7d" and total != sizes.attempts:
                raise RuntimeError(f"stats 7d counts {total} attempts, {sizes.attempts} stored")
            timings = []
            for _ in range(sizes.requests):
                t0 = time.perf_counter()
                reply = await conn.send(request)
                timings.append((time.perf_counter() - t0) * 1000)
                if reply.status != 200:
                    raise RuntimeError(f"stats {period} -> {reply.status}")
            detail[period] = {
                "p50_ms": round(percentile(timings, 50), 2),
                "p99_ms": round(percentile(timings, 99), 2),
                "max_ms": round(max(timings), 2),
                "attempts_in_period": total,
            }
            bench.results[f"stats_{period}_p99_ms"] = detail[period]["p99_ms"]
    finally:
        await conn.close()
    bench.phase_items["stats"] = sizes.requests * len(PERIODS)
    bench.details["stats"] = {
        **detail,
        "attempts": sizes.attempts,
        "rollup_rows": rows,
        "insert_seconds": round(inserted, 1),
        "rollup_rebuild_seconds": round(rebuild, 2),
        "requests_each": sizes.requests,
    }
    _say(
        "stats: p50/p99 "
        + ", ".join(f"{p} {d['p50_ms']:.1f}/{d['p99_ms']:.1f} ms" for p, d in detail.items())
    )
