"""Runtime state shared by the processes of one broker: admin token, leader leases, portal links."""

from __future__ import annotations

import uuid
from datetime import datetime

from broker.domain.ids import uuid7
from broker.domain.models import Principal
from broker.store.base import StoreBase
from broker.store.queries import Q
from broker.store.records import hash_key


class RuntimeQueries(StoreBase):
    async def claim_admin_token(self, token_hash: bytes) -> tuple[bytes, bool]:
        """The database's admin token hash, and whether ``token_hash`` just became it.

        Two statements, not one: when another process inserts at the same moment, ON CONFLICT
        waits for it, and only a new statement's snapshot sees the row it committed.
        """
        inserted = await self.pool.fetchval(Q.insert_admin_token, token_hash)
        if inserted is not None:
            return bytes(inserted), True
        return bytes(await self.pool.fetchval(Q.admin_token_hash)), False

    async def admin_token_hash(self) -> bytes | None:
        stored = await self.pool.fetchval(Q.admin_token_hash)
        return None if stored is None else bytes(stored)

    async def replace_admin_token(self, token_hash: bytes) -> None:
        """A new generated admin token: the previous one stops working in every process."""
        await self.pool.execute(Q.replace_admin_token, token_hash)

    async def take_lease(self, name: str, holder: str, seconds: float) -> bool:
        """Renew (or take over an expired) lease; True while ``holder`` holds it."""
        return await self.pool.fetchval(Q.take_lease, name, holder, seconds) is not None

    async def release_lease(self, name: str, holder: str) -> None:
        await self.pool.execute(Q.release_lease, name, holder)

    async def lease_holder(self, name: str) -> str | None:
        holder: str | None = await self.pool.fetchval(Q.lease_holder, name)
        return holder

    async def create_portal_link(
        self, partner_id: uuid.UUID, token: str, *, read_only: bool, ttl_seconds: int
    ) -> datetime | None:
        """Store a link's hash; its expiry, or None when there is no such partner."""
        expires_at: datetime | None = await self.pool.fetchval(
            Q.insert_portal_link, uuid7(), partner_id, hash_key(token), read_only, ttl_seconds
        )
        return expires_at

    async def revoke_portal_links(self, partner_id: uuid.UUID) -> int:
        return int((await self.pool.execute(Q.delete_portal_links, partner_id)).split()[-1])

    async def principal_for_portal_token(self, token: str) -> Principal | None:
        row = await self.pool.fetchrow(Q.principal_for_portal_token, hash_key(token))
        if row is None:
            return None
        return Principal(
            kind="partner",
            key_id=row["id"],
            partner_id=row["partner_id"],
            read_only=row["read_only"],
            expires_at=row["expires_at"],
        )

    async def purge_expired_portal_links(self) -> int:
        return int((await self.pool.execute(Q.purge_expired_portal_links)).split()[-1])
