"""Day-partitioned history (migration 0011), as PostgreSQL holds it: a window's resources are
stored once however many registrations it fans out to, housekeeping makes the day partitions
ahead, and retention drops whole days (events, attempts, windows), never one still holding
queued work.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from broker.domain.ids import utcnow
from broker.store.db import create_pool
from broker.store.store import Store
from tests.conftest import TEST_KEYS, insert_event_rows, make_world, wait_until


async def partitions(db: Any, table: str) -> set[date]:
    rows = await db.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = $1::regclass",
        table,
    )
    return {date(int(n[-8:-4]), int(n[-4:-2]), int(n[-2:])) for n in (r["relname"] for r in rows)}


async def test_a_window_fanned_out_to_three_registrations_stores_its_resources_once(
    make_client, receiver, db
):
    client = await make_client(workers=True, window_min_seconds=0.2, window_max_seconds=1)
    world = await make_world(client)
    regs = [await world.register(receiver.url) for _ in range(3)]
    resources = [f"core/v1/dda/accounts/{i}" for i in range(50)]
    await world.emit(resources)

    async def made() -> bool:
        return await db.fetchval("SELECT count(*) FROM events") == 3

    await wait_until(made)
    assert await db.fetchval("SELECT count(*) FROM windows") == 1
    assert await db.fetchval("SELECT count(DISTINCT window_id) FROM events") == 1
    for reg in regs:
        resp = await client.get(
            f"/webhooks/v1/events?registrationId={reg['id']}", headers=world.partner
        )
        [event] = (await resp.json())["data"]
        assert event["resources"] == resources


async def test_housekeeping_makes_the_day_partitions_ahead(db_url, db):
    pool = await create_pool(db_url, size=2)
    try:
        store = Store(pool, keys=TEST_KEYS)
        today = utcnow().date()
        made = await store.ensure_history_partitions(days_ahead=10)
        assert made == 8 * 3  # days 3 to 10 ahead, for windows, events and attempts
        assert await store.ensure_history_partitions(days_ahead=10) == 0
        for table in ("windows", "events", "attempts"):
            days = await partitions(db, table)
            assert {today + timedelta(days=d) for d in range(-1, 11)} <= days
    finally:
        await pool.close()


async def test_retention_drops_whole_days_and_keeps_a_day_with_queued_work(client, db, db_url):
    world = await make_world(client)
    reg = (await world.register("http://127.0.0.1:9/a"))["id"]
    now = utcnow()

    def row(days_ago: float, status: str) -> dict[str, Any]:
        return {
            "partner_id": world.partner_id,
            "registration_id": reg,
            "event_name": world.event_name,
            "resources": ["r/1"],
            "status": status,
            "created_at": now - timedelta(days=days_ago),
        }

    delivered = await insert_event_rows(db, [row(40, "Success"), row(35, "Failed")])
    [queued] = await insert_event_rows(db, [row(38, "Pending")], queued=True)
    [recent] = await insert_event_rows(db, [row(29, "Success")])
    await db.executemany(
        "INSERT INTO attempts (event_id, attempt_number, attempted_at, duration_ms)"
        " VALUES ($1, 1, now(), 5)",
        [(i,) for i in [*delivered, queued, recent]],
    )
    day = {n: (now - timedelta(days=n)).date() for n in (40, 38, 35, 29)}
    pool = await create_pool(db_url, size=2)
    try:
        store = Store(pool, keys=TEST_KEYS)
        result = await store.drop_expired_history(30)
        assert {day[40], day[35]} <= set(result.dropped)
        assert result.kept_queued == [day[38]]
        for table in ("events", "attempts"):
            kept = await partitions(db, table)
            assert day[38] in kept and day[29] in kept
            assert not {day[40], day[35]} & kept
        # A window goes with the last day that can reference it (its own and the next).
        windows = await partitions(db, "windows")
        assert day[40] not in windows and day[38] in windows
        left = {r["id"] for r in await db.fetch("SELECT id FROM events")}
        assert left == {queued, recent}
        assert await db.fetchval("SELECT count(*) FROM attempts") == 2
        resp = await client.get(f"/webhooks/v1/events/{delivered[0]}", headers=world.partner)
        assert resp.status == 404

        # Once its queued event is done, that day goes too.
        await db.execute("DELETE FROM delivery_queue WHERE event_id = $1", queued)
        await db.execute("UPDATE events SET status = 'Failed' WHERE id = $1", queued)
        result = await store.drop_expired_history(30)
        assert result.dropped == [day[38]] and result.kept_queued == []
        assert {r["id"] for r in await db.fetch("SELECT id FROM events")} == {recent}
    finally:
        await pool.close()
