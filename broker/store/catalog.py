"""Partners, partner and producer keys, and the event-type catalog."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime

import asyncpg

from broker.domain.ids import uuid7
from broker.domain.models import (
    EventType,
    IssuedKey,
    Partner,
    Principal,
)
from broker.store.base import StoreBase
from broker.store.queries import Q
from broker.store.records import (
    KEY_PREFIXES,
    hash_key,
    new_api_key,
)


class CatalogQueries(StoreBase):
    async def principal_for_key(self, api_key: str) -> Principal | None:
        # Concurrent requests share one query (broker/store/keylookup.py); nothing is cached.
        return await self._key_lookups.lookup(hash_key(api_key))

    async def create_partner(self, name: str) -> tuple[Partner, IssuedKey]:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(Q.insert_partner, uuid7(), name)
            partner = Partner(id=row["id"], name=row["name"], created_at=row["created_at"])
            key = await self._issue_key(conn, "partner", partner_id=partner.id, name=None)
        self._known_partners.add(partner.id)
        return partner, key

    async def list_partners(
        self, *, after: tuple[datetime, uuid.UUID] | None = None, limit: int | None = None
    ) -> list[Partner]:
        """Oldest first, at most ``limit`` (None: all), after the (created_at, id) ``after``."""
        if after is None:
            rows = await self.pool.fetch(Q.list_partners, limit)
        else:
            rows = await self.pool.fetch(Q.list_partners_after, *after, limit)
        return [Partner(id=r["id"], name=r["name"], created_at=r["created_at"]) for r in rows]

    async def create_partner_key(self, partner_id: uuid.UUID) -> IssuedKey | None:
        async with self.pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval(Q.partner_exists, partner_id):
                return None
            return await self._issue_key(conn, "partner", partner_id=partner_id, name=None)

    async def create_producer_key(self, name: str) -> IssuedKey:
        async with self.pool.acquire() as conn:
            return await self._issue_key(conn, "producer", partner_id=None, name=name)

    async def _issue_key(
        self, conn: asyncpg.Connection, kind: str, *, partner_id: uuid.UUID | None, name: str | None
    ) -> IssuedKey:
        api_key = new_api_key(kind)
        row = await conn.fetchrow(
            Q.insert_api_key,
            uuid7(),
            kind,
            partner_id,
            name,
            hash_key(api_key),
            api_key[: len(KEY_PREFIXES[kind]) + 4],
        )
        return IssuedKey(
            id=row["id"],
            api_key=api_key,
            created_at=row["created_at"],
            name=name,
            partner_id=partner_id,
        )

    async def revoke_key(self, key_id: uuid.UUID) -> bool:
        """True when the key exists (revoking twice is still a success: DELETE is idempotent)."""
        if await self.pool.fetchval(Q.revoke_api_key, key_id) is not None:
            return True
        return bool(await self.pool.fetchval(Q.api_key_exists, key_id))

    async def put_event_type(self, name: str, description: str) -> tuple[EventType, bool]:
        row = await self.pool.fetchrow(Q.upsert_event_type, name, description)
        self._known_event_types.add(name)
        return (
            EventType(
                name=row["name"],
                description=row["description"],
                created_at=row["created_at"],
                updated_at=row["updated_at"],
            ),
            bool(row["inserted"]),
        )

    async def list_event_types(self) -> list[EventType]:
        rows = await self.pool.fetch(Q.list_event_types)
        return [
            EventType(
                name=r["name"],
                description=r["description"],
                created_at=r["created_at"],
                updated_at=r["updated_at"],
            )
            for r in rows
        ]

    async def unknown_event_types(self, names: Iterable[str]) -> set[str]:
        wanted = set(names) - self._known_event_types
        if wanted:
            rows = await self.pool.fetch(Q.existing_event_type_names, list(wanted))
            found = {r["name"] for r in rows}
            self._known_event_types |= found
            wanted -= found
        return wanted

    async def unknown_partners(self, ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
        wanted = set(ids) - self._known_partners
        if wanted:
            rows = await self.pool.fetch(Q.existing_partner_ids, list(wanted))
            found = {r["id"] for r in rows}
            self._known_partners |= found
            wanted -= found
        return wanted
