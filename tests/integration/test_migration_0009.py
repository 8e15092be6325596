"""Migration 0009 (attempt rollups) upgrades a database in place: the attempts already recorded
are rolled up, so the stats of an upgraded broker start with its history, not from zero.

Built with every migration before 0009 and filled with attempts of several ages and outcomes,
then upgraded: each row of attempt_rollups is checked against the attempts it stands for.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from broker.domain import latency
from broker.store.db import migrate
from tests.conftest import migrations_before

VERSION = "0009"


def start(at: datetime, minutes: int) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    width = timedelta(minutes=minutes)
    return epoch + (at - epoch) // width * width


async def test_0009_rolls_up_the_attempts_already_recorded(migration_conn, tmp_path):
    await migrate(migration_conn, migrations_before(VERSION, tmp_path))
    partner, reg = uuid.uuid4(), uuid.uuid4()
    await migration_conn.execute("INSERT INTO partners (id, name) VALUES ($1, 'Acme')", partner)
    await migration_conn.execute(
        """INSERT INTO registrations (id, partner_id, url, event_types, secret_sealed)
           VALUES ($1, $2, 'https://example.com/hook', '{Core.*}', 'x'::bytea)""",
        reg,
        partner,
    )
    now = datetime.now(UTC)
    recent = now - timedelta(minutes=5)
    # (attempted_at, duration_ms, response_status, error, placeholder)
    attempts = [
        (recent, 12, 200, None, False),
        (recent, 12, 204, None, False),
        (recent, 300, 500, "HTTP 500", False),
        (recent, 2000, None, "timeout after 2s", False),
        (recent, 0, None, "no result was recorded: the worker stopped", True),  # not counted
        (now - timedelta(hours=3), 40, 200, None, False),  # past the 1-minute rows' 2 hours
        (now - timedelta(days=10), 40, 200, None, False),  # past every period: not rolled up
    ]
    for at, ms, status, error, placeholder in attempts:
        event = uuid.uuid4()
        await migration_conn.execute(
            """INSERT INTO events (id, partner_id, registration_id, event_name, resources,
                                   status, created_at)
               VALUES ($1, $2, $3, 'Core.Account.Opened', '{a/1}', 'Success', $4)""",
            event,
            partner,
            reg,
            at,
        )
        await migration_conn.execute(
            """INSERT INTO attempts (event_id, attempt_number, attempted_at, duration_ms,
                                     response_status, error, placeholder)
               VALUES ($1, 1, $2, $3, $4, $5, $6)""",
            event,
            at,
            ms,
            status,
            error,
            placeholder,
        )

    applied = await migrate(migration_conn)
    assert any(name.startswith(VERSION) for name in applied)

    rows = {
        (r["width_minutes"], r["bucket_start"]): (r["success"], r["failure"], r["latency"])
        for r in await migration_conn.fetch(
            "SELECT * FROM attempt_rollups WHERE registration_id = $1", reg
        )
    }

    def histogram(*ms: int) -> list[int]:
        counts = [0] * latency.BUCKETS
        for m in ms:
            counts[latency.bucket_of(m)] += 1
        return counts

    recent_rollup = (2, 2, histogram(12, 12, 300, 2000))
    expected = {(1, start(recent, 1)): recent_rollup}
    three_hours = start(now - timedelta(hours=3), 24)
    if start(recent, 24) == three_hours:  # not possible (3 h apart), kept honest anyway
        raise AssertionError("buckets overlap")
    expected[(24, start(recent, 24))] = recent_rollup
    expected[(24, three_hours)] = (1, 0, histogram(40))
    assert rows == expected


async def test_the_sql_latency_buckets_are_the_python_ones(migration_conn):
    await migrate(migration_conn)
    values = list(range(0, 2000)) + [10**k for k in range(4, 9)] + [56_000, 57_000, 2**31 - 1]
    sql = await migration_conn.fetch(
        "SELECT ms, broker_latency_bucket(ms) AS b FROM unnest($1::int[]) AS ms", values
    )
    assert {r["ms"]: r["b"] for r in sql} == {v: latency.bucket_of(v) for v in values}
