"""Migration 0003 upgrades a database made by the previous release in place: plaintext secrets
and basicAuth become sealed values that open to the same text, and queued events still go out
signed with the secret the receiver already has."""

from __future__ import annotations

import base64
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from standardwebhooks import Webhook

from broker.store.db import MIGRATIONS_DIR, is_migrated, load_migrations, migrate
from broker.store.migration_steps import MigrationNeedsKeys
from tests.conftest import (
    TEST_KEYS,
    make_settings,
    scratch_database,
    serving_runtime,
    stored_secrets,
)

THIS = "0003"
BASIC = base64.b64encode(b"user:pass").decode()


def secret() -> str:
    return "whsec_" + base64.b64encode(uuid.uuid4().bytes * 2).decode()


@pytest.fixture
async def old_db(base_database_url: str, tmp_path: Path) -> AsyncIterator[str]:
    """A database migrated with every migration before this one, as the last release left it."""
    before = tmp_path / "before"
    before.mkdir()
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        if path.name[:4] < THIS:
            shutil.copy(path, before / path.name)
    async with scratch_database(base_database_url, prefix="broker_m3") as url:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn, before)
        finally:
            await conn.close()
        yield url


async def seed_plaintext(conn: asyncpg.Connection, url: str) -> dict[str, dict[str, object]]:
    partner = uuid.uuid4()
    await conn.execute("INSERT INTO partners (id, name) VALUES ($1, 'old')", partner)
    await conn.execute("INSERT INTO event_types (name) VALUES ('Core.Account.Opened')")
    rows: dict[str, dict[str, object]] = {
        "plain": {"secret": secret(), "previous_secret": None, "basic_auth": None},
        "rotating": {"secret": secret(), "previous_secret": secret(), "basic_auth": BASIC},
    }
    for name, values in rows.items():
        rid = uuid.uuid4()
        values["id"] = rid
        await conn.execute(
            "INSERT INTO registrations (id, partner_id, url, event_types, secret, previous_secret,"
            " previous_secret_expires_at, basic_auth)"
            " VALUES ($1, $2, $3, '{Core.Account.Opened}', $4, $5,"
            " CASE WHEN $5::text IS NULL THEN NULL ELSE now() + interval '1 hour' END, $6)",
            rid,
            partner,
            f"{url}/{name}",
            values["secret"],
            values["previous_secret"],
            values["basic_auth"],
        )
        event_id = uuid.uuid4()
        await conn.execute(
            "INSERT INTO events (id, partner_id, registration_id, event_name, resources)"
            " VALUES ($1, $2, $3, 'Core.Account.Opened', '{r/1}')",
            event_id,
            partner,
            rid,
        )
        # queued for delivery, as the previous release's window close leaves it (0002)
        await conn.execute(
            "INSERT INTO delivery_queue (event_id, registration_id, created_at, next_attempt_at)"
            " VALUES ($1, $2, now(), now())",
            event_id,
            rid,
        )
        await conn.execute(
            "INSERT INTO delivery_ready (registration_id, next_due_at) VALUES ($1, now())", rid
        )
    return rows


async def test_0003_seals_existing_secrets_in_place(old_db, receiver):
    conn = await asyncpg.connect(old_db)
    try:
        rows = await seed_plaintext(conn, receiver.url)
        applied = await migrate(conn, keys=TEST_KEYS)
        assert applied == [m.name for m in load_migrations() if m.version >= THIS]
        assert await is_migrated(conn)
        for values in rows.values():
            opened = await stored_secrets(conn, values["id"])
            assert opened == {k: values[k] for k in ("secret", "previous_secret", "basic_auth")}
        columns = {
            r["column_name"]
            for r in await conn.fetch(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_name = 'registrations'"
            )
        }
        assert not {"secret", "previous_secret", "basic_auth"} & columns
        assert await conn.fetchval("SELECT count(*) FROM events WHERE status = 'Pending'") == 2
    finally:
        await conn.close()
    # The broker then delivers the queued events, signed with the secrets receivers hold.
    async with serving_runtime(make_settings(), old_db, role="all"):
        deliveries = await receiver.wait_for(2)
    by_path = {d.json()["registrationId"]: d for d in deliveries}
    plain = by_path[str(rows["plain"]["id"])]
    Webhook(str(rows["plain"]["secret"])).verify(plain.body, plain.headers)
    assert "Authorization" not in plain.headers
    rotating = by_path[str(rows["rotating"]["id"])]
    for key in ("secret", "previous_secret"):
        Webhook(str(rows["rotating"][key])).verify(rotating.body, rotating.headers)
    assert rotating.headers["Authorization"] == f"Basic {BASIC}"


async def test_0003_without_the_key_ring_refuses_and_changes_nothing(old_db):
    conn = await asyncpg.connect(old_db)
    try:
        rows = await seed_plaintext(conn, "https://93.184.216.34/hook")
        with pytest.raises(MigrationNeedsKeys, match="key ring"):
            await migrate(conn)
        # rolled back: still the old schema, the plaintext untouched, 0003 not recorded
        versions = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        assert THIS not in versions
        kept = await conn.fetchval(
            "SELECT secret FROM registrations WHERE id = $1", rows["plain"]["id"]
        )
        assert kept == rows["plain"]["secret"]
    finally:
        await conn.close()


async def test_0003_on_an_empty_database_needs_no_key(base_database_url):
    async with scratch_database(base_database_url, prefix="broker_m3e") as url:
        conn = await asyncpg.connect(url)
        try:
            assert THIS in {n[:4] for n in await migrate(conn)}
        finally:
            await conn.close()
