"""/metrics for operators: worker heartbeats and the age of the oldest due work per role.

Seen as an operator sees them: scraped from an API-only process (which runs no worker), while
worker processes start, idle and stop next to it on the same database.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from broker.domain.ids import uuid7
from broker.runtime import running
from tests.conftest import make_settings, make_world, scrape_metrics, wait_until
from tests.integration.test_metrics import refresh_gauges_once

ROLES = ("delivery", "aggregator")


def last_claim(samples: dict[str, float], process: str, role: str) -> float | None:
    return samples.get(
        f'broker_worker_last_claim_timestamp_seconds{{process="{process}",role="{role}"}}'
    )


def oldest_due(samples: dict[str, float], role: str) -> float:
    return samples[f'broker_oldest_due_age_seconds{{role="{role}"}}']


async def heartbeat_writes(db: Any) -> int:
    row = await db.fetchrow(
        "SELECT n_tup_ins + n_tup_upd AS n FROM pg_stat_user_tables"
        " WHERE relname = 'worker_heartbeats'"
    )
    return int(row["n"])


async def test_heartbeats_are_recent_while_workers_run_and_age_once_they_stop(
    make_client, db, db_url
):
    api = await make_client()  # role api: serves /metrics, runs no worker
    settings = make_settings(poll_interval_seconds=0.1)
    writes_before = await heartbeat_writes(db)
    async with running(settings, url=db_url, role="worker") as worker:
        process = worker.name

        async def both_recent() -> bool:
            samples = await scrape_metrics(api)
            beats = [last_claim(samples, process, role) for role in ROLES]
            return all(b is not None and time.time() - b < 2 for b in beats)

        await wait_until(both_recent)
        started = time.monotonic()
        # Idle (nothing to deliver, no window due) but alive: the heartbeat keeps moving.
        first = last_claim(await scrape_metrics(api), process, "delivery")
        await asyncio.sleep(2.5)
        samples = await scrape_metrics(api)
        for role in ROLES:
            beat = last_claim(samples, process, role)
            assert beat is not None and time.time() - beat < 2, (role, beat)
        assert first is not None and last_claim(samples, process, "delivery") > first  # type: ignore[operator]
    ran = time.monotonic() - started + 2  # the wait_until above, at most about 2 s
    stopped = await scrape_metrics(api)
    await asyncio.sleep(1.5)
    later = await scrape_metrics(api)
    for role in ROLES:
        # Stopped: the last value stays, so time() minus it grows (what the alert watches).
        assert last_claim(later, process, role) == last_claim(stopped, process, role)
        beat = last_claim(later, process, role)
        assert beat is not None and time.time() - beat >= 1.5
    # At most about one write a second (one row per role), though the loops claimed every 0.1 s
    # (the backends' statistics are flushed when the worker's connections close).
    writes = await heartbeat_writes(db) - writes_before
    assert 2 <= writes <= 2 * (ran + 2), (writes, ran)


async def test_heartbeats_of_processes_gone_for_an_hour_are_pruned(make_client, db, db_url):
    api = await make_client()
    await db.execute(
        "INSERT INTO worker_heartbeats (process, role, last_claim_at) VALUES"
        " ('gone:1:aaaaaa', 'delivery', now() - interval '2 hours'),"
        " ('quiet:2:bbbbbb', 'delivery', now() - interval '10 minutes')"
    )
    samples = await scrape_metrics(api)
    assert last_claim(samples, "gone:1:aaaaaa", "delivery") is not None
    from broker.store.db import create_pool
    from broker.store.store import Store
    from broker.workers.housekeeping import Housekeeping

    pool = await create_pool(db_url, size=1)
    try:
        assert await Housekeeping(Store(pool), make_settings()).prune_heartbeats() == 1
    finally:
        await pool.close()
    samples = await scrape_metrics(api)
    assert last_claim(samples, "gone:1:aaaaaa", "delivery") is None  # the series ends
    quiet = last_claim(samples, "quiet:2:bbbbbb", "delivery")
    assert quiet is not None and 590 < time.time() - quiet < 700


async def queue_due_event(db: Any, world: Any, registration_id: str, seconds_ago: float) -> None:
    """A Pending event object whose registration has been due for a claim that long."""
    event_id = uuid7()
    await db.execute(
        "INSERT INTO events (id, partner_id, registration_id, event_name)"
        " VALUES ($1, $2::uuid, $3::uuid, $4)",
        event_id,
        world.partner_id,
        registration_id,
        world.event_name,
    )
    await db.execute(
        "INSERT INTO delivery_queue (event_id, registration_id, created_at, next_attempt_at)"
        " VALUES ($1, $2::uuid, now(), now() - make_interval(secs => $3))",
        event_id,
        registration_id,
        seconds_ago,
    )
    await db.execute(
        "INSERT INTO delivery_ready (registration_id, next_due_at)"
        " VALUES ($1::uuid, now() - make_interval(secs => $2))"
        " ON CONFLICT (registration_id) DO UPDATE SET next_due_at = excluded.next_due_at",
        registration_id,
        seconds_ago,
    )


async def test_oldest_due_age_grows_while_no_worker_runs(make_client, db, db_url, receiver):
    api = await make_client(window_min_seconds=0.2, window_max_seconds=0.5)
    world = await make_world(api)
    reg = await world.register(receiver.url)
    waiting = await world.register(receiver.url)
    await db.execute(
        "UPDATE registrations SET status = 'Suspended' WHERE id = $1::uuid", waiting["id"]
    )
    # A Suspended registration's queue waits by design: parked, it is no due work.
    await queue_due_event(db, world, waiting["id"], 600)
    await db.execute(
        "UPDATE delivery_ready SET next_due_at = 'infinity' WHERE registration_id = $1::uuid",
        waiting["id"],
    )
    await refresh_gauges_once(db_url)
    samples = await scrape_metrics(api)
    assert oldest_due(samples, "delivery") == 0
    # The suspension's Broker.Registration.Suspended waits in the outbox: aggregator work.
    assert await db.fetchval("SELECT count(*) FROM operational_outbox") == 1
    assert oldest_due(samples, "aggregator") > 0

    await queue_due_event(db, world, reg["id"], 5)
    await world.emit(["core/v1/r/1"])  # a window, due 0.2 s from now; no aggregator runs
    await asyncio.sleep(0.5)
    await refresh_gauges_once(db_url)
    first = await scrape_metrics(api)
    assert 5 <= oldest_due(first, "delivery") < 10
    assert 0 < oldest_due(first, "aggregator") < 5
    await asyncio.sleep(1.0)
    await refresh_gauges_once(db_url)
    second = await scrape_metrics(api)
    for role in ROLES:
        assert oldest_due(second, role) >= oldest_due(first, role) + 1.0, role

    # A worker catches up (its housekeeping refreshes the gauges): both back to 0.
    async with running(make_settings(), url=db_url, role="worker"):

        async def caught_up() -> bool:
            samples = await scrape_metrics(api)
            return oldest_due(samples, "delivery") == oldest_due(samples, "aggregator") == 0

        await wait_until(caught_up)
        await receiver.wait_for(2)  # the queued event and the window's event object
