"""Migration 0007 (per-registration delivery policy) upgrades a database in place.

Built with every migration before 0007, filled with a registration and its queued event, then
upgraded: the rows are kept, every policy column reads "global default", the new failure
counter starts from the old one, and the contract's ranges hold as constraints.
"""

from __future__ import annotations

import json
import uuid

import asyncpg
import pytest

from broker.domain.ids import uuid7
from broker.store.db import migrate
from tests.conftest import migrations_before

VERSION = "0007"


async def test_0007_keeps_registrations_and_defaults_every_policy_field(migration_conn, tmp_path):
    await migrate(migration_conn, migrations_before(VERSION, tmp_path))
    partner, reg, event = uuid.uuid4(), uuid.uuid4(), uuid7()  # broker made uuid7 event ids
    await migration_conn.execute("INSERT INTO partners (id, name) VALUES ($1, 'Acme')", partner)
    await migration_conn.execute(
        """INSERT INTO registrations (id, partner_id, url, event_types, secret_sealed,
                                      failure_count)
           VALUES ($1, $2, 'https://example.com/hook', '{Core.*}', 'whsec_x'::bytea, 3)""",
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
    before = dict(await migration_conn.fetchrow("SELECT * FROM registrations WHERE id = $1", reg))

    applied = await migrate(migration_conn)
    assert any(name.startswith(VERSION) for name in applied)

    after = dict(await migration_conn.fetchrow("SELECT * FROM registrations WHERE id = $1", reg))
    assert {k: after[k] for k in before} == before
    added = {k: v for k, v in after.items() if k not in before}
    added["extra_headers"] = json.loads(added["extra_headers"])  # jsonb arrives as text here
    assert added == {
        "delivery_timeout_seconds": None,
        "retry_schedule": None,
        "suspend_after_consecutive_failures": None,
        "rate_limit_per_second": None,
        "delivery_ordering": None,
        "signature_scheme": None,
        "signature_header": None,
        "signature_prefix": None,
        "signature_timestamp_header": None,
        "extra_headers": {},
        "consecutive_failures": 3,  # starts from failure_count
    }
    assert await migration_conn.fetchval("SELECT count(*) FROM events WHERE id = $1", event) == 1


@pytest.mark.parametrize(
    "assignment",
    [
        "delivery_timeout_seconds = 0.5",
        "delivery_timeout_seconds = 31",
        "retry_schedule = array_fill(1::float8, ARRAY[21])",
        "retry_schedule = '{0, 86401}'",
        "retry_schedule = '{-1}'",
        "retry_schedule = '{1, NULL}'",
        "retry_schedule = '{{1, 2}, {3, 4}}'",
        "suspend_after_consecutive_failures = 0",
        "rate_limit_per_second = 0.01",
        "delivery_ordering = 'random'",
        "signature_scheme = 'sha1'",
        "signature_header = 'X-Sig'",  # only with hmac-sha256-hex
        "extra_headers = '[]'",
    ],
)
async def test_0007_constraints_refuse_values_outside_the_contract(migration_conn, assignment):
    await migrate(migration_conn)
    partner, reg = uuid.uuid4(), uuid.uuid4()
    await migration_conn.execute("INSERT INTO partners (id, name) VALUES ($1, 'Acme')", partner)
    await migration_conn.execute(
        """INSERT INTO registrations (id, partner_id, url, event_types, secret_sealed)
           VALUES ($1, $2, 'https://example.com/hook', '{*}', 'whsec_x'::bytea)""",
        reg,
        partner,
    )
    with pytest.raises(asyncpg.CheckViolationError):
        await migration_conn.execute(f"UPDATE registrations SET {assignment} WHERE id = $1", reg)
    # and the contract's own example is stored as it is
    await migration_conn.execute(
        """UPDATE registrations SET delivery_timeout_seconds = 5,
               retry_schedule = '{30, 300, 1800, 7200}', suspend_after_consecutive_failures = 5,
               rate_limit_per_second = 50, delivery_ordering = 'fifo',
               signature_scheme = 'hmac-sha256-hex', signature_header = 'X-Aerostic-Signature',
               signature_prefix = 'sha256=', extra_headers = '{"X-Tenant": "acme"}'
           WHERE id = $1""",
        reg,
    )
