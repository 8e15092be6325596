"""The delivery queue (delivery_queue + delivery_ready): what each claim and result does to the
rows, and the correctness rules of recording, releasing, resending and the state machine.

Receivers are real aiohttp servers; claims and results go through the store on the real
PostgreSQL, and what a partner sees is checked through the API.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp import web

from broker.domain.states import Trigger
from broker.store.db import create_pool
from broker.store.store import ClaimedDelivery, DeliveryResult, Store, WindowRules
from broker.workers.housekeeping import Housekeeping
from tests.conftest import TEST_KEYS, World, make_settings, make_world, wait_until
from tests.integration.test_policy_delivery import queue_events

R = "core/v1/dda/accounts/"
RULES = WindowRules(min_seconds=0.2, max_seconds=1, max_resources=1000)


async def _store(db_url: str) -> tuple[asyncpg.Pool, Store]:
    pool = await create_pool(db_url, size=3)
    return pool, Store(pool, keys=TEST_KEYS)


async def _queued(store: Store, world: World, resources: list[str]) -> None:
    """Emit and close the window by hand (no workers run in these tests unless asked)."""
    await world.emit(resources)

    async def created() -> bool:
        return bool((await store.close_due_windows(RULES)).created)

    await wait_until(created, timeout=5)


async def _claim(store: Store, worker: str, lease: float = 30.0) -> list[ClaimedDelivery]:
    return await store.claim_deliveries(
        limit=10, per_registration=16, lease_seconds=lease, worker_id=worker
    )


def _result(
    item: ClaimedDelivery,
    *,
    status: int | None,
    at: datetime | None = None,
    trigger: Trigger | None = None,
    event_status: str | None = None,
) -> DeliveryResult:
    success = status is not None and 200 <= status < 300
    return DeliveryResult(
        event_id=item.id,
        registration_id=item.registration_id,
        attempt_number=item.attempt_count,
        attempted_at=at or item.attempted_at,
        duration_ms=12,
        response_status=status,
        error=None if success else f"HTTP {status}",
        response_body="late" if success else "no",
        success=success,
        new_event_status=event_status or ("Success" if success else "Pending"),
        next_attempt_at=None if success else datetime.now(UTC) - timedelta(seconds=1),
        round_attempts=item.round_attempts,
        registration_trigger=trigger,
    )


async def _attempts(world: World, event_id: uuid.UUID | str) -> list[dict[str, Any]]:
    resp = await world.client.get(f"/webhooks/v1/events/{event_id}/attempts", headers=world.partner)
    assert resp.status == 200, await resp.text()
    data: list[dict[str, Any]] = (await resp.json())["data"]
    return data


async def _event(world: World, event_id: uuid.UUID | str) -> dict[str, Any]:
    resp = await world.client.get(f"/webhooks/v1/events/{event_id}", headers=world.partner)
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def _registration(world: World, reg_id: str) -> dict[str, Any]:
    resp = await world.client.get(f"/webhooks/v1/registrations/{reg_id}", headers=world.partner)
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def _post(world: World, path: str, body: Any = None) -> Any:
    return await world.client.post(path, json=body, headers=world.partner)


# ---------------------------------------------------------------------- queue rows


async def test_the_claim_is_a_hot_update_and_success_leaves_only_history(
    make_client, receiver, db, db_url
):
    """Claims change only unindexed columns of delivery_queue, so PostgreSQL updates the row in
    place (HOT: no index entry written); success deletes the queue row and leaves the history
    row with its attempts."""
    api = await make_client()
    world = await make_world(api)
    await world.register(receiver.url)
    pool, store = await _store(db_url)
    try:
        await _queued(store, world, [R + str(i) for i in range(3)])
        for n in range(4):  # four failed attempts (the breaker opens at five), due at once
            [item] = await _claim(store, f"w{n}")
            await store.record_results([_result(item, status=500)])
        [last] = await _claim(store, "w-final")
        await store.record_results([_result(last, status=200)])
    finally:
        await pool.close()  # its backends exit, which flushes their table statistics

    async def counted() -> bool:
        await db.execute("SELECT pg_stat_clear_snapshot()")
        updates = await db.fetchval(
            "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'delivery_queue'"
        )
        return bool(updates >= 9)  # five claims, four retries

    await wait_until(counted, timeout=10)
    hot = await db.fetchval(
        "SELECT n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'delivery_queue'"
    )
    assert hot >= 5  # every claim (a retry moves next_attempt_at, an indexed column: not HOT)
    assert (
        await db.fetchval("SELECT count(*) FROM delivery_queue WHERE event_id = $1", last.id) == 0
    )
    history = await db.fetchrow("SELECT status, attempt_count FROM events WHERE id = $1", last.id)
    assert (history["status"], history["attempt_count"]) == ("Success", 5)
    assert [a["attemptNumber"] for a in await _attempts(world, last.id)] == list(range(1, 6))


async def test_housekeeping_vacuums_the_dead_rows_every_delivery_leaves_in_the_queue(
    make_client, receiver, db, db_url
):
    """Each delivery leaves dead row versions in delivery_queue (its lease, its deletion) and
    delivery_ready (the counters) that every later claim steps over; the housekeeping job
    removes them, whether or not autovacuum is on."""
    api = await make_client()
    world = await make_world(api)
    await world.register(receiver.url)
    pool, store = await _store(db_url)
    try:
        await _queued(store, world, [R + str(i) for i in range(3)])
        for n in range(2):  # a failed attempt, then a success
            [item] = await _claim(store, f"w{n}")
            await store.record_results([_result(item, status=500 if n == 0 else 200)])
        assert await db.fetchval("SELECT count(*) FROM delivery_queue") == 0
    finally:
        await pool.close()  # its backends exit, which flushes their table statistics

    async def dead() -> dict[str, tuple[int, int]]:
        await db.execute("SELECT pg_stat_clear_snapshot()")
        rows = await db.fetch(
            "SELECT relname, n_dead_tup, vacuum_count FROM pg_stat_user_tables"
            " WHERE relname IN ('delivery_queue', 'delivery_ready')"
        )
        return {r["relname"]: (r["n_dead_tup"], r["vacuum_count"]) for r in rows}

    async def counted() -> bool:
        return all(n > 0 for n, _ in (await dead()).values())

    await wait_until(counted, timeout=10)
    pool, store = await _store(db_url)
    try:
        await Housekeeping(store, make_settings()).vacuum_queue_tables()
    finally:
        await pool.close()

    async def vacuumed() -> bool:
        return all(runs >= 1 for _, runs in (await dead()).values())

    await wait_until(vacuumed, timeout=10)
    assert await dead() == {"delivery_queue": (0, 1), "delivery_ready": (0, 1)}


async def test_the_pools_statements_are_never_jit_compiled(db, db_url):
    """A backlog inflates the planner's estimates past jit_above_cost (a generic plan of the
    claim with a million queued rows costs ~600,000), and compiling took ~0.9 s per claim for
    ~3 ms of work. Here every estimate is past the threshold, as a large backlog makes it."""
    if not await db.fetchval("SELECT pg_jit_available()"):  # db: the server's own settings
        pytest.skip("this PostgreSQL has no JIT (or has it off): nothing to turn off")
    pool, _ = await _store(db_url)
    try:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL jit_above_cost = 0")
            [plan] = orjson.loads(
                await conn.fetchval(
                    "EXPLAIN (ANALYZE, FORMAT JSON)"
                    " SELECT sum(g) FROM generate_series(1, 1000) AS g"
                )
            )
        assert "JIT" not in plan
    finally:
        await pool.close()


async def test_idle_registrations_are_never_visited_by_the_claim(make_client, receiver, db, db_url):
    """A registration with nothing due has no due ready row: the claim's cost follows due work."""
    api = await make_client()
    world = await make_world(api)
    busy = await world.register(receiver.url)
    idle = [await world.register(receiver.url + f"/idle{i}", eventTypes=["*"]) for i in range(3)]
    pool, store = await _store(db_url)
    try:
        # One window for every registration, then everything delivered: all idle again.
        await _queued(store, world, [R + "1"])
        claimed = await _claim(store, "w")
        assert {c.registration_id for c in claimed} == {uuid.UUID(r["id"]) for r in [busy, *idle]}
        await store.record_results([_result(c, status=200) for c in claimed])
        assert await _claim(store, "w") == []  # the claim after a result only finds it empty
        due = await db.fetchval("SELECT count(*) FROM delivery_ready WHERE next_due_at <= now()")
        assert due == 0
        parked = await db.fetchval(
            "SELECT count(*) FROM delivery_ready WHERE next_due_at = 'infinity'"
        )
        assert parked == 4
    finally:
        await pool.close()


async def test_a_rate_limited_registration_cut_short_by_the_claims_size_is_due_again_at_once(
    make_client, receiver, db, db_url
):
    """A busy registration at 1000/s (a burst of 100) has 10 tokens left when a claim of 2
    reaches it: the 8 it did not take are still there, so it is due now, not once half a burst
    is back (without this rule: 20 ms later). Measured before the rule: round robin gave a
    rate-limited registration a few rows of each claim, and it got 174 of its 200/s."""
    api = await make_client()
    world = await make_world(api)
    reg = await world.register(receiver.url, delivery={"rateLimitPerSecond": 1000})
    await queue_events(db_url, world, reg["id"], 20, at_once=True)
    # As after a claim that used 90 of its 100 tokens 9 ms ago.
    await db.execute(
        "UPDATE delivery_ready SET rate_next = now() - interval '9 milliseconds',"
        " next_due_at = now() - interval '1 second' WHERE registration_id = $1",
        uuid.UUID(reg["id"]),
    )
    pool, store = await _store(db_url)
    try:
        claimed = await store.claim_deliveries(
            limit=2, per_registration=16, lease_seconds=30, worker_id="w"
        )
        assert len(claimed) == 2
        due_in = await db.fetchval(
            "SELECT extract(epoch FROM next_due_at - now()) FROM delivery_ready"
            " WHERE registration_id = $1",
            uuid.UUID(reg["id"]),
        )
        assert due_in <= 0
    finally:
        await pool.close()


async def test_the_per_registration_cap_holds_across_concurrent_claimers(
    make_client, receiver, db, db_url
):
    api = await make_client()
    world = await make_world(api)
    await world.register(receiver.url)
    pools = [await create_pool(db_url, size=2) for _ in range(4)]
    try:
        stores = [Store(p, keys=TEST_KEYS) for p in pools]
        for i in range(6):  # six windows: six event objects for the one registration
            await _queued(stores[0], world, [R + str(i)])
        results = await asyncio.gather(
            *(
                s.claim_deliveries(
                    limit=50, per_registration=3, lease_seconds=30, worker_id=f"w{i}"
                )
                for i, s in enumerate(stores)
                for _ in range(3)
            )
        )
        total = sum(len(r) for r in results)
        assert total == 3
        in_flight = await db.fetchval("SELECT in_flight FROM delivery_ready")
        assert in_flight == total
        assert (
            await db.fetchval("SELECT count(*) FROM delivery_queue WHERE locked_until > now()")
            == total
        )
    finally:
        for p in pools:
            await p.close()


# ---------------------------------------------------------------------- attempts on record


async def test_a_late_real_result_replaces_the_worker_stopped_placeholder(
    make_client, receiver, db_url
):
    api = await make_client()
    world = await make_world(api)
    await world.register(receiver.url)
    pool, store = await _store(db_url)
    try:
        await _queued(store, world, [R + "1"])
        [first] = await _claim(store, "slow-worker", lease=0.3)
        await asyncio.sleep(0.4)  # the lease runs out: another worker takes the event
        [second] = await _claim(store, "other-worker")
        assert second.attempt_count == 2
        tries = await _attempts(world, first.id)
        assert tries[0]["responseStatus"] is None and "lease" in tries[0]["error"]
        # The slow worker's real answer for attempt 1 arrives now.
        await store.record_results([_result(first, status=200)])
        tries = await _attempts(world, first.id)
        assert [t["attemptNumber"] for t in tries] == [1]
        assert (tries[0]["responseStatus"], tries[0]["error"]) == (200, None)
        assert tries[0]["responseBody"] == "late"
        # It did not decide the event: attempt 2 holds the lease and decides.
        assert (await _event(world, first.id))["status"] == "Pending"
        await store.record_results([_result(second, status=200)])
        assert (await _event(world, first.id))["status"] == "Success"
    finally:
        await pool.close()


async def test_released_leases_keep_their_attempt_and_give_a_probe_no_extra_retry(
    make_client, receiver, db, db_url
):
    api = await make_client()
    world = await make_world(api)
    reg = await world.register(receiver.url)
    pool, store = await _store(db_url)
    try:
        await _queued(store, world, [R + "1"])
        [item] = await _claim(store, "draining")
        await store.release_leases([item.id], "draining")
        # The request may have reached the receiver: the attempt stays on record and counted.
        tries = await _attempts(world, item.id)
        assert [t["attemptNumber"] for t in tries] == [1]
        assert tries[0]["responseStatus"] is None and "shut down" in tries[0]["error"]
        [again] = await _claim(store, "next")
        assert (again.attempt_count, again.round_attempts) == (2, 2)
        await store.record_results([_result(again, status=410, trigger=Trigger.GONE)])
        assert (await _registration(world, reg["id"]))["status"] == "Suspended"

        # A restart probe does not use up the retry schedule, released or not.
        assert (await _post(world, f"/webhooks/v1/registrations/{reg['id']}/restart")).status == 200
        [probe] = await _claim(store, "draining")
        assert probe.probe and probe.round_attempts == 2
        await store.release_leases([probe.id], "draining")
        [probe2] = await _claim(store, "next")
        assert probe2.probe and (probe2.attempt_count, probe2.round_attempts) == (4, 2)
        assert [t["attemptNumber"] for t in await _attempts(world, item.id)] == [1, 2, 3]
        assert await db.fetchval("SELECT in_flight FROM delivery_ready") == 1
    finally:
        await pool.close()


# ---------------------------------------------------------------------- the state machine


async def test_two_triggers_in_one_flush_apply_in_attempt_order(make_client, receiver, db, db_url):
    """A probe success and then a 410 for the same registration in one batch: Active, then
    Suspended by the 410. Whatever the order within the batch, the later attempt wins."""
    api = await make_client()
    world = await make_world(api)
    reg = await world.register(receiver.url)
    pool, store = await _store(db_url)
    try:
        for i in range(2):
            await _queued(store, world, [R + str(i)])
        claimed = await _claim(store, "w")
        assert len(claimed) == 2
        await db.execute(
            "UPDATE registrations SET status = 'Restarting' WHERE id = $1", uuid.UUID(reg["id"])
        )
        now = datetime.now(UTC)
        ok = _result(claimed[0], status=200, at=now, trigger=Trigger.PROBE_OK)
        gone = _result(claimed[1], status=410, at=now + timedelta(seconds=1), trigger=Trigger.GONE)
        moved = await store.record_results([gone, ok])  # listed out of order on purpose
        assert [(str(r), s.value) for r, s in moved] == [(reg["id"], "Suspended")]
        assert (await _registration(world, reg["id"]))["status"] == "Suspended"
    finally:
        await pool.close()


@pytest.mark.parametrize("status", [500, 200])
async def test_flushes_of_the_same_registrations_in_opposite_orders_never_deadlock(
    make_client, receiver, db, db_url, status
):
    """Failures go through the flush's transaction, successes through record_successes: both
    lock registrations and ready rows in id order."""
    api = await make_client()
    world = await make_world(api)
    regs = [await world.register(receiver.url + f"/{i}") for i in range(4)]
    pools = [await create_pool(db_url, size=2) for _ in range(2)]
    try:
        a, b = (Store(p, keys=TEST_KEYS) for p in pools)
        for round_ in range(5):
            await _queued(a, world, [R + f"{round_}-{i}" for i in range(2)])
            claimed = await a.claim_deliveries(
                limit=100, per_registration=16, lease_seconds=30, worker_id="w"
            )
            assert {c.registration_id for c in claimed} == {uuid.UUID(r["id"]) for r in regs}
            by_reg = sorted(claimed, key=lambda c: c.registration_id)
            forward = [_result(c, status=status) for c in by_reg[::2]]
            backward = [_result(c, status=status) for c in by_reg[1::2]][::-1]
            await asyncio.gather(a.record_results(forward), b.record_results(backward))
            await db.execute("UPDATE delivery_queue SET next_attempt_at = now()")
            await db.execute(
                "UPDATE delivery_ready SET next_due_at = now(), breaker_state = 'closed',"
                " breaker_failures = 0, concurrency = 16"
            )
    finally:
        for p in pools:
            await p.close()


async def test_a_flush_mixing_successes_and_failures_records_each_registration_as_alone(
    make_client, receiver, db, db_url
):
    """One registration's success and another's failure in one batch: the success is recorded
    by record_successes, the failure by the transaction; each moves as it would alone."""
    api = await make_client(workers=False)
    world = await make_world(api)
    ok_reg = uuid.UUID((await world.register(receiver.url))["id"])
    bad_reg = uuid.UUID((await world.register(receiver.url))["id"])
    pool, store = await _store(db_url)
    try:
        await _queued(store, world, [R + "1"])
        claimed = {c.registration_id: c for c in await _claim(store, "w")}
        ok, bad = claimed[ok_reg], claimed[bad_reg]
        assert await store.record_results([_result(bad, status=500), _result(ok, status=200)]) == []
        rows = {
            r["registration_id"]: r
            for r in await db.fetch(
                "SELECT d.registration_id, d.in_flight, d.concurrency, d.slow_until IS NOT NULL"
                " AS slow, r.consecutive_failures, r.last_success_at IS NOT NULL AS succeeded"
                " FROM delivery_ready d JOIN registrations r ON r.id = d.registration_id"
            )
        }
        assert dict(rows[ok_reg]) == {
            "registration_id": ok_reg,
            "in_flight": 0,
            "concurrency": 5,  # 4 to start, +1
            "slow": False,
            "consecutive_failures": 0,
            "succeeded": True,
        }
        assert dict(rows[bad_reg]) == {
            "registration_id": bad_reg,
            "in_flight": 0,
            "concurrency": 2,  # halved
            "slow": True,
            "consecutive_failures": 1,
            "succeeded": False,
        }
        assert [a["responseStatus"] for a in await _attempts(world, ok.id)] == [200]
        assert [a["responseStatus"] for a in await _attempts(world, bad.id)] == [500]
        assert dict(
            await db.fetch(
                "SELECT e.registration_id, e.status FROM events e ORDER BY e.registration_id"
            )
        ) == {ok_reg: "Success", bad_reg: "Pending"}
        rollups = await db.fetch(
            "SELECT registration_id, success, failure FROM attempt_rollups WHERE width_minutes = 1"
        )
        assert {r["registration_id"]: (r["success"], r["failure"]) for r in rollups} == {
            ok_reg: (1, 0),
            bad_reg: (0, 1),
        }
    finally:
        await pool.close()


async def test_unpause_after_a_pause_that_interrupted_a_restart_probes_first(
    make_client, receiver, db
):
    """restart -> pause -> unpause: the probe is still owed, so unpause resumes the restart
    (Restarting, one probe, then Active) instead of going straight to Active. No worker runs
    until the restart has been paused, so the probe cannot have happened in between."""
    api = await make_client(workers=False)
    world = await make_world(api)
    reg = await world.register(receiver.url)
    rid = reg["id"]
    await db.execute("UPDATE registrations SET status = 'Suspended' WHERE id = $1", uuid.UUID(rid))
    for action, status in (
        ("restart", "Restarting"),
        ("pause", "Paused"),
        ("unpause", "Restarting"),
    ):
        resp = await _post(world, f"/webhooks/v1/registrations/{rid}/{action}")
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["status"] == status
    # A plain pause/unpause of an Active registration is unchanged: back to Active.
    other = await world.register(receiver.url)
    for action, status in (("pause", "Paused"), ("unpause", "Active")):
        resp = await _post(world, f"/webhooks/v1/registrations/{other['id']}/{action}")
        assert (await resp.json())["status"] == status
    # And the owed probe is made: with a worker, the next event is one probe, then Active.
    await make_client(workers=True)
    await world.emit([R + "1"])
    await receiver.wait_for(1)

    async def active() -> bool:
        return (await _registration(world, rid))["status"] == "Active"

    await wait_until(active)


# ---------------------------------------------------------------------- resend


async def test_test_events_never_enter_the_queue(make_client, receiver, db):
    async def fail(_request: web.Request, _n: int) -> web.StreamResponse:
        return web.Response(status=500)

    receiver.behaviour = fail
    api = await make_client(workers=True)
    world = await make_world(api)
    reg = await world.register(receiver.url)
    rid = reg["id"]
    resp = await _post(world, f"/webhooks/v1/registrations/{rid}/test")
    assert (await resp.json())["success"] is False
    [test_event] = [
        e
        for e in (
            await (
                await world.client.get(
                    "/webhooks/v1/events", params={"registrationId": rid}, headers=world.partner
                )
            ).json()
        )["data"]
    ]
    assert test_event["eventName"] == "test.event" and test_event["status"] == "Failed"
    resp = await _post(world, f"/webhooks/v1/events/{test_event['id']}/resend")
    assert resp.status == 409
    assert resp.content_type == "application/problem+json"
    assert "test.event" in (await resp.json())["detail"]
    await db.execute("UPDATE registrations SET status = 'Suspended' WHERE id = $1", uuid.UUID(rid))
    resp = await _post(world, f"/webhooks/v1/registrations/{rid}/restart", {"resendFailed": True})
    assert resp.status == 200
    await asyncio.sleep(0.5)
    assert await db.fetchval("SELECT count(*) FROM delivery_queue") == 0
    assert (await _event(world, test_event["id"]))["status"] == "Failed"
    assert len(receiver.received) == 1  # only the test itself


async def test_resend_of_an_event_of_a_paused_or_suspended_registration_waits_for_it(
    make_client, receiver, db
):
    """What the partner sees: 202 and the event Pending again; nothing is sent while the
    registration is Paused or Suspended; unpause (or restart) delivers it."""
    api = await make_client(workers=True)
    world = await make_world(api)
    paused = await world.register(receiver.url + "/paused")
    suspended = await world.register(receiver.url + "/suspended")
    await world.emit([R + "1"])
    delivered = await receiver.wait_for(2)
    ids = {d.json()["registrationId"]: d.json()["id"] for d in delivered}

    async def both_done() -> bool:
        return all([(await _event(world, e))["status"] == "Success" for e in ids.values()])

    await wait_until(both_done)
    assert (await _post(world, f"/webhooks/v1/registrations/{paused['id']}/pause")).status == 200
    await db.execute(
        "UPDATE registrations SET status = 'Suspended' WHERE id = $1", uuid.UUID(suspended["id"])
    )
    for reg in (paused, suspended):
        resp = await _post(world, f"/webhooks/v1/events/{ids[reg['id']]}/resend")
        assert resp.status == 202
        assert (await resp.json())["status"] == "Pending"
    await asyncio.sleep(1.0)
    assert len(receiver.received) == 2
    for reg in (paused, suspended):
        assert (await _event(world, ids[reg["id"]]))["status"] == "Pending"
    assert (await _post(world, f"/webhooks/v1/registrations/{paused['id']}/unpause")).status == 200
    await receiver.wait_for(3)
    assert receiver.received[2].json()["id"] == ids[paused["id"]]
    resp = await _post(world, f"/webhooks/v1/registrations/{suspended['id']}/restart")
    assert resp.status == 200
    await receiver.wait_for(4)
    assert receiver.received[3].json()["id"] == ids[suspended["id"]]

    async def active() -> bool:
        return (await _registration(world, suspended["id"]))["status"] == "Active"

    await wait_until(active)


# ---------------------------------------------------------------------- the outbound session


async def test_the_outbound_session_keeps_no_cookies(make_client, receiver):
    """A receiver's Set-Cookie reaches no other delivery, of this partner or another."""

    async def set_cookie(_request: web.Request, _n: int) -> web.StreamResponse:
        resp = web.Response(text="ok")
        resp.set_cookie("session", "secret-of-partner-a", path="/")
        return resp

    receiver.behaviour = set_cookie
    api = await make_client(workers=True)
    one, two = await make_world(api), await make_world(api)
    # A host name, not an IP literal: aiohttp's default jar ignores cookies of IP hosts.
    url = receiver.url.replace("127.0.0.1", "localhost")
    await one.register(url + "/a")
    await one.emit([R + "1"])
    await receiver.wait_for(1)
    await two.register(url + "/b")
    await two.emit([R + "2"])
    await one.emit([R + "3"])
    received = await receiver.wait_for(3)
    assert all("cookie" not in {k.lower() for k in r.headers} for r in received)
