"""Limits that protect the service under a backlog: a worker process drains a large queue with
bounded memory and never more requests in flight than its concurrency setting."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.fault.harness import ScoringReceiver, bearer, make_world, report

pytestmark = [pytest.mark.fault, pytest.mark.timeout(120)]

BACKLOG = 12_000
CONCURRENCY = 24


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_worker_drains_a_large_backlog_in_bounded_memory(brokers, db_url, db, http):
    receiver = await ScoringReceiver(delay=0.01).start()
    try:
        api = brokers.spawn(db_url, role="api", name="api")
        await api.wait_ready()
        world = await make_world(
            http, api.url, event_names=["Core.Account.Opened"], receiver_urls=[receiver.url] * 4
        )
        for reg in world.registrations:
            async with http.post(
                f"{api.url}/webhooks/v1/registrations/{reg['id']}/pause",
                headers=bearer(world.partner_key),
            ) as resp:
                assert resp.status == 200
        # The backlog: 12 000 queued event objects of ~1 KiB each, made directly in SQL.
        await db.execute(
            """WITH g AS MATERIALIZED (
                   SELECT broker_uuid7(now()) AS id, g FROM generate_series(1, $3) AS g
               ), w AS (
                   INSERT INTO windows (id, partner_id, event_name, resources)
                   SELECT id, $1, 'Core.Account.Opened',
                          array(SELECT 'core/v1/backlog/' || g || '/' || i
                                FROM generate_series(1, 40) AS i)
                   FROM g
               ), e AS (
                   INSERT INTO events (id, partner_id, registration_id, event_name, window_id)
                   SELECT id, $1, ($2::uuid[])[1 + g % 4], 'Core.Account.Opened', id FROM g
                   RETURNING id, registration_id, created_at)
               INSERT INTO delivery_queue (event_id, registration_id, created_at, next_attempt_at)
               SELECT id, registration_id, created_at, created_at FROM e""",
            world.partner_id,
            [r["id"] for r in world.registrations],
            BACKLOG,
        )
        worker = brokers.spawn(
            db_url, role="worker", name="worker", BROKER_DELIVERY_CONCURRENCY=str(CONCURRENCY)
        )
        await worker.wait_ready()
        await asyncio.sleep(1.0)
        baseline = rss_mib(worker.pid)

        for reg in world.registrations:
            async with http.post(
                f"{api.url}/webhooks/v1/registrations/{reg['id']}/unpause",
                headers=bearer(world.partner_key),
            ) as resp:
                assert resp.status == 200
        started = time.monotonic()
        peak = baseline
        pending = BACKLOG
        while pending:
            assert time.monotonic() - started < 90, f"{pending} still pending"
            peak = max(peak, rss_mib(worker.pid))
            pending = await db.fetchval("SELECT count(*) FROM events WHERE status = 'Pending'")
            await asyncio.sleep(0.1)
        drained_in = time.monotonic() - started

        assert len(receiver.ids()) == BACKLOG
        assert 1 < receiver.max_concurrency <= CONCURRENCY
        # Memory follows the concurrency, not the backlog: the queue stays in PostgreSQL.
        assert peak - baseline < 80, f"RSS grew from {baseline:.0f} to {peak:.0f} MiB"
        report(
            f"FAULT-REPORT backlog: events={BACKLOG} delivered={len(receiver.ids())} "
            f"lost=0 duplicates={sum(receiver.ids().values()) - BACKLOG} "
            f"drained_in={drained_in:.1f}s max_in_flight={receiver.max_concurrency} "
            f"rss_baseline={baseline:.0f}MiB rss_peak={peak:.0f}MiB"
        )
    finally:
        await receiver.close()
