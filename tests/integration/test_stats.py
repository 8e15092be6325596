"""Registration stats: GET /webhooks/v1/registrations/{id}/stats over real deliveries.

Receivers are real aiohttp servers; the answers are compared with the attempts table, and the
rollups the result flush writes with the migration's backfill computed from the same attempts.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from broker.domain import latency
from broker.store.db import create_pool
from broker.store.store import DeliveryResult, Store, WindowRules
from tests.conftest import TEST_KEYS, World, make_world, runtime_of, wait_until

R = "core/v1/dda/accounts/"
WIDTH = {"1h": timedelta(minutes=1), "24h": timedelta(minutes=24), "7d": timedelta(minutes=168)}
OK = "error IS NULL AND response_status BETWEEN 200 AND 299"


async def stats(world: World, reg_id: str, query: str = "") -> tuple[int, Any]:
    resp = await world.client.get(
        f"/webhooks/v1/registrations/{reg_id}/stats{query}", headers=world.partner
    )
    return resp.status, await resp.json()


async def attempt_counts(db: asyncpg.Connection, reg_id: str) -> tuple[int, int]:
    row = await db.fetchrow(
        f"""SELECT count(*) FILTER (WHERE {OK}) AS ok, count(*) FILTER (WHERE NOT ({OK})) AS ko
            FROM attempts a JOIN events e ON e.id = a.event_id
            WHERE e.registration_id = $1 AND NOT a.placeholder""",
        uuid.UUID(reg_id),
    )
    return row["ok"], row["ko"]


async def rollups(db: asyncpg.Connection, reg_id: str) -> list[tuple[Any, ...]]:
    rows = await db.fetch(
        """SELECT width_minutes, bucket_start, success, failure, latency FROM attempt_rollups
           WHERE registration_id = $1 ORDER BY 1, 2""",
        uuid.UUID(reg_id),
    )
    return [tuple(r) for r in rows]


def flaky(request: web.Request, n: int) -> Any:
    """Every third request fails with 500, the others succeed after a few ms."""

    async def answer() -> web.StreamResponse:
        await asyncio.sleep(0.005)
        return web.Response(status=500 if n % 3 == 0 else 200)

    return answer()


async def test_stats_count_real_deliveries_retries_and_test_deliveries(make_client, receiver, db):
    receiver.behaviour = flaky
    client = await make_client(workers=True)
    world = await make_world(client)
    reg = await world.register(receiver.url)
    # One event object per window: several windows make several events, some retried.
    for i in range(5):
        await world.emit([R + str(i)])

        async def settled() -> bool:
            pending = await db.fetchval(
                "SELECT count(*) FROM events WHERE registration_id = $1 AND status = 'Pending'",
                uuid.UUID(reg["id"]),
            )
            return pending == 0 and len(receiver.received) > i  # noqa: B023 (awaited here)

        await wait_until(settled, timeout=20)
    resp = await client.post(f"/webhooks/v1/registrations/{reg['id']}/test", headers=world.partner)
    assert resp.status == 200
    ok, ko = await attempt_counts(db, reg["id"])
    assert ko > 0 and ok > 0  # the mix the test is about: retries of 500s, then successes
    assert ok + ko == len(receiver.received)

    for period in ("1h", "24h", "7d"):
        status, body = await stats(world, reg["id"], f"?period={period}")
        assert status == 200, body
        assert body["period"] == period
        assert body["attempts"] == {"success": ok, "failure": ko}
        assert body["successRate"] == pytest.approx(ok / (ok + ko))
        lat = body["latencyMs"]
        assert 0 <= lat["p50"] <= lat["p95"] <= lat["p99"] < 2000
        series = body["series"]
        assert len(series) == 60
        assert sum(b["success"] for b in series) == ok
        assert sum(b["failure"] for b in series) == ko
        starts = [datetime.fromisoformat(b["start"]) for b in series]
        assert all(b - a == WIDTH[period] for a, b in itertools.pairwise(starts))
        assert starts[-1] <= datetime.now(starts[-1].tzinfo) < starts[-1] + WIDTH[period]
        assert any(b["p95Ms"] is not None for b in series)
        assert all(b["p95Ms"] is None for b in series if b["success"] + b["failure"] == 0)
        assert body["queue"] == {"pending": 0, "oldestPendingAt": None}
    # The default period is 24h.
    assert (await stats(world, reg["id"]))[1]["period"] == "24h"

    # What the flushes wrote is what the migration's backfill makes of the attempts table.
    written = await rollups(db, reg["id"])
    assert written
    await db.fetchval("SELECT broker_rebuild_attempt_rollups($1)", uuid.UUID(reg["id"]))
    assert await rollups(db, reg["id"]) == written


async def test_the_latency_percentiles_follow_the_receivers_delay(make_client, receiver, db):
    async def slow(request: web.Request, n: int) -> web.StreamResponse:
        await asyncio.sleep(0.2)
        return web.Response(text="ok")

    receiver.behaviour = slow
    client = await make_client()
    world = await make_world(client)
    reg = await world.register(receiver.url)
    for _ in range(3):
        resp = await client.post(
            f"/webhooks/v1/registrations/{reg['id']}/test", headers=world.partner
        )
        assert resp.status == 200
    durations = await db.fetch(
        """SELECT a.duration_ms FROM attempts a JOIN events e ON e.id = a.event_id
           WHERE e.registration_id = $1""",
        uuid.UUID(reg["id"]),
    )
    status, body = await stats(world, reg["id"], "?period=1h")
    assert status == 200
    assert body["attempts"] == {"success": 3, "failure": 0}
    slowest = max(r["duration_ms"] for r in durations)
    assert body["latencyMs"]["p99"] == pytest.approx(slowest, rel=0.12)
    assert body["latencyMs"]["p50"] >= 200 / 1.12


async def test_queue_depth_and_oldest_pending_of_a_paused_registration(make_client, receiver, db):
    client = await make_client(workers=True)
    world = await make_world(client)
    reg = await world.register(receiver.url)
    resp = await client.post(f"/webhooks/v1/registrations/{reg['id']}/pause", headers=world.partner)
    assert resp.status == 200
    for n in (1, 2):  # two windows: two event objects wait
        await world.emit([R + str(n)])

        async def queued() -> bool:
            return bool((await stats(world, reg["id"]))[1]["queue"]["pending"] == n)  # noqa: B023

        await wait_until(queued, timeout=10)
    _, body = await stats(world, reg["id"])
    oldest = await db.fetchval(
        "SELECT min(created_at) FROM events WHERE registration_id = $1", uuid.UUID(reg["id"])
    )
    assert datetime.fromisoformat(body["queue"]["oldestPendingAt"]) == oldest.replace(
        microsecond=oldest.microsecond // 1000 * 1000
    )
    assert body["attempts"] == {"success": 0, "failure": 0}
    assert body["successRate"] is None and body["latencyMs"] is None
    assert len(body["series"]) == 60


async def test_a_placeholder_counts_once_its_late_result_arrives_and_a_retried_flush_not_again(
    make_client, receiver, db, db_url
):
    client = await make_client()
    world = await make_world(client)
    reg = await world.register(receiver.url)
    pool = await create_pool(db_url, size=2)
    store = Store(pool, keys=TEST_KEYS)
    try:
        await world.emit([R + "1"])

        async def created() -> bool:
            rules = WindowRules(min_seconds=0.2, max_seconds=1, max_resources=1000)
            return bool((await store.close_due_windows(rules)).created)

        await wait_until(created, timeout=5)
        [item] = await store.claim_deliveries(
            limit=1, per_registration=1, lease_seconds=0.2, worker_id="gone"
        )
        await asyncio.sleep(0.3)  # its worker "stopped": the next claim writes a placeholder
        [again] = await store.claim_deliveries(
            limit=1, per_registration=1, lease_seconds=30, worker_id="next"
        )
        assert await db.fetchval("SELECT count(*) FROM attempts WHERE placeholder") == 1
        _, body = await stats(world, reg["id"], "?period=1h")
        assert body["attempts"] == {"success": 0, "failure": 0}  # outcome unknown: not counted

        def result(claimed: Any, status: int) -> DeliveryResult:
            return DeliveryResult(
                event_id=claimed.id,
                registration_id=claimed.registration_id,
                attempt_number=claimed.attempt_count,
                attempted_at=claimed.attempted_at,
                duration_ms=12,
                response_status=status,
                error=None if status < 300 else f"HTTP {status}",
                response_body=None,
                success=status < 300,
                new_event_status="Pending" if status >= 300 else "Success",
                next_attempt_at=None,
                round_attempts=claimed.round_attempts,
                registration_trigger=None,
            )

        late = result(item, 500)
        await store.record_results([late])  # the stopped worker's answer replaces it
        await store.record_results([late])  # and the same flush again (lost COMMIT answer)
        await store.record_results([result(again, 200)])
        await store.record_results([result(again, 200)])
        _, body = await stats(world, reg["id"], "?period=1h")
        assert body["attempts"] == {"success": 1, "failure": 1}
        assert await attempt_counts(db, reg["id"]) == (1, 1)
        assert body["latencyMs"]["p50"] == latency.bucket_estimate(latency.bucket_of(12))
    finally:
        await pool.close()


async def test_stats_of_other_partners_unknown_and_deleted_registrations_are_404(
    make_client, receiver
):
    client = await make_client()
    world = await make_world(client)
    other = await make_world(client)
    reg = await world.register(receiver.url)
    assert (await stats(other, reg["id"]))[0] == 404
    assert (await stats(world, str(uuid.uuid4())))[0] == 404
    assert (await stats(world, "not-an-id"))[0] == 404
    resp = await client.delete(f"/webhooks/v1/registrations/{reg['id']}", headers=world.partner)
    assert resp.status == 204
    assert (await stats(world, reg["id"]))[0] == 404


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?period=30d", "period"),
        ("?period=", "period"),
        ("?period=1h&period=7d", "period"),
        ("?window=1h", "window"),
    ],
)
async def test_a_bad_period_is_a_validation_problem(make_client, receiver, query, field):
    client = await make_client()
    world = await make_world(client)
    reg = await world.register(receiver.url)
    resp = await client.get(
        f"/webhooks/v1/registrations/{reg['id']}/stats{query}", headers=world.partner
    )
    assert resp.status == 400
    assert resp.content_type == "application/problem+json"
    body = await resp.json()
    assert field in [e["field"] for e in body["errors"]]


async def test_housekeeping_prunes_rollups_no_period_reads(make_client, receiver, db):
    client = await make_client()
    world = await make_world(client)
    reg = await world.register(receiver.url)
    rid = uuid.UUID(reg["id"])
    kept = [(1, timedelta(minutes=90)), (24, timedelta(days=7, hours=12))]
    gone = [(1, timedelta(hours=3)), (24, timedelta(days=9))]
    for width, ago in kept + gone:
        await db.execute(
            """INSERT INTO attempt_rollups (registration_id, width_minutes, bucket_start,
                                            success, failure, latency)
               VALUES ($1, $2::int,
                       date_bin(make_interval(mins => $2::int), now() - $3::interval,
                                '1970-01-01 00:00:00+00'),
                       1, 0, array_fill(0, ARRAY[51]))""",
            rid,
            width,
            ago,
        )
    assert await runtime_of(client).store.prune_attempt_rollups() == len(gone)
    assert await db.fetchval(
        "SELECT count(*) FROM attempt_rollups WHERE registration_id = $1", rid
    ) == len(kept)
