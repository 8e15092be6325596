"""Closing due windows into event objects, exactly once across processes."""

from __future__ import annotations

import asyncpg

from broker import tracing
from broker.domain.ids import uuid7
from broker.domain.windows import Fold, WindowRules, window_closes
from broker.store.base import StoreBase
from broker.store.delivery import insert_event_objects
from broker.store.queries import Q
from broker.store.records import (
    WindowCloseResult,
)

# Resource events read per round trip while folding a window (bounded memory for huge windows).
READ_CHUNK = 20000


class WindowQueries(StoreBase):
    async def close_due_windows(self, rules: WindowRules, *, limit: int = 50) -> WindowCloseResult:
        """Close due windows (up to ``limit`` groups claimed)."""
        created = 0
        closed = 0
        async with self.pool.acquire() as conn, conn.transaction():
            groups = await conn.fetch(Q.claim_due_windows, limit)
            for group in groups:
                with tracing.span(
                    "window.close",
                    links=group["trace_links"],
                    partner_id=group["partner_id"],
                    event_name=group["event_name"],
                ):
                    made = await self._close_window(conn, group, rules)
                if made is not None:
                    closed += 1
                    created += made
            if created:
                await conn.execute(Q.notify_events)
        return WindowCloseResult(claimed=len(groups), closed=closed, created=created)

    async def _close_window(
        self, conn: asyncpg.Connection, group: asyncpg.Record, rules: WindowRules
    ) -> int | None:
        """Event objects created, or None when the window did not close (empty, or kept open)."""
        partner_id, event_name = group["partner_id"], group["event_name"]
        fold = Fold(max_resources=rules.max_resources)
        after = 0
        while not fold.capped:
            rows = await conn.fetch(
                Q.window_resource_events, partner_id, event_name, after, READ_CHUNK
            )
            fold.add((row["id"], row["resource"]) for row in rows)
            if len(rows) < READ_CHUNK:
                break
            after = rows[-1]["id"]
        if not fold.seen:
            await conn.execute(Q.delete_window_group, partner_id, event_name)
            return None
        if not window_closes(
            now=group["db_now"],
            opened_at=group["opened_at"],
            last_event_at=group["last_event_at"],
            distinct=len(fold.seen),
            rules=rules,
        ):
            # The ingest counter over-counted duplicates: keep the window open, exact count.
            await conn.execute(
                Q.reschedule_window_group,
                partner_id,
                event_name,
                len(fold.seen),
                rules.min_seconds,
                rules.max_seconds,
            )
            return None
        cutoff = fold.cutoff
        await conn.execute(Q.consume_resource_events, partner_id, event_name, cutoff)
        remaining = await conn.fetchval(Q.count_remaining_resource_events, partner_id, event_name)
        if remaining:
            await conn.execute(
                Q.reopen_window_group,
                partner_id,
                event_name,
                remaining,
                rules.min_seconds,
                rules.max_seconds,
                rules.max_resources,
            )
        else:
            await conn.execute(Q.delete_window_group, partner_id, event_name)
        registrations = [
            r["id"] for r in await conn.fetch(Q.matching_registrations, partner_id, event_name)
        ]
        if registrations:
            event_ids = [uuid7() for _ in registrations]
            tracing.set_attributes(event_ids=event_ids, registration_ids=registrations)
            await insert_event_objects(
                conn,
                partner_id=partner_id,
                event_name=event_name,
                resources=fold.resources,
                registration_ids=registrations,
                event_ids=event_ids,
                trace_parent=tracing.current_traceparent(),
            )
        return len(registrations)

    async def seconds_until_next_window(self) -> float | None:
        value = await self.pool.fetchval(Q.next_window_due_in)
        return None if value is None else float(value)
