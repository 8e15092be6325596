"""Producer ingest: one group commit of many requests (COPY + window upsert)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from broker.domain.windows import WindowRules
from broker.store.base import StoreBase
from broker.store.queries import Q
from broker.store.records import (
    IngestAnswer,
    IngestRequest,
)


class IngestQueries(StoreBase):
    async def ingest(
        self,
        requests: Sequence[IngestRequest],
        rules: WindowRules,
        *,
        trace_parent: str | None = None,
    ) -> list[IngestAnswer]:
        """Store several producers' requests in one transaction (group commit).

        Each answer is durable when this returns. A request whose Idempotency-Key was seen in
        the last 24 h stores nothing and gets the first answer back.
        """
        answers: list[IngestAnswer | None] = [None] * len(requests)
        fresh: list[int] = []
        first_with_key: dict[tuple[uuid.UUID, str], int] = {}
        # Claim keys in one global order: another process's group commit may hold the same keys,
        # and claiming them in arrival order would let two batches deadlock on each other.
        claim_order = sorted(
            range(len(requests)),
            key=lambda i: (
                requests[i].idempotency_key is not None,
                str(requests[i].producer_key_id),
                requests[i].idempotency_key or "",
            ),
        )
        async with self.pool.acquire() as conn, conn.transaction():
            for i in claim_order:
                request = requests[i]
                answer = IngestAnswer(status=202, body={"accepted": len(request.items)})
                if request.idempotency_key is None:
                    fresh.append(i)
                    answers[i] = answer
                    continue
                ident = (request.producer_key_id, request.idempotency_key)
                if ident in first_with_key:  # same key twice in one group commit
                    answers[i] = None
                    continue
                await conn.execute(Q.reclaim_expired_idempotency_key, *ident)
                claimed = await conn.fetchval(
                    Q.claim_idempotency_key, *ident, answer.status, answer.body
                )
                if claimed:
                    first_with_key[ident] = i
                    fresh.append(i)
                    answers[i] = answer
                else:
                    row = await conn.fetchrow(Q.get_idempotent_answer, *ident)
                    answers[i] = IngestAnswer(
                        status=row["response_status"], body=row["response_body"], replayed=True
                    )
            records: list[tuple[Any, ...]] = []
            for i in sorted(fresh):  # arrival order: resources keep their first-seen order
                for item in requests[i].items:
                    records.append(
                        (item.partner_id, item.event_name, item.resource, item.occurred_at)
                    )
            await _store_resource_events(conn, records, rules, trace_parent)
        for i, request in enumerate(requests):
            if answers[i] is None:
                assert request.idempotency_key is not None
                first = first_with_key[(request.producer_key_id, request.idempotency_key)]
                first_answer = answers[first]
                assert first_answer is not None
                answers[i] = IngestAnswer(
                    status=first_answer.status, body=first_answer.body, replayed=True
                )
        return [a for a in answers if a is not None]

    async def move_operational_events(self, rules: WindowRules, *, limit: int = 1000) -> int:
        """Outbox rows the status triggers wrote (migration 0008) become resource events.

        One transaction deletes what it stores, so each row becomes exactly one resource event;
        concurrent aggregators take different rows (SKIP LOCKED). Returns the rows moved.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            # DELETE ... RETURNING has no order; transitions keep theirs (first-seen order).
            rows = sorted(await conn.fetch(Q.take_operational_events, limit), key=lambda r: r["id"])
            await _store_resource_events(
                conn,
                [(r["partner_id"], r["event_name"], r["resource"], r["created_at"]) for r in rows],
                rules,
                None,
            )
        return len(rows)


async def _store_resource_events(
    conn: asyncpg.Connection,
    records: list[tuple[Any, ...]],
    rules: WindowRules,
    trace_parent: str | None,
) -> None:
    """``(partner_id, event_name, resource, occurred_at)`` rows into their windows."""
    if not records:
        return
    groups: dict[tuple[uuid.UUID, str], int] = {}
    for partner_id, event_name, _resource, _at in records:
        group = (partner_id, event_name)
        groups[group] = groups.get(group, 0) + 1
    # The window groups first, then their rows: a close relies on every transaction that
    # inserts a group's resource events holding that group's row lock.
    ordered = sorted(groups.items(), key=lambda kv: (str(kv[0][0]), kv[0][1]))
    await conn.execute(
        Q.upsert_window_groups,
        [g[0][0] for g in ordered],
        [g[0][1] for g in ordered],
        [g[1] for g in ordered],
        rules.min_seconds,
        rules.max_seconds,
        rules.max_resources,
        trace_parent,
    )
    await conn.copy_records_to_table(
        "resource_events",
        records=records,
        columns=("partner_id", "event_name", "resource", "occurred_at"),
    )
