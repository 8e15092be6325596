"""/metrics after real traffic: every operator metric moves when the thing it counts happens.

Counters are process-wide (one registry per process, shared by every app a test process starts),
so each assertion compares a scrape taken before the traffic with one taken after. Gauges come
from this test's own database (the snapshot housekeeping refreshes, every 0.05 s in tests), so
they are compared as absolute values.
"""

from __future__ import annotations

from aiohttp import web

from broker.store.db import create_pool
from broker.store.store import Store
from broker.workers.housekeeping import Housekeeping
from tests.conftest import make_settings, make_world, scrape_metrics, wait_until

ACTIVE = 'broker_registrations{status="Active"}'
SUSPENDED = 'broker_registrations{status="Suspended"}'
LAG = "broker_delivery_lag_seconds"
AGE = "broker_gauges_age_seconds"


async def refresh_gauges_once(db_url: str) -> None:
    """What the cluster's housekeeping does every BROKER_GAUGE_REFRESH_SECONDS."""
    pool = await create_pool(db_url, size=2)
    try:
        await Housekeeping(Store(pool), make_settings()).refresh_gauges()
    finally:
        await pool.close()


def depth(status: str) -> str:
    return f'broker_queue_depth{{registration_status="{status}"}}'


def oldest(status: str) -> str:
    return f'broker_queue_oldest_pending_age_seconds{{registration_status="{status}"}}'


def to(status: str) -> str:
    return f'broker_registration_transitions_total{{to="{status}"}}'


def attempts(outcome: str) -> str:
    return f'broker_delivery_attempts_total{{outcome="{outcome}"}}'


def delta(after: dict[str, float], before: dict[str, float], name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


async def test_metrics_follow_ingest_delivery_suspension_and_restart(make_client, receiver):
    client = await make_client(workers=True, retry_schedule=(0.05, 0.05))
    world = await make_world(client)
    before = await scrape_metrics(client)
    assert before[ACTIVE] == 0 and before[depth("Active")] == 0

    async def failing(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=500, text="receiver down")

    receiver.behaviour = failing
    reg = await world.register(receiver.url)
    await world.emit(["core/v1/dda/accounts/1", "core/v1/dda/accounts/2", "core/v1/dda/accounts/1"])

    async def suspended() -> bool:
        return (await scrape_metrics(client))[SUSPENDED] == 1

    await wait_until(suspended)
    mid = await scrape_metrics(client)
    assert delta(mid, before, "broker_resource_events_ingested_total") == 3
    assert delta(mid, before, "broker_windows_closed_total") == 1
    assert delta(mid, before, "broker_event_objects_created_total") == 1
    assert delta(mid, before, attempts("failure")) == 3  # the first try and two retries
    assert delta(mid, before, attempts("success")) == 0
    assert delta(mid, before, "broker_delivery_duration_seconds_count") == 3
    assert delta(mid, before, to("Suspended")) == 1
    assert mid[ACTIVE] == 0

    # Suspended: a new event object queues, and the queue gauges show it under Suspended (where
    # waiting is by design), not under Active (where waiting means the workers are behind).
    await world.emit(["core/v1/dda/accounts/3"])

    async def queued() -> bool:
        return (await scrape_metrics(client))[depth("Suspended")] == 1

    await wait_until(queued)
    now = await scrape_metrics(client)
    assert now[oldest("Suspended")] > 0
    assert now[depth("Active")] == 0 and now[oldest("Active")] == 0 and now[LAG] == 0

    # Restart with the receiver fixed: Restarting (API), then Active (the worker's probe).
    receiver.behaviour = None
    resp = await client.post(
        f"/webhooks/v1/registrations/{reg['id']}/restart", json={}, headers=world.partner
    )
    assert resp.status == 200, await resp.text()

    async def active_and_drained() -> bool:
        now = await scrape_metrics(client)
        return now[ACTIVE] == 1 and now[depth("Active")] == now[depth("Suspended")] == 0

    await wait_until(active_and_drained)
    after = await scrape_metrics(client)
    assert delta(after, mid, to("Restarting")) == 1
    assert delta(after, mid, to("Active")) == 1
    assert delta(after, mid, attempts("success")) == 1
    assert after[oldest("Active")] == after[oldest("Suspended")] == 0
    assert after[SUSPENDED] == 0

    # Pause and unpause are transitions too.
    for action in ("pause", "unpause"):
        resp = await client.post(
            f"/webhooks/v1/registrations/{reg['id']}/{action}", headers=world.partner
        )
        assert resp.status == 200
    final = await scrape_metrics(client)
    assert delta(final, after, to("Paused")) == 1
    assert delta(final, after, to("Active")) == 1


async def test_a_window_kept_open_by_duplicates_is_not_counted_as_closed(make_client, receiver):
    # Three copies of one resource reach the size rule's estimate (3) and make the group due at
    # once; the aggregator re-counts one distinct resource and keeps the window open. Only the
    # real close, after the quiet period, counts.
    client = await make_client(workers=True, window_max_resources=3, window_min_seconds=0.5)
    world = await make_world(client)
    await world.register(receiver.url)
    before = await scrape_metrics(client)
    await world.emit(["core/v1/dda/accounts/9"] * 3)
    [delivery] = await receiver.wait_for(1)
    assert delivery.json()["resources"] == ["core/v1/dda/accounts/9"]
    after = await scrape_metrics(client)
    assert delta(after, before, "broker_windows_closed_total") == 1
    assert delta(after, before, "broker_event_objects_created_total") == 1


async def test_idempotent_replays_are_not_counted_as_ingested(client):
    world = await make_world(client)
    before = await scrape_metrics(client)
    for _ in range(2):
        await world.emit(["core/v1/dda/accounts/1"], **{"Idempotency-Key": "batch-1"})
    after = await scrape_metrics(client)
    assert delta(after, before, "broker_resource_events_ingested_total") == 1


async def test_metrics_expose_every_series_before_any_traffic(client):
    samples = await scrape_metrics(client)
    for status in ("Active", "Suspended", "Restarting", "Paused", "Deleted"):
        assert to(status) in samples
        assert f'broker_registrations{{status="{status}"}}' in samples
    for name in (
        attempts("success"),
        attempts("failure"),
        "broker_resource_events_ingested_total",
        "broker_windows_closed_total",
        "broker_event_objects_created_total",
        "broker_delivery_duration_seconds_count",
        depth("Active"),
        oldest("Active"),
        LAG,
    ):
        assert name in samples, name


async def test_delivery_lag_shows_due_work_no_worker_has_claimed(client, receiver, db, db_url):
    # No workers in this app: an Active registration's event, due five seconds ago, waits.
    world = await make_world(client)
    reg = await world.register(receiver.url)
    await db.execute(
        """WITH e AS (
               INSERT INTO events (id, partner_id, registration_id, event_name)
               VALUES (broker_uuid7(now() - interval '6 seconds'), $1::uuid, $2::uuid,
                       'Core.Account.Opened')
               RETURNING id, registration_id, created_at)
           INSERT INTO delivery_queue (event_id, registration_id, created_at, next_attempt_at)
           SELECT id, registration_id, created_at, now() - interval '5 seconds' FROM e""",
        world.partner_id,
        reg["id"],
    )
    await refresh_gauges_once(db_url)
    samples = await scrape_metrics(client)
    assert samples[depth("Active")] == 1
    assert samples[LAG] >= 5
    assert samples[oldest("Active")] >= 6


async def test_a_scrape_serves_the_last_snapshot_and_never_reads_the_queue(client, db, db_url):
    # This app runs no housekeeping: nothing refreshes the gauges but the job run here.
    world = await make_world(client)
    reg = await world.register("http://127.0.0.1:9/a")
    assert (await scrape_metrics(client))[AGE] == -1  # no snapshot taken yet
    await refresh_gauges_once(db_url)
    first = await scrape_metrics(client)
    assert first[depth("Active")] == 0 and first[ACTIVE] == 1
    assert 0 <= first[AGE] < 60
    await db.execute(
        """WITH e AS (
               INSERT INTO events (id, partner_id, registration_id, event_name)
               SELECT broker_uuid7(now()), $1::uuid, $2::uuid, 'Core.Account.Opened'
               FROM generate_series(1, 3)
               RETURNING id, registration_id, created_at)
           INSERT INTO delivery_queue (event_id, registration_id, created_at, next_attempt_at)
           SELECT id, registration_id, created_at, now() FROM e""",
        world.partner_id,
        reg["id"],
    )
    # Scrapes between two refreshes serve the snapshot, however often they come.
    for _ in range(3):
        assert (await scrape_metrics(client))[depth("Active")] == 0
    await refresh_gauges_once(db_url)
    assert (await scrape_metrics(client))[depth("Active")] == 3


async def test_housekeeping_keeps_the_gauges_fresh(make_client, db):
    client = await make_client(workers=True, gauge_refresh_seconds=0.1)
    world = await make_world(client)
    await world.register("http://127.0.0.1:9/a")

    async def counted() -> bool:
        samples = await scrape_metrics(client)
        return samples[ACTIVE] == 1 and 0 <= samples[AGE] < 5

    await wait_until(counted)


async def test_pending_past_the_ttl_becomes_failed_history(client, db, db_url):
    """BROKER_PENDING_TTL_DAYS: a Suspended registration's old queued event objects expire into
    Failed (and leave the queue); newer ones and one with an attempt in flight stay queued."""
    world = await make_world(client)
    reg = await world.register("http://127.0.0.1:9/a")
    await db.execute("UPDATE registrations SET status = 'Suspended' WHERE id = $1::uuid", reg["id"])
    ages = {"old": 31, "fresh": 29, "leased": 40}
    await db.execute(
        "SELECT broker_ensure_history_partitions((now() - interval '41 days')::date, now()::date)"
    )
    ids = {}
    for name, days in ages.items():
        ids[name] = await db.fetchval(
            """WITH e AS (
                   INSERT INTO events (id, partner_id, registration_id, event_name)
                   VALUES (broker_uuid7(now() - make_interval(days => $3)), $1::uuid, $2::uuid,
                           'Core.Account.Opened')
                   RETURNING id, registration_id, created_at)
               INSERT INTO delivery_queue (event_id, registration_id, created_at, next_attempt_at,
                                           locked_until, locked_by)
               SELECT id, registration_id, created_at, now(),
                      CASE WHEN $4 THEN now() + interval '1 minute' END,
                      CASE WHEN $4 THEN 'w1' END FROM e
               RETURNING event_id""",
            world.partner_id,
            reg["id"],
            days,
            name == "leased",
        )
    pool = await create_pool(db_url, size=2)
    try:
        housekeeping = Housekeeping(Store(pool), make_settings(pending_ttl_days=30))
        assert await housekeeping.expire_pending_events() == 1
        assert (
            await Housekeeping(
                Store(pool), make_settings(pending_ttl_days=0)
            ).expire_pending_events()
            == 0
        )
    finally:
        await pool.close()
    status = {
        name: await db.fetchval("SELECT status FROM events WHERE id = $1", ident)
        for name, ident in ids.items()
    }
    assert status == {"old": "Failed", "fresh": "Pending", "leased": "Pending"}
    queued = {r["event_id"] for r in await db.fetch("SELECT event_id FROM delivery_queue")}
    assert queued == {ids["fresh"], ids["leased"]}
    resp = await client.get("/webhooks/v1/events?status=Failed", headers=world.partner)
    assert [e["id"] for e in (await resp.json())["data"]] == [str(ids["old"])]
