"""Schema migrations on a fresh, empty database: applied once, recorded, safe to race."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from broker.domain.ids import uuid7
from broker.domain.operational import EVENT_TYPES
from broker.store.db import MIGRATION_LOCK_ID, is_migrated, load_migrations, migrate
from tests.conftest import TEST_KEYS, scratch_database

TABLES = {
    "partners",
    "api_keys",
    "event_types",
    "registrations",
    "resource_events",
    "window_groups",
    "events",
    "attempts",
    "idempotency_keys",
    "schema_migrations",
}


@pytest.fixture
async def empty_db_url(base_database_url: str) -> AsyncIterator[str]:
    """A brand-new database with no tables at all (not a copy of the migrated template)."""
    async with scratch_database(base_database_url, prefix="broker_m") as url:
        yield url


@pytest.fixture
async def conn(empty_db_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(empty_db_url)
    yield connection
    await connection.close()


async def tables(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {r["tablename"] for r in rows}


async def lock_is_free(conn: asyncpg.Connection) -> bool:
    """True when nobody holds the migration lock (checked from another session)."""
    got = await conn.fetchval("SELECT pg_try_advisory_lock($1)", MIGRATION_LOCK_ID)
    if got:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
    return bool(got)


async def test_migrating_an_empty_database_creates_and_records_everything(conn):
    assert await tables(conn) == set()
    assert not await is_migrated(conn)
    applied = await migrate(conn)
    on_disk = load_migrations()
    assert applied == [m.name for m in on_disk]
    assert await tables(conn) >= TABLES
    rows = await conn.fetch("SELECT version, name, applied_at FROM schema_migrations ORDER BY 1")
    assert [(r["version"], r["name"]) for r in rows] == [(m.version, m.name) for m in on_disk]
    assert all(r["applied_at"] is not None for r in rows)
    assert await is_migrated(conn)
    assert await conn.fetchval("SELECT count(*) FROM event_types WHERE name = 'test.event'") == 1
    assert await lock_is_free(conn)


async def test_migrating_twice_is_a_no_op(conn):
    await migrate(conn)
    before = await conn.fetch("SELECT * FROM schema_migrations ORDER BY version")
    await conn.execute("INSERT INTO partners (id, name) VALUES ($1, 'kept')", uuid.uuid4())
    assert await migrate(conn) == []
    after = await conn.fetch("SELECT * FROM schema_migrations ORDER BY version")
    assert [dict(r) for r in after] == [dict(r) for r in before]
    assert await conn.fetchval("SELECT count(*) FROM partners") == 1
    assert await conn.fetchval("SELECT count(*) FROM event_types") == 1 + len(EVENT_TYPES)


async def test_concurrent_migrations_take_turns_and_apply_once(empty_db_url):
    conns = [await asyncpg.connect(empty_db_url) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
        names = [m.name for m in load_migrations()]
        # exactly one caller applied everything; the others found it done
        assert sorted(results, key=len) == [[], [], names]
        assert await conns[0].fetchval("SELECT count(*) FROM schema_migrations") == len(names)
        assert await conns[0].fetchval("SELECT count(*) FROM event_types") == 1 + len(EVENT_TYPES)
        assert await is_migrated(conns[1])
        assert await lock_is_free(conns[2])
    finally:
        for c in conns:
            await c.close()


async def test_a_failing_migration_rolls_back_records_nothing_and_frees_the_lock(
    conn, empty_db_url, tmp_path: Path
):
    (tmp_path / "0001_good.sql").write_text("CREATE TABLE first (id int);")
    (tmp_path / "0002_bad.sql").write_text(
        "CREATE TABLE second (id int);\nSELECT no_such_function();"
    )
    with pytest.raises(asyncpg.PostgresError):
        await migrate(conn, tmp_path)
    assert await tables(conn) == {"schema_migrations", "first"}  # "second" rolled back
    versions = [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")]
    assert versions == ["0001"]
    other = await asyncpg.connect(empty_db_url)
    try:
        assert await lock_is_free(other)
    finally:
        await other.close()
    # fixed on disk, the next run applies only what is missing
    (tmp_path / "0002_bad.sql").write_text("CREATE TABLE second (id int);")
    assert await migrate(conn, tmp_path) == ["0002_bad"]
    assert {"first", "second"} <= await tables(conn)


def test_migration_files_are_checked(tmp_path: Path):
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0001_b.sql").write_text("SELECT 1;")
    with pytest.raises(RuntimeError, match="share a version"):
        load_migrations(tmp_path)
    (tmp_path / "0001_b.sql").unlink()
    (tmp_path / "2_bad-name.sql").write_text("SELECT 1;")
    with pytest.raises(RuntimeError, match=r"2_bad-name\.sql"):
        load_migrations(tmp_path)


def test_shipped_migrations_are_ordered_and_named():
    found = load_migrations()
    assert found, "no migrations in sql/migrations"
    versions = [m.version for m in found]
    assert versions == sorted(versions)
    assert versions[0] == "0001"


async def test_0004_upgrades_windows_and_history_in_place(conn, tmp_path: Path):
    """A database made by the previous release, with open windows and history, upgrades: each
    window's queued_count is its resource events, history keeps its rows and gets its indexes."""
    from broker.store.db import MIGRATIONS_DIR

    for path in MIGRATIONS_DIR.glob("*.sql"):
        if path.name < "0004":
            (tmp_path / path.name).write_text(path.read_text())
    await migrate(conn, tmp_path)
    partner, reg = uuid.uuid4(), uuid.uuid4()
    await conn.execute("INSERT INTO partners (id, name) VALUES ($1, 'Acme')", partner)
    await conn.execute(
        "INSERT INTO registrations (id, partner_id, url, event_types, secret_sealed)"
        " VALUES ($1, $2, 'https://example.com/h', '{*}', 'enc'::bytea)",
        reg,
        partner,
    )
    await conn.execute(
        "INSERT INTO resource_events (partner_id, event_name, resource)"
        " SELECT $1, 'E' || (g % 2), 'r' || g FROM generate_series(1, 5) AS g",
        partner,
    )
    await conn.execute(
        "INSERT INTO window_groups (partner_id, event_name, opened_at, last_event_at,"
        " pending_count, due_at) SELECT $1, e, now(), now(), 9, now() FROM unnest('{E0,E1}'::text[]) e",
        partner,
    )
    await conn.execute(
        "INSERT INTO events (id, partner_id, registration_id, event_name, resources, status)"
        " VALUES (gen_random_uuid(), $1, $2, 'E0', '{r1}', 'Failed')",
        partner,
        reg,
    )
    assert await migrate(conn) == [m.name for m in load_migrations() if m.version >= "0004"]
    groups = await conn.fetch(
        "SELECT event_name, pending_count, queued_count, consumed_through FROM window_groups"
        " ORDER BY event_name"
    )
    assert [tuple(g) for g in groups] == [("E0", 9, 2, 0), ("E1", 9, 3, 0)]
    assert await conn.fetchval("SELECT count(*) FROM events WHERE status = 'Failed'") == 1
    indexes = {
        r["indexname"]
        for r in await conn.fetch("SELECT indexname FROM pg_indexes WHERE tablename = 'events'")
    }
    # 0011 made them again on the partitioned table, ordered by id (created_at is the id's).
    assert {
        "events_partner_status",
        "events_partner_name_status",
        "events_partner_registration_status",
        "events_partner_registration_name_status",
    } <= indexes
    assert not {"events_partner_created", "events_partner_name_created"} & indexes


async def test_0002_moves_pending_events_and_their_counters_into_the_delivery_queue(
    conn, tmp_path: Path
):
    """A database made by the previous release upgrades in place: its Pending events, with their
    attempt counters, due times and leases, become delivery_queue rows; each registration with
    queued work gets a ready row (parked when it may not be attempted)."""
    from broker.store.db import MIGRATIONS_DIR

    (tmp_path / "0001_initial.sql").write_text((MIGRATIONS_DIR / "0001_initial.sql").read_text())
    await migrate(conn, tmp_path)
    partner, active, suspended = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await conn.execute("INSERT INTO partners (id, name) VALUES ($1, 'p')", partner)
    for reg, status in ((active, "Active"), (suspended, "Suspended")):
        await conn.execute(
            "INSERT INTO registrations (id, partner_id, url, event_types, status, secret)"
            " VALUES ($1, $2, 'https://example.com/h', '{*}', $3, 'whsec_x')",
            reg,
            partner,
            status,
        )
    retrying, leased, parked, done = (uuid7() for _ in range(4))  # broker's ids are uuid7
    rows = (
        (retrying, active, "Pending", 2, 2, "now() + interval '30 seconds'", "NULL", "NULL"),
        (leased, active, "Pending", 1, 1, "now() - interval '1 minute'",
         "now() + interval '1 minute'", "'w1'"),
        (parked, suspended, "Pending", 3, 0, "now() - interval '1 hour'", "NULL", "NULL"),
        (done, active, "Success", 1, 1, "now()", "NULL", "NULL"),
    )  # fmt: skip
    for event_id, reg, status, attempts, rounds, due, locked_until, locked_by in rows:
        await conn.execute(
            "INSERT INTO events (id, partner_id, registration_id, event_name, resources, status,"
            " attempt_count, round_attempts, next_attempt_at, locked_until, locked_by,"
            " last_attempted_at)"
            f" VALUES ($1, $2, $3, 'E', '{{r}}', $4, $5, $6, {due}, {locked_until}, {locked_by},"
            " now() - interval '2 minutes')",
            event_id,
            partner,
            reg,
            status,
            attempts,
            rounds,
        )
    await conn.execute(
        "INSERT INTO attempts (event_id, attempt_number, attempted_at, duration_ms)"
        " VALUES ($1, 1, now(), 3)",
        done,
    )

    # 0003 seals the secrets of these rows, so it needs the key ring
    assert await migrate(conn, keys=TEST_KEYS) == [m.name for m in load_migrations()[1:]]

    queue = {
        r["event_id"]: r
        for r in await conn.fetch(
            "SELECT q.*, q.next_attempt_at > now() AS in_future FROM delivery_queue q"
        )
    }
    assert set(queue) == {retrying, leased, parked}  # Success is history only
    assert (queue[retrying]["attempt_count"], queue[retrying]["round_attempts"]) == (2, 2)
    assert queue[retrying]["in_future"] and queue[retrying]["locked_until"] is None
    assert queue[leased]["locked_by"] == "w1" and queue[leased]["locked_until"] is not None
    assert (queue[parked]["attempt_count"], queue[parked]["registration_id"]) == (3, suspended)
    ready = {
        r["registration_id"]: r
        for r in await conn.fetch(
            "SELECT registration_id, in_flight, next_due_at = 'infinity' AS parked"
            " FROM delivery_ready"
        )
    }
    assert ready[active]["in_flight"] == 1 and not ready[active]["parked"]
    assert ready[suspended]["in_flight"] == 0 and ready[suspended]["parked"]
    # History keeps what partners page through; the queue columns are gone from it.
    kept = await conn.fetchrow("SELECT * FROM events WHERE id = $1", done)
    assert (kept["status"], kept["attempt_count"]) == ("Success", 1)
    assert "locked_until" not in dict(kept) and "next_attempt_at" not in dict(kept)
    assert await conn.fetchval("SELECT count(*) FROM attempts") == 1
