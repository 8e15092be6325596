"""The partner events API: lists, attempts, resend, test deliveries."""

from __future__ import annotations

import uuid
from datetime import datetime

from broker.domain.models import (
    Attempt,
    Event,
)
from broker.store.base import StoreBase
from broker.store.queries import Q
from broker.store.records import (
    attempt_from_row,
    event_from_row,
)


class HistoryQueries(StoreBase):
    async def list_events(
        self,
        partner_id: uuid.UUID,
        *,
        registration_id: uuid.UUID | None,
        event_name: str | None,
        status: str | None,
        created_after: datetime | None,
        created_before: datetime | None,
        after: tuple[datetime, uuid.UUID] | None,
        limit: int,
    ) -> list[Event]:
        rows = await self.pool.fetch(
            Q.list_events,
            partner_id,
            registration_id,
            event_name,
            status,
            created_after,
            after[0] if after else None,
            after[1] if after else None,
            created_before,
            limit,
        )
        return [event_from_row(r) for r in rows]

    async def get_event(self, event_id: uuid.UUID, partner_id: uuid.UUID) -> Event | None:
        row = await self.pool.fetchrow(Q.get_event, event_id, partner_id)
        return None if row is None else event_from_row(row)

    async def list_attempts(self, event_id: uuid.UUID) -> list[Attempt]:
        return [attempt_from_row(r) for r in await self.pool.fetch(Q.list_attempts, event_id)]

    async def resend_event(self, event_id: uuid.UUID, partner_id: uuid.UUID) -> Event | None:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(Q.resend_event, event_id, partner_id)
            if row is not None:
                await conn.execute(Q.notify_events)
        return None if row is None else event_from_row(row)

    async def record_test_delivery(
        self,
        *,
        event_id: uuid.UUID,
        partner_id: uuid.UUID,
        registration_id: uuid.UUID,
        success: bool,
        attempt: Attempt,
    ) -> Event:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                Q.insert_test_event,
                event_id,
                partner_id,
                registration_id,
                "Success" if success else "Failed",
                attempt.attempted_at,
            )
            await conn.execute(
                Q.insert_attempts,
                [event_id],
                [attempt.attempt_number],
                [attempt.attempted_at],
                [attempt.duration_ms],
                [attempt.response_status],
                [attempt.error],
                [attempt.response_body],
            )
        return event_from_row(row)
