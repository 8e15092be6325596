"""Small ingest requests commit apart from big ones (broker/api/group_commit.py): a one-item
request is answered while big batches of another group wait for that group's row lock, and
all-or-nothing and Idempotency-Key hold across the two lanes. Over HTTP, rows in PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from broker.api.group_commit import MAX_FLUSHES, SMALL_REQUEST_ITEMS
from tests.conftest import make_world, wait_until
from tests.integration.test_ingest import count, post

HOT, OTHER = "Core.Account.Opened", "Core.Account.Closed"


def items(world: Any, name: str, prefix: str, n: int) -> dict[str, Any]:
    return {
        "events": [
            {"partnerId": world.partner_id, "eventName": name, "resource": f"{prefix}/{i}"}
            for i in range(n)
        ]
    }


async def lock_waiters(db: Any) -> int:
    return int(
        await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND datname = current_database()"
        )
    )


@contextlib.asynccontextmanager
async def holding_group(db_url: str, world: Any, name: str) -> AsyncIterator[None]:
    """A transaction (on a connection of its own: pg_stat_activity reads stay fresh on ``db``)
    holding the (partner, name) window group's row lock: every commit upserting it waits."""
    conn = await asyncpg.connect(db_url)
    try:
        async with conn.transaction():
            await conn.execute(
                "SELECT 1 FROM window_groups WHERE partner_id = $1::uuid AND event_name = $2"
                " FOR UPDATE",
                world.partner_id,
                name,
            )
            yield
    finally:
        await conn.close()


async def test_a_small_request_commits_while_big_batches_wait_for_their_group(client, db, db_url):
    world = await make_world(client, event_types=(HOT, OTHER))
    await world.emit(["core/v1/hot/seed"], event_name=HOT)  # the group row exists
    big = SMALL_REQUEST_ITEMS + 1
    waiting = []
    async with holding_group(db_url, world, HOT):
        # Every commit slot of the big lane taken by a batch stuck on the hot group's lock.
        for n in range(MAX_FLUSHES):
            waiting.append(asyncio.ensure_future(post(world, items(world, HOT, f"b{n}", big))))
            await wait_until(lambda n=n: _waiters_at_least(db, n + 1), timeout=10)
        # Answered while both stay stuck (before the lanes it waited for a free slot: forever).
        small = await asyncio.wait_for(post(world, items(world, OTHER, "s", 1)), timeout=30)
        assert small.status == 202, await small.text()
        assert not any(w.done() for w in waiting)
        rows = await db.fetchval(
            "SELECT count(*) FROM resource_events WHERE event_name = $1", OTHER
        )
        assert rows == 1
    for resp in await asyncio.gather(*waiting):
        assert resp.status == 202, await resp.text()
        assert await resp.json() == {"accepted": big}
    assert await count(db, "resource_events") == 1 + 1 + MAX_FLUSHES * big


async def _waiters_at_least(db: Any, n: int) -> bool:
    return await lock_waiters(db) >= n


async def test_one_idempotency_key_in_both_lanes_stores_the_first_request_only(client, db, db_url):
    world = await make_world(client, event_types=(HOT, OTHER))
    await world.emit(["core/v1/hot/seed"], event_name=HOT)
    big = SMALL_REQUEST_ITEMS + 1
    key = {"Idempotency-Key": "lanes-1"}
    async with holding_group(db_url, world, HOT):
        first = asyncio.ensure_future(post(world, items(world, HOT, "b", big), **key))
        await wait_until(lambda: _waiters_at_least(db, 1), timeout=10)
        # The same key on a one-item request: it waits for the first request's claim.
        second = asyncio.ensure_future(post(world, items(world, OTHER, "s", 1), **key))
        await wait_until(lambda: _waiters_at_least(db, 2), timeout=10)
        assert not first.done() and not second.done()
    one, two = await first, await second
    assert one.status == 202 and await one.json() == {"accepted": big}
    assert "Idempotent-Replayed" not in one.headers
    assert two.status == 202 and await two.json() == {"accepted": big}
    assert two.headers["Idempotent-Replayed"] == "true"
    assert (
        await db.fetchval("SELECT count(*) FROM resource_events WHERE event_name = $1", OTHER) == 0
    )
    assert await count(db, "resource_events") == 1 + big
