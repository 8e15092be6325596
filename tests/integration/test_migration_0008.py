"""Migration 0008 (operational events) upgrades a database in place.

Built with every migration before 0008, filled with a registration matching "*", a queued event
and a catalog entry, then upgraded: the rows are kept, the Broker.* types join the catalog, and
from then on a status change in that database writes exactly one outbox row.
"""

from __future__ import annotations

import uuid

from broker.domain.ids import uuid7
from broker.domain.operational import EVENT_TYPES
from broker.store.db import migrate
from tests.conftest import migrations_before

VERSION = "0008"


async def test_0008_adds_the_broker_types_and_starts_emitting_on_the_existing_rows(
    migration_conn, tmp_path
):
    await migrate(migration_conn, migrations_before(VERSION, tmp_path))
    partner, reg, event = uuid.uuid4(), uuid.uuid4(), uuid7()  # broker made uuid7 event ids
    await migration_conn.execute("INSERT INTO partners (id, name) VALUES ($1, 'Acme')", partner)
    await migration_conn.execute(
        """INSERT INTO registrations (id, partner_id, url, event_types, secret_sealed)
           VALUES ($1, $2, 'https://example.com/hook', '{*}', 'whsec_x'::bytea)""",
        reg,
        partner,
    )
    await migration_conn.execute(
        """INSERT INTO events (id, partner_id, registration_id, event_name, resources)
           VALUES ($1, $2, $3, 'Core.Account.Opened', '{a/1}')""",
        event,
        partner,
        reg,
    )
    await migration_conn.execute("INSERT INTO event_types (name) VALUES ('Core.Account.Opened')")
    before = [dict(r) for r in await migration_conn.fetch("SELECT * FROM registrations")]

    applied = await migrate(migration_conn)

    assert applied[0].startswith(VERSION)
    assert [dict(r) for r in await migration_conn.fetch("SELECT * FROM registrations")] == before
    names = {r["name"] for r in await migration_conn.fetch("SELECT name FROM event_types")}
    assert names >= {*EVENT_TYPES, "Core.Account.Opened", "test.event"}
    # Nothing was emitted by the upgrade itself.
    assert await migration_conn.fetchval("SELECT count(*) FROM operational_outbox") == 0
    await migration_conn.execute("UPDATE events SET status = 'Failed' WHERE id = $1", event)
    await migration_conn.execute("UPDATE registrations SET status = 'Suspended' WHERE id = $1", reg)
    await migration_conn.execute("UPDATE registrations SET status = 'Suspended' WHERE id = $1", reg)
    rows = await migration_conn.fetch(
        "SELECT partner_id, event_name, resource FROM operational_outbox ORDER BY id"
    )
    assert [tuple(r) for r in rows] == [
        (partner, "Broker.Event.Failed", f"webhooks/v1/events/{event}"),
        (partner, "Broker.Registration.Suspended", f"webhooks/v1/registrations/{reg}"),
    ]
