"""Closing due windows into event objects, exactly once across processes.

Each window closes in its own transaction (``sql/queries/windows.sql`` explains the locking):
the work of a close is the resource events it folds, never the backlog behind them, and an
ingest touching the group waits at most for the close's last statement and commit.
"""

from __future__ import annotations

import uuid

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
# Due groups a claim looks at: enough that other processes' closes in progress rarely hide the
# rest of the due ones from this process.
CLAIM_CANDIDATES = 64


class WindowQueries(StoreBase):
    async def close_due_windows(self, rules: WindowRules, *, limit: int = 50) -> WindowCloseResult:
        """Close due windows, one transaction each, up to ``limit`` groups claimed."""
        claimed = closed = created = read = 0
        while claimed < limit:
            async with self.pool.acquire() as conn, conn.transaction():
                group = await conn.fetchrow(Q.claim_due_window, CLAIM_CANDIDATES)
                if group is None:
                    break
                claimed += 1
                partner_id, event_name = group["partner_id"], group["event_name"]
                state = await conn.fetchrow(Q.window_group_state, partner_id, event_name)
                if state is None:  # closed by another process just before this one's lock
                    continue
                with tracing.span(
                    "window.close",
                    links=state["trace_links"],
                    partner_id=partner_id,
                    event_name=event_name,
                ):
                    made, group_read = await self._close_window(
                        conn, partner_id, event_name, state, rules
                    )
                read += group_read
                if made is not None:
                    closed += 1
                    created += made
                    if made:
                        await conn.execute(Q.notify_events)
        return WindowCloseResult(claimed=claimed, closed=closed, created=created, read=read)

    async def _close_window(
        self,
        conn: asyncpg.Connection,
        partner_id: uuid.UUID,
        event_name: str,
        state: asyncpg.Record,
        rules: WindowRules,
    ) -> tuple[int | None, int]:
        """(Event objects created, or None when the window did not close (empty, or kept open);
        resource events read)."""
        start = state["consumed_through"]
        fold = Fold(max_resources=rules.max_resources)
        # Without duplicates, one read of max_resources + 1 rows decides the window.
        chunk = min(READ_CHUNK, rules.max_resources + 1)
        read = 0
        after = start
        while not fold.capped:
            rows = await conn.fetch(Q.window_resource_events, partner_id, event_name, after, chunk)
            read += len(rows)
            fold.add((row["id"], row["resource"]) for row in rows)
            if len(rows) < chunk:
                break
            after = rows[-1]["id"]
        if not fold.seen:
            # Nothing visible: either nothing is left, or a group commit is still inserting.
            if await conn.fetchval(Q.lock_window_group, partner_id, event_name) == 0:
                await conn.execute(Q.delete_window_group, partner_id, event_name, 0)
            return None, read
        if not window_closes(
            now=state["db_now"],
            opened_at=state["opened_at"],
            last_event_at=state["last_event_at"],
            distinct=len(fold.seen),
            rules=rules,
        ):
            # The ingest counter over-counted duplicates: keep the window open, exact count.
            await conn.execute(
                Q.reschedule_window_group,
                partner_id,
                event_name,
                len(fold.seen),
                read,
                rules.min_seconds,
                rules.max_seconds,
            )
            return None, read
        made = await self._create_event_objects(conn, partner_id, event_name, fold.resources)
        status = await conn.execute(
            Q.consume_resource_events, partner_id, event_name, start, fold.cutoff
        )
        consumed = int(status.split()[-1])
        # The group row is locked only from here to the commit.
        queued = await conn.fetchval(Q.lock_window_group, partner_id, event_name)
        if queued == consumed:
            await conn.execute(Q.delete_window_group, partner_id, event_name, consumed)
        else:
            await conn.execute(
                Q.advance_window_group,
                partner_id,
                event_name,
                consumed,
                fold.cutoff,
                start,
                rules.min_seconds,
                rules.max_seconds,
                rules.max_resources,
            )
        return made, read

    async def _create_event_objects(
        self, conn: asyncpg.Connection, partner_id: uuid.UUID, event_name: str, resources: list[str]
    ) -> int:
        """One event object per matching registration: the one place a window becomes events."""
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
                resources=resources,
                registration_ids=registrations,
                event_ids=event_ids,
                trace_parent=tracing.current_traceparent(),
            )
        return len(registrations)

    async def seconds_until_next_window(self) -> float | None:
        value = await self.pool.fetchval(Q.next_window_due_in)
        return None if value is None else float(value)
