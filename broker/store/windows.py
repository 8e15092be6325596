"""Closing due windows into event objects, exactly once across processes.

Each group's close is its own transaction (``sql/queries/windows.sql`` explains the locking):
its due window, and for a backlog the full windows behind it (a bounded number). The work of a
close is the resource events it folds, never the rest of the backlog, and an ingest touching the
group waits at most for the close's last statement and commit.
"""

from __future__ import annotations

import bisect
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
# A backlogged group's full windows closed in one transaction: at most this many event objects
# (windows x matching registrations) and resources folded (the memory the close holds).
WINDOWS_PER_CLOSE = 1000
RESOURCES_PER_CLOSE = 20000
# Due groups a claim looks at: enough that other processes' closes in progress rarely hide the
# rest of the due ones from this process.
CLAIM_CANDIDATES = 64


class WindowQueries(StoreBase):
    async def close_due_windows(self, rules: WindowRules, *, limit: int = 50) -> WindowCloseResult:
        """Close due windows, one transaction per group (its next window, and the full ones
        queued behind it), up to ``limit`` groups claimed."""
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
                    windows, made, group_read = await self._close_window(
                        conn, partner_id, event_name, state, rules
                    )
                read += group_read
                closed += windows
                created += made
        return WindowCloseResult(claimed=claimed, closed=closed, created=created, read=read)

    async def _close_window(
        self,
        conn: asyncpg.Connection,
        partner_id: uuid.UUID,
        event_name: str,
        state: asyncpg.Record,
        rules: WindowRules,
    ) -> tuple[int, int, int]:
        """(Windows closed: none when empty or kept open, event objects created, resource
        events read).

        A backlogged group (more than one full window queued) closes its next full windows in
        this transaction too, up to WINDOWS_PER_CLOSE event objects or RESOURCES_PER_CLOSE
        resources: the closes that would follow at once (advance_window_group makes the next
        window due now when it may be full) share one claim, one consume, one advance and one
        commit. Each window is still its own event objects, cut as the window would be alone."""
        start = state["consumed_through"]
        registrations = [
            r["id"] for r in await conn.fetch(Q.matching_registrations, partner_id, event_name)
        ]
        most = max(
            1,
            min(
                WINDOWS_PER_CLOSE // max(len(registrations), 1),
                RESOURCES_PER_CLOSE // rules.max_resources,
            ),
        )
        reader = _GroupRows(conn, partner_id, event_name, start, rules, most)
        fold = Fold(max_resources=rules.max_resources)
        await reader.fold(fold)
        if not fold.seen:
            # Nothing visible: either nothing is left, or a group commit is still inserting.
            if await conn.fetchval(Q.lock_window_group, partner_id, event_name) == 0:
                await conn.execute(Q.delete_window_group, partner_id, event_name, 0)
            return 0, 0, reader.read
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
                reader.read,
                rules.min_seconds,
                rules.max_seconds,
            )
            return 0, 0, reader.read
        windows = [fold]
        while fold.capped and len(windows) < most:
            # More than this window is queued: the next one closes now only if it is full
            # (what is left of a group after a close is otherwise a window opened just now).
            fold = Fold(max_resources=rules.max_resources)
            await reader.fold(fold)
            if len(fold.seen) < rules.max_resources:
                break
            windows.append(fold)
        cutoff = windows[-1].cutoff
        status = await conn.execute(
            Q.consume_resource_events, partner_id, event_name, start, cutoff
        )
        consumed = int(status.split()[-1])
        if registrations:
            await conn.execute(Q.notify_events)  # sent at the commit
        # The event objects last but for the group's row: inserting them locks the
        # registrations' ready rows, which claims skip and result flushes wait for, until the
        # commit.
        for window in windows:
            await self._create_event_objects(
                conn, partner_id, event_name, window.resources, registrations
            )
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
                cutoff,
                start,
                rules.min_seconds,
                rules.max_seconds,
                rules.max_resources,
            )
        return len(windows), len(registrations) * len(windows), reader.read

    async def _create_event_objects(
        self,
        conn: asyncpg.Connection,
        partner_id: uuid.UUID,
        event_name: str,
        resources: list[str],
        registrations: list[uuid.UUID],
    ) -> None:
        """One event object per matching registration: the one place a window becomes events."""
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

    async def seconds_until_next_window(self) -> float | None:
        value = await self.pool.fetchval(Q.next_window_due_in)
        return None if value is None else float(value)


class _GroupRows:
    """A group's resource events from ``after`` on, read in chunks and handed to successive
    folds: what one window leaves past its cap is where the next one starts."""

    def __init__(
        self,
        conn: asyncpg.Connection,
        partner_id: uuid.UUID,
        event_name: str,
        after: int,
        rules: WindowRules,
        windows: int,
    ) -> None:
        self._conn = conn
        self._key = (partner_id, event_name)
        self._after = after
        # Without duplicates, one read of max_resources + 1 rows decides a window; a backlog
        # is read in larger chunks, as many windows as one close may take.
        self._chunk = min(READ_CHUNK, windows * rules.max_resources + 1)
        self._rows: list[tuple[int, str]] = []
        self._ids: list[int] = []
        self._pos = 0
        self._exhausted = False
        self.read = 0

    async def fold(self, fold: Fold) -> None:
        """Fold rows into ``fold`` until it is capped or nothing visible is left."""
        while True:
            fold.add(self._rows[self._pos :])
            # Fold.add stops at the first new resource past the cap: that row and the ones
            # after it are the next window's.
            self._pos = bisect.bisect_right(self._ids, fold.cutoff, self._pos)
            if fold.capped or self._exhausted:
                return
            rows = await self._conn.fetch(
                Q.window_resource_events, *self._key, self._after, self._chunk
            )
            self.read += len(rows)
            self._exhausted = len(rows) < self._chunk
            self._rows = [(row["id"], row["resource"]) for row in rows]
            self._ids = [row_id for row_id, _ in self._rows]
            self._pos = 0
            if rows:
                self._after = self._ids[-1]
            elif self._exhausted:
                return
