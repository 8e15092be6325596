"""0005_runtime upgrades a database made by the previous migrations in place."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg

from broker.store.db import migrate
from tests.conftest import migrations_before, scratch_database


async def test_0005_adds_runtime_tables_and_keeps_every_existing_row(
    base_database_url: str, tmp_path: Path
):
    before = migrations_before("0005", tmp_path)
    async with scratch_database(base_database_url, prefix="broker_m5") as url:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn, before)
            partner = uuid.uuid4()
            await conn.execute("INSERT INTO partners (id, name) VALUES ($1, 'Kept')", partner)
            await conn.execute(
                "INSERT INTO api_keys (id, kind, partner_id, key_hash, key_prefix)"
                " VALUES ($1, 'partner', $2, '\\x01', 'bk_partner_abcd')",
                uuid.uuid4(),
                partner,
            )

            applied = await migrate(conn)
            assert "0005_runtime" in applied

            assert await conn.fetchval("SELECT name FROM partners WHERE id = $1", partner) == "Kept"
            assert await conn.fetchval("SELECT count(*) FROM api_keys") == 1
            for table in ("admin_token", "leader_leases", "portal_links"):
                assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0
            # The new tables work against the old rows: a link for the existing partner...
            await conn.execute(
                "INSERT INTO portal_links (id, partner_id, token_hash, read_only, expires_at)"
                " VALUES ($1, $2, '\\x02', true, now() + interval '1 hour')",
                uuid.uuid4(),
                partner,
            )
            # ...and one admin token per database, however many processes try.
            await conn.execute("INSERT INTO admin_token (token_hash) VALUES ('\\x03')")
            inserted = await conn.fetchval(
                "INSERT INTO admin_token (token_hash) VALUES ('\\x04')"
                " ON CONFLICT DO NOTHING RETURNING 1"
            )
            assert inserted is None
        finally:
            await conn.close()
