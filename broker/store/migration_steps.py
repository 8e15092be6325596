"""Data steps that a migration runs in Python, named on a ``-- step: name`` line of its file.

A step runs inside its migration's transaction, between the SQL before and after its line. Its
SQL belongs to the schema of that one moment (columns the rest of the migration then drops), so
it lives here beside the step rather than in ``sql/queries``, which follows the current schema.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg

from broker.crypto import KeyRing

BATCH = 1000


class MigrationNeedsKeys(RuntimeError):
    """A step has data to seal but the migration was run without the key ring."""


async def seal_registration_secrets(conn: asyncpg.Connection, keys: KeyRing | None) -> None:
    """0003: seal every registration's plaintext secret, previous secret and basicAuth."""
    count = await conn.fetchval("SELECT count(*) FROM registrations")
    if not count:
        return
    if keys is None:
        raise MigrationNeedsKeys(
            f"migration 0003 seals {count} registration secrets and needs the encryption key "
            "ring: run it with `broker migrate` or `broker serve`"
        )
    cursor = conn.cursor("SELECT id, secret, previous_secret, basic_auth FROM registrations")
    batch: list[tuple[object, bytes, bytes | None, bytes | None]] = []
    async for row in cursor:
        rid = row["id"]
        batch.append(
            (
                rid,
                keys.seal(row["secret"], row=rid, column="secret"),
                keys.seal_optional(row["previous_secret"], row=rid, column="secret"),
                keys.seal_optional(row["basic_auth"], row=rid, column="basic_auth"),
            )
        )
        if len(batch) >= BATCH:
            await _write(conn, batch)
            batch = []
    await _write(conn, batch)


async def _write(
    conn: asyncpg.Connection, batch: list[tuple[object, bytes, bytes | None, bytes | None]]
) -> None:
    if batch:
        await conn.executemany(
            """UPDATE registrations
               SET secret_sealed = $2, previous_secret_sealed = $3, basic_auth_sealed = $4
               WHERE id = $1""",
            batch,
        )


Step = Callable[[asyncpg.Connection, KeyRing | None], Awaitable[None]]

STEPS: dict[str, Step] = {
    "seal_registration_secrets": seal_registration_secrets,
}
