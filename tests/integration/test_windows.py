"""Aggregation windows: the three close rules, dedup, fan-out, and exactly-once closing.

Every assertion is checked against the ``events`` rows in PostgreSQL and, where delivery is on,
against what a real receiver got. Timing is asserted only with wide margins: the machine is
shared, so ordering and counts carry the weight.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from typing import Any

from broker.store.db import create_pool
from broker.store.store import Store, WindowRules
from tests.conftest import TEST_KEYS, bearer, make_world, wait_until

R = "core/v1/dda/accounts/"


async def event_rows(db) -> list[Any]:
    return await db.fetch(
        "SELECT id, registration_id, event_name, resources, status, attempt_count, created_at"
        " FROM event_objects WHERE event_name <> 'test.event' ORDER BY created_at, id"
    )


async def wait_for_events(db, count: int, timeout: float = 10.0) -> list[Any]:
    async def enough() -> bool:
        return len(await event_rows(db)) >= count

    await wait_until(enough, timeout=timeout)
    return await event_rows(db)


async def test_a_quiet_window_closes_after_min_seconds_with_every_resource_once(
    make_client, receiver, db
):
    client = await make_client(workers=True, window_min_seconds=0.8, window_max_seconds=8.0)
    world = await make_world(client)
    await world.register(receiver.url)
    started = time.monotonic()
    await world.emit([R + "1", R + "2", R + "1"])
    await asyncio.sleep(0.3)  # well inside the quiet period: the same window
    before_last = time.monotonic()
    await world.emit([R + "3", R + "2", R + "4"])
    [row] = await wait_for_events(db, 1)
    closed = time.monotonic()
    assert list(row["resources"]) == [R + "1", R + "2", R + "3", R + "4"]  # first-seen order
    # The window waited for quiet after the *last* emit, and not for window_max_seconds.
    assert closed - before_last >= 0.8 - 0.05
    assert closed - started < 7.0
    [delivery] = await receiver.wait_for(1)
    assert delivery.json()["resources"] == list(row["resources"])
    # Nothing is left behind for another window.
    assert await db.fetchval("SELECT count(*) FROM resource_events") == 0
    assert await db.fetchval("SELECT count(*) FROM window_groups") == 0


async def test_resources_after_a_window_closed_open_a_new_one(make_client, receiver, db):
    client = await make_client(workers=True, window_min_seconds=0.3, window_max_seconds=3.0)
    world = await make_world(client)
    await world.register(receiver.url)
    await world.emit([R + "a", R + "b"])
    await wait_for_events(db, 1)
    await world.emit([R + "b", R + "c"])  # "b" again: a new window, so it appears again
    rows = await wait_for_events(db, 2)
    assert [list(r["resources"]) for r in rows] == [[R + "a", R + "b"], [R + "b", R + "c"]]
    await receiver.wait_for(2)
    assert sorted(d.json()["id"] for d in receiver.received) == sorted(str(r["id"]) for r in rows)


async def test_a_window_kept_open_by_arrivals_closes_at_max_seconds(make_client, receiver, db):
    client = await make_client(workers=True, window_min_seconds=1.0, window_max_seconds=2.0)
    world = await make_world(client)
    await world.register(receiver.url)
    sent: list[str] = []
    times: list[float] = []
    first_closed_at: float | None = None
    i = 0
    start = time.monotonic()
    # Emit every ~0.15 s for 4 s: never quiet for 1 s, so only the 2 s maximum closes windows.
    while time.monotonic() - start < 4.0:
        resource = f"{R}{i}"
        times.append(time.monotonic())
        await world.emit([resource])
        sent.append(resource)
        i += 1
        if first_closed_at is None and await db.fetchval("SELECT count(*) FROM events"):
            first_closed_at = time.monotonic()
        await asyncio.sleep(0.15)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) < 1.0, f"the test itself stalled ({max(gaps):.2f}s): cannot judge the rule"
    # The first window closed while events were still arriving, no earlier than its maximum.
    assert first_closed_at is not None
    assert first_closed_at - times[0] >= 2.0 - 0.05

    async def all_closed() -> bool:
        return await db.fetchval("SELECT count(*) FROM window_groups") == 0

    await wait_until(all_closed)  # the last window closes by the quiet rule after arrivals stop
    rows = await event_rows(db)
    assert len(rows) >= 2
    # Each resource exactly once, windows in order, each window a contiguous run of arrivals.
    flattened = [r for row in rows for r in row["resources"]]
    assert flattened == sent
    # No window exceeded its maximum: at most ~2 s / 0.15 s arrivals (+ slack for scheduling).
    assert all(len(row["resources"]) <= 2.0 / 0.15 + 3 for row in rows[:-1])


async def test_max_resources_closes_at_once_and_the_rest_open_the_next_window(
    make_client, receiver, db
):
    client = await make_client(
        workers=True, window_min_seconds=4.0, window_max_seconds=8.0, window_max_resources=3
    )
    world = await make_world(client)
    await world.register(receiver.url)
    started = time.monotonic()
    await world.emit([R + "a", R + "b", R + "c", R + "d", R + "e"])
    [first] = await wait_for_events(db, 1, timeout=3.0)  # long before the 4 s quiet rule
    assert time.monotonic() - started < 3.0
    assert list(first["resources"]) == [R + "a", R + "b", R + "c"]
    # The rest waits in a new window that closes by the quiet rule, not at once.
    await asyncio.sleep(1.0)
    assert len(await event_rows(db)) == 1
    rows = await wait_for_events(db, 2, timeout=10)
    assert [list(r["resources"]) for r in rows] == [[R + "a", R + "b", R + "c"], [R + "d", R + "e"]]
    assert time.monotonic() - started >= 4.0 - 0.05
    await receiver.wait_for(2)


async def test_a_large_batch_splits_into_full_windows_in_order(make_client, receiver, db):
    client = await make_client(
        workers=True, window_min_seconds=3.0, window_max_seconds=8.0, window_max_resources=4
    )
    world = await make_world(client)
    await world.register(receiver.url)
    resources = [f"{R}{i}" for i in range(14)]
    await world.emit(resources)
    rows = await wait_for_events(db, 3, timeout=3.0)  # three full windows at once
    assert [list(r["resources"]) for r in rows[:3]] == [
        resources[0:4],
        resources[4:8],
        resources[8:12],
    ]
    rows = await wait_for_events(db, 4, timeout=10)
    assert list(rows[3]["resources"]) == resources[12:14]


async def test_duplicates_do_not_count_toward_max_resources(make_client, receiver, db):
    client = await make_client(
        workers=True, window_min_seconds=4.0, window_max_seconds=10.0, window_max_resources=3
    )
    world = await make_world(client)
    await world.register(receiver.url)
    # Six resource events but only two distinct resources: the window must stay open.
    await world.emit([R + "a", R + "a", R + "b", R + "a", R + "b", R + "b"])
    await asyncio.sleep(1.2)  # several aggregator passes (poll 0.2 s)
    assert await event_rows(db) == []
    await world.emit([R + "b", R + "c", R + "a", R + "d"])  # the third distinct resource: full
    started = time.monotonic()
    [first] = await wait_for_events(db, 1, timeout=3.0)
    assert time.monotonic() - started < 3.0
    assert list(first["resources"]) == [R + "a", R + "b", R + "c"]
    rows = await wait_for_events(db, 2, timeout=10)
    assert list(rows[1]["resources"]) == [R + "d"]


async def test_groups_are_per_partner_and_event_name(make_client, receiver, db):
    client = await make_client(workers=True, window_min_seconds=0.5, window_max_seconds=3.0)
    world = await make_world(client, event_types=("Core.Account.Opened", "Core.Account.Closed"))
    other = await make_world(client, event_types=("Core.Account.Opened",))
    await world.register(receiver.url, ["Core.Account.*"])
    await other.register(receiver.url, ["*"])
    await world.emit([R + "1", R + "2"], event_name="Core.Account.Opened")
    await world.emit([R + "2", R + "3"], event_name="Core.Account.Closed")
    await other.emit([R + "1", R + "9"], event_name="Core.Account.Opened")
    rows = await wait_for_events(db, 3)
    got = {
        (str(row["registration_id"]), row["event_name"], tuple(row["resources"])) for row in rows
    }
    mine = await (await client.get("/webhooks/v1/registrations", headers=world.partner)).json()
    theirs = await (await client.get("/webhooks/v1/registrations", headers=other.partner)).json()
    mine_id, theirs_id = mine["data"][0]["id"], theirs["data"][0]["id"]
    assert got == {
        (mine_id, "Core.Account.Opened", (R + "1", R + "2")),
        (mine_id, "Core.Account.Closed", (R + "2", R + "3")),
        (theirs_id, "Core.Account.Opened", (R + "1", R + "9")),
    }
    bodies = await receiver.wait_for(3)
    assert {d.json()["partnerId"] for d in bodies} == {world.partner_id, other.partner_id}


async def test_fan_out_to_every_matching_registration_that_is_not_deleted(
    make_client, receiver, db
):
    client = await make_client(workers=True, window_min_seconds=0.5, window_max_seconds=3.0)
    world = await make_world(
        client, event_types=("Core.Account.Opened", "Core.Card.Issued", "Core.Accounts.Opened")
    )
    other = await make_world(client)
    url = receiver.url
    exact = await world.register(url + "/exact", ["Core.Account.Opened"])
    prefix = await world.register(url + "/prefix", ["Core.Card.Issued", "Core.Account.*"])
    star = await world.register(url + "/star", ["*"])
    # "Core.Acc" is a prefix of the name as text but not a dotted prefix: no match.
    await world.register(url + "/no", ["Core.Card.Issued", "Core.Accounts.Opened"])
    await world.register(url + "/deeper", ["Core.Account.Opened.*"])
    deleted = await world.register(url + "/deleted", ["*"])
    paused = await world.register(url + "/paused", ["Core.Account.Opened"])
    suspended = await world.register(url + "/suspended", ["Core.*"])
    await other.register(url + "/other", ["*"])  # another partner's: never included
    resp = await client.delete(f"/webhooks/v1/registrations/{deleted['id']}", headers=world.partner)
    assert resp.status == 204
    resp = await client.post(
        f"/webhooks/v1/registrations/{paused['id']}/pause", headers=world.partner
    )
    assert resp.status == 200
    await db.execute(
        "UPDATE registrations SET status = 'Suspended' WHERE id = $1::uuid", suspended["id"]
    )
    await world.emit([R + "1", R + "2"])
    rows = await wait_for_events(db, 5)
    await asyncio.sleep(0.8)  # a late sixth event object would show up by now
    rows = await event_rows(db)
    by_reg = {str(r["registration_id"]): r for r in rows}
    assert set(by_reg) == {exact["id"], prefix["id"], star["id"], paused["id"], suspended["id"]}
    assert len(rows) == 5
    assert all(list(r["resources"]) == [R + "1", R + "2"] for r in rows)
    assert all(r["event_name"] == "Core.Account.Opened" for r in rows)
    # Only the Active ones are delivered; Paused and Suspended wait queued, never attempted.
    deliveries = await receiver.wait_for(3)
    await asyncio.sleep(0.6)
    assert sorted(d.json()["registrationId"] for d in receiver.received) == sorted(
        [exact["id"], prefix["id"], star["id"]]
    )
    assert len(deliveries) == 3
    for reg in (paused, suspended):
        row = await db.fetchrow(
            "SELECT status, attempt_count FROM events WHERE registration_id = $1::uuid", reg["id"]
        )
        assert (row["status"], row["attempt_count"]) == ("Pending", 0)
    # The partner sees the queued ones through the API too.
    resp = await client.get(
        f"/webhooks/v1/events?registrationId={paused['id']}", headers=world.partner
    )
    [queued] = (await resp.json())["data"]
    assert queued["status"] == "Pending" and queued["lastAttemptedAt"] is None


async def test_a_window_with_no_matching_registration_creates_nothing(make_client, db):
    client = await make_client(workers=True, window_min_seconds=0.3, window_max_seconds=2.0)
    world = await make_world(client, event_types=("Core.Account.Opened", "Core.Card.Issued"))
    await world.register("http://127.0.0.1:9/none", ["Core.Card.Issued"])
    await world.emit([R + "1"])

    async def consumed() -> bool:
        return await db.fetchval("SELECT count(*) FROM window_groups") == 0

    await wait_until(consumed)
    assert await db.fetchval("SELECT count(*) FROM resource_events") == 0
    assert await db.fetchval("SELECT count(*) FROM events") == 0


# ---------------------------------------------------------------------- exactly once under races


def _assert_each_resource_once(rows, expected: dict[tuple[str, str], list[str]]) -> None:
    """Per (registration, event name): every expected resource in exactly one event object."""
    seen: dict[tuple[str, str], Counter[str]] = {}
    for row in rows:
        key = (str(row["registration_id"]), row["event_name"])
        resources = list(row["resources"])
        assert len(resources) == len(set(resources)), "a resource twice in one event object"
        seen.setdefault(key, Counter()).update(resources)
    assert set(seen) == set(expected)
    for key, resources in expected.items():
        counts = seen[key]
        twice = [r for r, n in counts.items() if n > 1]
        assert not twice, f"{key}: in two event objects: {twice[:5]}"
        assert set(counts) == set(resources), f"{key}: missing {set(resources) - set(counts)}"


async def test_two_stores_racing_close_each_window_exactly_once(make_client, db_url, db):
    """close_due_windows from two pools at once, many times over, on many due groups."""
    names = tuple(f"Core.Race.E{i}" for i in range(12))
    rules = WindowRules(min_seconds=0.3, max_seconds=1.0, max_resources=7)
    client = await make_client(
        workers=False, window_min_seconds=0.3, window_max_seconds=1.0, window_max_resources=7
    )
    world = await make_world(client, event_types=names)
    reg_a = await world.register("http://127.0.0.1:9/a", ["*"])
    reg_b = await world.register("http://127.0.0.1:9/b", ["Core.Race.*"])
    expected: dict[tuple[str, str], list[str]] = {}
    for i, name in enumerate(names):
        # Some groups stay below the cap, some need several full windows plus a remainder.
        resources = [f"{R}{i}-{j}" for j in range(3 + 4 * i)]
        # Duplicates early, inside the first window. (A repeat after the cap has been reached
        # belongs to the next window: a later change of that resource.)
        await world.emit(resources[:3] + resources, event_name=name)
        for reg in (reg_a, reg_b):
            expected[(reg["id"], name)] = resources
    await asyncio.sleep(0.4)  # every group is now due (quiet), some several times over (full)
    pools = [await create_pool(db_url, size=4) for _ in range(2)]
    try:
        stores = [Store(pool, keys=TEST_KEYS) for pool in pools]

        async def hammer(store: Store) -> int:
            created = 0
            async with asyncio.timeout(10):
                while await db_count_groups(store):
                    result = await store.close_due_windows(rules, limit=1)
                    created += result.created
                    if not result.claimed:  # remainders open new windows, due 0.3 s later
                        await asyncio.sleep(0.02)
            return created

        results = await asyncio.gather(*(hammer(s) for s in stores for _ in range(3)))
    finally:
        for pool in pools:
            await pool.close()
    assert await db.fetchval("SELECT count(*) FROM window_groups") == 0
    assert await db.fetchval("SELECT count(*) FROM resource_events") == 0
    rows = await event_rows(db)
    assert sum(results) == len(rows)
    _assert_each_resource_once(rows, expected)
    # A capped group became several windows, each at most max_resources, in first-seen order.
    for reg in (reg_a, reg_b):
        big = [
            list(r["resources"])
            for r in rows
            if str(r["registration_id"]) == reg["id"] and r["event_name"] == names[-1]
        ]
        assert all(len(w) <= 7 for w in big)
        assert [x for w in big for x in w] == expected[(reg["id"], names[-1])]


async def db_count_groups(store: Store) -> int:
    return int(await store.pool.fetchval("SELECT count(*) FROM window_groups"))


async def test_two_apps_with_aggregators_close_each_window_once(make_client, receiver, db):
    names = tuple(f"Core.Race.E{i}" for i in range(6))
    settings = {"window_min_seconds": 0.3, "window_max_seconds": 1.0, "window_max_resources": 5}
    first = await make_client(workers=True, **settings)
    second = await make_client(workers=True, **settings)
    world = await make_world(first, event_types=names)
    reg = await world.register(receiver.url, ["*"])
    expected: dict[tuple[str, str], list[str]] = {name: [] for name in names}
    # Producers write through both apps, in rounds, while both aggregators close windows.
    producer = bearer(world.producer_key)
    for round_ in range(6):
        for i, name in enumerate(names):
            resources = [f"{R}{round_}-{i}-{j}" for j in range(1 + (round_ + i) % 4)]
            app = first if (round_ + i) % 2 else second
            resp = await app.post(
                "/internal/v1/resource-events",
                json={
                    "events": [
                        {"partnerId": world.partner_id, "eventName": name, "resource": r}
                        for r in resources
                    ]
                },
                headers=producer,
            )
            assert resp.status == 202, await resp.text()
            expected[name].extend(resources)
        await asyncio.sleep(0.15)

    async def drained() -> bool:
        groups = await db.fetchval("SELECT count(*) FROM window_groups")
        pending = await db.fetchval("SELECT count(*) FROM events WHERE status = 'Pending'")
        return groups == 0 and pending == 0

    await wait_until(drained, timeout=15)
    rows = await event_rows(db)
    _assert_each_resource_once(rows, {(reg["id"], n): r for n, r in expected.items()})
    # Each event object reached the receiver, and the receiver saw no event object twice.
    ids = Counter(d.headers["webhook-id"] for d in receiver.received)
    assert set(ids) == {str(r["id"]) for r in rows}
    assert all(n == 1 for n in ids.values())


# ---------------------------------------------------------------------- work and locking


class PausedCloseStore(Store):
    """A close that stops just before it creates its event objects: the window is folded, its
    close lock held and its transaction open, as in a long close of a huge window."""

    def __init__(self, pool) -> None:
        super().__init__(pool)
        self.reached = asyncio.Event()
        self.go = asyncio.Event()

    async def _create_event_objects(self, conn, *args: Any) -> int:
        self.reached.set()
        await self.go.wait()
        return await super()._create_event_objects(conn, *args)


async def test_a_close_in_progress_never_makes_ingest_wait(make_client, db_url, db):
    settings = {"window_min_seconds": 0.3, "window_max_seconds": 2.0, "window_max_resources": 3}
    rules = WindowRules(min_seconds=0.3, max_seconds=2.0, max_resources=3)
    client = await make_client(workers=False, **settings)
    hot = await make_world(client)
    other = await make_world(client)
    await hot.register("http://127.0.0.1:9/hot")
    await other.register("http://127.0.0.1:9/other")
    await hot.emit([R + "a", R + "b", R + "c", R + "d", R + "e"])  # full: due at once
    pools = [await create_pool(db_url, size=2) for _ in range(2)]
    try:
        paused, plain = PausedCloseStore(pools[0]), Store(pools[1])
        closing = asyncio.create_task(paused.close_due_windows(rules, limit=1))
        async with asyncio.timeout(10):
            await paused.reached.wait()
        # While the hot window's close is open: the same group and another partner ingest,
        # and another process's aggregator closes other windows but not the one being closed.
        async with asyncio.timeout(10):
            await hot.emit([R + "f"])
            await other.emit([R + "x"])
        await asyncio.sleep(0.4)  # the other partner's window is quiet, so due
        result = await plain.close_due_windows(rules)
        assert (result.closed, result.created) == (1, 1)
        assert [r["event_name"] for r in await event_rows(db)] == [other.event_name]
        paused.go.set()
        first = await closing
        assert (first.claimed, first.closed, first.created) == (1, 1, 1)
        await asyncio.sleep(0.4)
        async with asyncio.timeout(10):
            while await db_count_groups(plain):
                await plain.close_due_windows(rules)
                await asyncio.sleep(0.05)
    finally:
        for pool in pools:
            await pool.close()
    rows = await db.fetch(
        "SELECT partner_id::text AS partner, resources FROM event_objects ORDER BY created_at, id"
    )
    windows = {
        p: [list(r["resources"]) for r in rows if r["partner"] == p]
        for p in {r["partner"] for r in rows}
    }
    assert windows == {
        other.partner_id: [[R + "x"]],
        hot.partner_id: [[R + "a", R + "b", R + "c"], [R + "d", R + "e", R + "f"]],
    }
    assert await db.fetchval("SELECT count(*) FROM resource_events") == 0


async def test_draining_a_backlog_reads_each_resource_event_about_once(make_client, db_url, db):
    """A backlog of many full windows: each close reads what it folds (plus the one resource
    event that tells it the window is full), not the rest of the backlog."""
    rules = WindowRules(min_seconds=5.0, max_seconds=10.0, max_resources=100)
    client = await make_client(
        workers=False, window_min_seconds=5.0, window_max_seconds=10.0, window_max_resources=100
    )
    world = await make_world(client)
    await world.register("http://127.0.0.1:9/a")
    resources = [f"{R}{i}" for i in range(2050)]
    for i in range(0, len(resources), 500):
        await world.emit(resources[i : i + 500])
    pool = await create_pool(db_url, size=2)
    try:
        store = Store(pool)
        read = closes = claims = 0
        while True:
            result = await store.close_due_windows(rules, limit=7)
            read, closes = read + result.read, closes + result.closed
            claims += result.claimed
            if result.claimed < 7:
                break
    finally:
        await pool.close()
    rows = await event_rows(db)
    assert [list(r["resources"]) for r in rows] == [
        resources[i : i + 100] for i in range(0, 2000, 100)
    ]
    assert closes == 20  # the last 50 wait for the quiet rule
    # The full windows close together (one transaction, RESOURCES_PER_CLOSE allows 200 of
    # them), each resource event read once: the last 50 too, to learn they are not full.
    assert read == 2050
    assert claims == 1
    assert await db.fetchval("SELECT queued_count FROM window_groups") == 50
