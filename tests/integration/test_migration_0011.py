"""Migration 0011 (day-partitioned history, resources once per window) upgrades a database in
place: every event object, attempt and queue row of the release before moves into the
partitioned tables, a window's copies of its resources become one windows row, and the events
API shows what it showed before.

Built with every migration before 0011 and filled the way that release filled it: one window
closed into event objects for two registrations (two copies of its resources), an older
delivered event with its attempts, a queued one with a lease, a test delivery, and one row with
a hand-made (uuid4) id.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from broker.domain.ids import uuid7_at, uuid7_time
from broker.store.db import migrate
from tests.conftest import migrations_before

VERSION = "0011"


async def test_0011_moves_history_into_day_partitions_and_stores_resources_once(
    migration_conn, tmp_path
):
    db = migration_conn
    await migrate(db, migrations_before(VERSION, tmp_path))
    partner, reg_a, reg_b = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await db.execute("INSERT INTO partners (id, name) VALUES ($1, 'Acme')", partner)
    for reg in (reg_a, reg_b):
        await db.execute(
            """INSERT INTO registrations (id, partner_id, url, event_types, secret_sealed)
               VALUES ($1, $2, 'https://example.com/hook', '{Core.*}', 'x'::bytea)""",
            reg,
            partner,
        )
    now = datetime.now(UTC)
    closed_at = now - timedelta(days=3, hours=2)  # one window, two event objects
    window = ["core/v1/accounts/1", "core/v1/accounts/2"]
    fan_out = [uuid7_at(closed_at + timedelta(milliseconds=3 + i)) for i in range(2)]
    old = uuid7_at(now - timedelta(days=9))
    queued = uuid7_at(now - timedelta(minutes=5))
    test_event = uuid7_at(now - timedelta(minutes=1))
    hand_made = uuid.uuid4()
    rows = [
        (fan_out[0], reg_a, "Core.Account.Opened", window, "Success", closed_at),
        (fan_out[1], reg_b, "Core.Account.Opened", window, "Failed", closed_at),
        (old, reg_a, "Core.Card.Issued", ["core/v1/cards/9"], "Success", now - timedelta(days=9)),
        (queued, reg_b, "Core.Card.Issued", ["core/v1/cards/7"], "Pending", now - timedelta(minutes=5)),
        (test_event, reg_a, "test.event", [], "Success", now - timedelta(minutes=1)),
        (hand_made, reg_a, "Core.Card.Issued", ["core/v1/cards/8"], "Pending", now - timedelta(hours=1)),
    ]  # fmt: skip
    for event_id, reg, name, resources, status, created in rows:
        await db.execute(
            """INSERT INTO events (id, partner_id, registration_id, event_name, resources,
                                   status, created_at, attempt_count)
               VALUES ($1, $2, $3, $4, $5, $6, $7, 1)""",
            event_id,
            partner,
            reg,
            name,
            resources,
            status,
            created,
        )
        await db.execute(
            """INSERT INTO attempts (event_id, attempt_number, attempted_at, duration_ms,
                                     response_status)
               VALUES ($1, 1, $2, 7, 200)""",
            event_id,
            created,
        )
    for event_id, reg in ((queued, reg_b), (hand_made, reg_a)):
        await db.execute(
            """INSERT INTO delivery_queue (event_id, registration_id, created_at,
                                           next_attempt_at, attempt_count, locked_until,
                                           locked_by)
               VALUES ($1, $2, now(), now(), 1, now() + interval '1 minute', 'w1')""",
            event_id,
            reg,
        )

    applied = await migrate(db)
    assert [name[:4] for name in applied] == [VERSION]

    # Every event object is there, in the partition of its creation day.
    events = {
        r["id"]: r
        for r in await db.fetch(
            "SELECT o.*, e.tableoid::regclass::text AS part"
            " FROM event_objects o JOIN events e USING (id)"
        )
    }
    assert len(events) == len(rows)
    rekeyed = (set(events) - {r[0] for r in rows}).pop()  # the uuid4 row got a uuid7
    assert rekeyed.version == 7
    assert abs(uuid7_time(rekeyed) - (now - timedelta(hours=1))) < timedelta(seconds=1)
    for event_id, _reg, name, resources, status, _created in rows:
        row = events[rekeyed if event_id == hand_made else event_id]
        assert (row["event_name"], list(row["resources"]), row["status"]) == (
            name,
            resources,
            status,
        )
        assert row["created_at"] == uuid7_time(row["id"])  # derived from the id now
        assert row["part"] == f"events_p{uuid7_time(row['id']):%Y%m%d}"
    # The window's two copies became one row; the test delivery has none.
    assert await db.fetchval("SELECT count(*) FROM windows") == 4
    assert events[fan_out[0]]["window_id"] == events[fan_out[1]]["window_id"] == fan_out[0]
    assert events[test_event]["window_id"] is None
    # Attempts and queue rows followed their events (the rekeyed one too).
    attempts = await db.fetch("SELECT event_id, attempt_number, duration_ms FROM attempts")
    assert sorted((a["event_id"], a["attempt_number"]) for a in attempts) == sorted(
        (i, 1) for i in events
    )
    queue = {
        r["event_id"]: r
        for r in await db.fetch("SELECT event_id, locked_by, created_at FROM delivery_queue")
    }
    assert set(queue) == {queued, rekeyed}
    assert all(q["locked_by"] == "w1" for q in queue.values())
    assert all(q["created_at"] == uuid7_time(i) for i, q in queue.items())
    # Partitions exist from the oldest day of history to two days ahead, and nothing is left of
    # the old tables.
    parts = {
        r["relname"]
        for r in await db.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'events'::regclass"
        )
    }
    day = (now - timedelta(days=9)).date()
    while day <= (now + timedelta(days=2)).date():
        assert f"events_p{day:%Y%m%d}" in parts
        day += timedelta(days=1)
    assert await db.fetchval("SELECT to_regclass('events_v10')") is None
    assert await db.fetchval("SELECT to_regclass('attempts_v10')") is None
