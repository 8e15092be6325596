"""The store's shared state: the pool and the per-process caches every query area uses."""

from __future__ import annotations

import uuid

import asyncpg

from broker.crypto import KeyRing
from broker.store.keylookup import KeyLookups


class StoreBase:
    def __init__(self, pool: asyncpg.Pool, *, keys: KeyRing | None = None) -> None:
        self.pool = pool
        self._keys = keys
        # Partners and event types are never deleted, so a positive answer can be cached for the
        # life of the process: ingest validation then costs no query in the steady state.
        self._known_partners: set[uuid.UUID] = set()
        self._known_event_types: set[str] = set()
        self._key_lookups = KeyLookups(pool)

    @property
    def keys(self) -> KeyRing:
        """The key ring that seals and opens registration secrets (broker/crypto.py)."""
        if self._keys is None:
            raise RuntimeError("this store was opened without a key ring: it cannot read secrets")
        return self._keys

    async def close(self) -> None:
        await self.pool.close()

    async def ping(self) -> bool:
        from broker.store.db import is_migrated

        async with self.pool.acquire() as conn:
            return await is_migrated(conn)
