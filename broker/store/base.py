"""The store's shared state: the pool and the per-process caches every query area uses."""

from __future__ import annotations

import uuid

import asyncpg

from broker.store.keylookup import KeyLookups


class StoreBase:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        # Partners and event types are never deleted, so a positive answer can be cached for the
        # life of the process: ingest validation then costs no query in the steady state.
        self._known_partners: set[uuid.UUID] = set()
        self._known_event_types: set[str] = set()
        self._key_lookups = KeyLookups(pool)

    async def close(self) -> None:
        await self.pool.close()

    async def ping(self) -> bool:
        from broker.store.db import is_migrated

        async with self.pool.acquire() as conn:
            return await is_migrated(conn)
