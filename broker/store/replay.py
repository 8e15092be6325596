"""Replay: a registration's finished event objects of a time range, queued again.

In bounded batches, each its own short transaction through the resend machinery
(``lock_registrations_of_events`` then ``requeue_event``, ``sql/queries/delivery.sql``), so the
registration's row and ready row, which every result flush of that registration locks
(``lock_for_results``), are held for one batch at a time, never for the whole replay. The limit
is checked up front on a count, before anything changes.

Concurrent changes are judged per batch, under the registration's lock:

- deleted meanwhile: the batch finds it ``Deleted``, requeues nothing, and the replay stops with
  :class:`ReplayInterrupted`; the delete discarded the queue, batches already done included (as
  for any Pending event of a deleted registration);
- paused or suspended meanwhile: later batches are queued as well, and wait like the first ones
  (resend's rule);
- an event resent, or replayed by a concurrent call, meanwhile: its round is reset once more;
- event objects created meanwhile are outside ``[since, until)`` (``until`` is fixed before the
  first batch), so the count and the batches see the same range.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from broker.domain.ids import first_id_at_or_after, utcnow
from broker.store.base import StoreBase
from broker.store.queries import Q

# Event objects per transaction. Measured with bench/replay.py (bench/README.md): a batch of
# 2000 takes about 150 ms on a loaded 2-core machine, the longest a result flush holding one of
# this registration's results waits; 500 was slower overall, 20000 doubled the stall.
REPLAY_BATCH = 2000


@dataclass(frozen=True, slots=True)
class ReplayTooLarge(Exception):
    """More event objects match than one replay may queue."""

    count: int
    limit: int


@dataclass(frozen=True, slots=True)
class ReplayInterrupted(Exception):
    """The registration was deleted while the replay ran (``requeued`` were done before)."""

    requeued: int


class ReplayQueries(StoreBase):
    async def replay_events(
        self,
        registration_id: uuid.UUID,
        partner_id: uuid.UUID,
        *,
        since: datetime,
        until: datetime,
        statuses: list[str],
        limit: int,
        batch: int = REPLAY_BATCH,
    ) -> int:
        """Queue again every event object of the registration created in [since, until) whose
        status is one of ``statuses``; the number requeued. ReplayTooLarge (nothing changed)
        when more than ``limit`` match; ReplayInterrupted when it was deleted meanwhile."""
        async with self.pool.acquire() as conn:
            # [since, until) as ids: created_at is the id's millisecond (migration 0011).
            first, end = first_id_at_or_after(since), first_id_at_or_after(until)
            count = await conn.fetchval(
                Q.count_replay_events, partner_id, registration_id, statuses, first, end
            )
            if count > limit:
                raise ReplayTooLarge(count=count, limit=limit)
            # One due time for every batch: the claim orders a registration's due rows by
            # (next_attempt_at, created_at), so the replayed events go out in creation order.
            due = utcnow()
            requeued = 0
            for status in sorted(set(statuses)):
                # Ids are > after: one below the first, so that one is included.
                after = uuid.UUID(int=max(first.int - 1, 0))
                while requeued < limit:
                    rows = await conn.fetch(
                        Q.replay_batch,
                        partner_id,
                        registration_id,
                        status,
                        after,
                        end,
                        min(batch, limit - requeued),
                    )
                    if not rows:
                        break
                    ids = [r["id"] for r in rows]
                    async with conn.transaction():
                        # Registrations, then their ready rows, in id order (as a result flush
                        # locks them), then the events: the lock order of docs/architecture.md.
                        await conn.fetch(Q.lock_registrations_of_events, ids)
                        done = await conn.fetch(Q.requeue_event, ids, due)
                        if done:
                            await conn.execute(Q.notify_events)
                    if not done and await self._deleted(conn, registration_id, partner_id):
                        raise ReplayInterrupted(requeued=requeued)
                    requeued += len(done)
                    after = rows[-1]["id"]
                    if len(rows) < batch:
                        break
        return requeued

    async def _deleted(
        self, conn: asyncpg.Connection, registration_id: uuid.UUID, partner_id: uuid.UUID
    ) -> bool:
        row = await conn.fetchrow(Q.get_registration_any_status, registration_id, partner_id)
        return row is None or row["status"] == "Deleted"
