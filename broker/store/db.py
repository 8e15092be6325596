"""Connections: where the database is, the pool, and the schema migrations.

``BROKER_DATABASE_URL`` names an external PostgreSQL; without it broker starts the embedded server
that the ``pgserver`` wheel ships, kept in ``BROKER_DATA_DIR``. Migrations are the ordered files in
``sql/migrations``; each is applied once, in one transaction, and recorded in
``schema_migrations``. A session-level advisory lock makes two processes starting at once take
turns instead of racing to create the same tables. A ``-- step: name`` line in a migration runs a
Python data step there (``broker/store/migration_steps.py``), for data SQL cannot move alone, such
as sealing secrets with a key the database never sees.
"""

from __future__ import annotations

import fcntl
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import orjson

from broker.config import Settings

if TYPE_CHECKING:
    from broker.crypto import KeyRing

log = logging.getLogger(__name__)

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
MIGRATIONS_DIR = SQL_DIR / "migrations"
# An arbitrary constant shared by every broker process: "broker migrations" in hex-ish.
MIGRATION_LOCK_ID = 0x62726B6D

_MIGRATION_NAME = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")  # fullmatch: no "$" leeway
_STEP_LINE = re.compile(r"^--\s*step:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


@dataclass(frozen=True, kw_only=True)
class Migration:
    version: str
    name: str
    sql: str


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_NAME.fullmatch(path.name)
        if not match:
            raise RuntimeError(f"migration file name not of the form 0001_name.sql: {path.name}")
        found.append(Migration(version=match[1], name=path.stem, sql=path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a version number in {directory}")
    return found


async def _apply(conn: asyncpg.Connection, sql: str, keys: KeyRing | None) -> None:
    """One migration's SQL, with its ``-- step:`` data steps run where their lines stand."""
    from broker.store.migration_steps import STEPS

    parts = _STEP_LINE.split(sql)  # [sql, step, sql, step, sql, ...]
    for i, part in enumerate(parts):
        if i % 2 == 0:
            if part.strip():
                await conn.execute(part)
        else:
            step = STEPS.get(part)
            if step is None:
                raise RuntimeError(f"migration names an unknown step {part!r}")
            await step(conn, keys)


async def migrate(
    conn: asyncpg.Connection,
    directory: Path = MIGRATIONS_DIR,
    *,
    keys: KeyRing | None = None,
) -> list[str]:
    """Apply pending migrations; returns the names applied (empty when already current).

    ``keys`` is the key ring that data steps seal with; without it, a step that finds data to
    seal fails (and its migration rolls back) instead of leaving secrets in the clear.
    """
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version text PRIMARY KEY,
                   name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for migration in load_migrations(directory):
            if migration.version in done:
                continue
            async with conn.transaction():
                await _apply(conn, migration.sql, keys)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
            log.info("applied migration %s", migration.name)
            applied_now.append(migration.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
    return applied_now


async def is_migrated(conn: asyncpg.Connection) -> bool:
    """True when every migration on disk is recorded (what /readyz checks)."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return False
    done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
    return all(m.version in done for m in load_migrations())


_embedded_servers: dict[Path, Any] = {}


def embedded_database_url(data_dir: Path) -> str:
    """Start (or join) the embedded PostgreSQL kept under ``data_dir`` and return its URL."""
    import warnings

    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers); its fallback is fine.
        warnings.simplefilter("ignore")
        import pgserver  # imported lazily: it is only needed without BROKER_DATABASE_URL

    pgdata = (data_dir / "pgdata").resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = _embedded_servers.get(pgdata)
    if server is None:
        # Several processes may start at once (pytest-xdist workers, `serve` beside `migrate`);
        # pgserver's first-time initdb is not safe against that, so they take turns.
        with (pgdata.parent / ".start.lock").open("w") as lock, warnings.catch_warnings():
            fcntl.flock(lock, fcntl.LOCK_EX)
            warnings.simplefilter("ignore")
            server = pgserver.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]
        _embedded_servers[pgdata] = server
    return str(server.get_uri())


def database_url(settings: Settings) -> str:
    return settings.database_url or embedded_database_url(settings.data_dir)


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb travels as bytes-fast orjson instead of the stdlib json module.
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: orjson.dumps(v).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release hook: nothing to reset.

    asyncpg's default sends ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`` on
    every release, a second round trip that made each ``pool.fetch*`` about 2.7 times as
    expensive (bench/README.md). Broker leaves no session state on pooled connections: no
    ``SET`` without ``LOCAL``, no ``LISTEN`` (the listener has its own connection), cursors only
    inside transactions, and the one advisory lock (migrations) is released explicitly. An open
    transaction is still rolled back by asyncpg before this hook runs.
    """


class PoolExhausted(TimeoutError):
    """No pooled connection became free in time: the process is overloaded, not broken.

    The API answers 503 with ``Retry-After`` (broker/api/problems.py); the workers back off as
    for any database error. A ``TimeoutError`` so that code handling timeouts still does.
    """


class BoundedPool(asyncpg.Pool):  # type: ignore[misc]
    """An asyncpg pool whose every acquire gives up after ``acquire_timeout`` seconds.

    asyncpg waits for a free connection forever unless each call passes a timeout; ``pool.fetch``
    and friends pass none. A request arriving while every connection is held (a burst, a slow
    query, a leak) would hang until its client gave up. ``_acquire`` is the one place every path
    (``acquire()``, ``fetch``, ``execute``, ...) goes through, so the bound is set there.
    """

    acquire_timeout: float = 5.0

    async def _acquire(self, timeout: float | None) -> Any:
        limit = self.acquire_timeout if timeout is None else timeout
        try:
            return await super()._acquire(limit)
        except TimeoutError:
            raise PoolExhausted(f"no database connection became free within {limit:g}s") from None


async def create_pool(url: str, *, size: int = 10, acquire_timeout: float = 5.0) -> asyncpg.Pool:
    pool = BoundedPool(
        url,
        min_size=1,
        max_size=size,
        max_queries=50000,
        max_inactive_connection_lifetime=60,
        init=_init_connection,
        reset=_keep_session,
        loop=None,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        # Fail fast when the database is down, so ingest can answer 503 instead of hanging.
        timeout=5,
        command_timeout=60,
        # No JIT: broker's statements are short, and a backlog makes the planner's per-row
        # estimates large (a generic plan of the claim costs ~600,000 with a million queued rows
        # of one Suspended registration), past jit_above_cost. Each such claim then spent ~0.9 s
        # compiling for ~3 ms of work: the first ten seconds of a large delivery ran at 200/s.
        server_settings={"jit": "off"},
    )
    pool.acquire_timeout = acquire_timeout
    await pool
    return pool
