"""POST /webhooks/v1/registrations/{id}/replay: a time range of finished event objects queued
again, as the partner sees it (HTTP) and as PostgreSQL holds it (events, delivery_queue,
delivery_ready), and delivered again by real workers to a real receiver.

History rows are inserted by SQL at known creation times: the range and status filters are
about created_at, which a test cannot steer through ingest.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from tests.conftest import insert_event_rows, make_world, runtime_of, wait_until

BASE = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def insert_history(
    db: Any, world: Any, registration_id: str, rows: list[tuple[str, datetime]], *, name: str = ""
) -> list[uuid.UUID]:
    """Finished event objects (status, created_at) with one attempt already made."""
    ids = await insert_event_rows(
        db,
        [
            {
                "partner_id": world.partner_id,
                "registration_id": registration_id,
                "event_name": name or world.event_name,
                "resources": ["r/1"],
                "status": s,
                "created_at": at,
                "last_attempted_at": at,
                "attempt_count": 1,
            }
            for s, at in rows
        ],
    )
    await db.executemany(
        "INSERT INTO attempts (event_id, attempt_number, attempted_at, duration_ms,"
        " response_status) VALUES ($1, 1, $2, 5, $3)",
        [(i, at, 200 if s == "Success" else 500) for i, (s, at) in zip(ids, rows, strict=True)],
    )
    return ids


async def replay(world: Any, registration_id: str, body: Any) -> tuple[int, Any]:
    resp = await world.client.post(
        f"/webhooks/v1/registrations/{registration_id}/replay", json=body, headers=world.partner
    )
    return resp.status, await resp.json()


async def statuses(db: Any, ids: list[uuid.UUID]) -> list[str]:
    rows = await db.fetch("SELECT id, status FROM events WHERE id = ANY($1::uuid[])", ids)
    by_id = {r["id"]: r["status"] for r in rows}
    return [by_id[i] for i in ids]


async def test_replay_requeues_the_range_and_statuses_asked_for(client, db, receiver):
    world = await make_world(client)
    reg = await world.register(receiver.url)
    other = await world.register(receiver.url)
    minute = timedelta(minutes=1)
    plan = [
        ("Failed", BASE),
        ("Success", BASE + minute),
        ("Failed", BASE + 2 * minute),
        ("Pending", BASE + 3 * minute),
        ("Success", BASE + 4 * minute),
        ("Failed", BASE + 5 * minute),  # == until below: outside [since, until)
    ]
    ids = await insert_history(db, world, reg["id"], plan)
    [test_event] = await insert_history(
        db, world, reg["id"], [("Failed", BASE + minute)], name="test.event"
    )
    [elsewhere] = await insert_history(db, world, other["id"], [("Failed", BASE + minute)])

    # Failed only, in [BASE, BASE + 5 min): the first and the third.
    status, body = await replay(
        world,
        reg["id"],
        {"since": iso(BASE), "until": iso(BASE + 5 * minute), "status": ["Failed"]},
    )
    assert (status, body) == (202, {"requeued": 2})
    assert await statuses(db, ids) == [
        "Pending",
        "Success",
        "Pending",
        "Pending",
        "Success",
        "Failed",
    ]
    queued = await db.fetch(
        "SELECT event_id, round_attempts, attempt_count, next_attempt_at <= now() AS due"
        " FROM delivery_queue ORDER BY created_at"
    )
    assert [(r["event_id"], r["round_attempts"], r["attempt_count"], r["due"]) for r in queued] == [
        (ids[0], 0, 1, True),
        (ids[2], 0, 1, True),
    ]
    ready = await db.fetchrow(
        "SELECT next_due_at <= now() AS due FROM delivery_ready WHERE registration_id = $1::uuid",
        reg["id"],
    )
    assert ready is not None and ready["due"]

    # Both statuses (the default), from one minute on, until now: the two Success rows and the
    # last Failed one. The test delivery and the other registration's event stay as they were.
    status, body = await replay(world, reg["id"], {"since": iso(BASE + minute)})
    assert (status, body) == (202, {"requeued": 3})
    assert await statuses(db, ids) == ["Pending"] * 6
    assert await statuses(db, [test_event, elsewhere]) == ["Failed", "Failed"]
    assert await db.fetchval("SELECT count(*) FROM delivery_queue") == 5

    # Nothing left to replay: 0, not an error.
    status, body = await replay(world, reg["id"], {"since": iso(BASE), "status": ["Success"]})
    assert (status, body) == (202, {"requeued": 0})


async def test_batches_cover_the_range_once_in_creation_order(client, db, receiver):
    world = await make_world(client)
    reg = await world.register(receiver.url)
    # Ties on created_at across batch boundaries: the keyset is (created_at, id).
    plan = [("Failed" if i % 3 else "Success", BASE + timedelta(seconds=i // 2)) for i in range(23)]
    ids = await insert_history(db, world, reg["id"], plan)
    store = runtime_of(client).store
    requeued = await store.replay_events(
        uuid.UUID(reg["id"]),
        uuid.UUID(world.partner_id),
        since=BASE,
        until=BASE + timedelta(hours=1),
        statuses=["Failed", "Success"],
        limit=100_000,
        batch=4,
    )
    assert requeued == 23
    assert await statuses(db, ids) == ["Pending"] * 23
    # Every batch shares one due time, so the claim (next_attempt_at, created_at) takes them in
    # creation order whatever their status and batch.
    rows = await db.fetch("SELECT event_id, next_attempt_at FROM delivery_queue")
    assert len({r["next_attempt_at"] for r in rows}) == 1
    assert sorted(r["event_id"] for r in rows) == sorted(ids)


async def test_replayed_events_are_delivered_again(make_client, db, receiver):
    client = await make_client(workers=True)
    world = await make_world(client)
    reg = await world.register(receiver.url)
    now = datetime.now(UTC)
    failed = await insert_history(
        db, world, reg["id"], [("Failed", now - timedelta(minutes=m)) for m in (3, 2)]
    )
    [delivered] = await insert_history(db, world, reg["id"], [("Success", now)])
    status, body = await replay(
        world, reg["id"], {"since": iso(now - timedelta(hours=1)), "status": ["Failed"]}
    )
    assert (status, body) == (202, {"requeued": 2})
    received = await receiver.wait_for(2)
    assert sorted(r.json()["id"] for r in received) == sorted(str(i) for i in failed)
    for event_id in failed:

        async def succeeded(event_id: uuid.UUID = event_id) -> bool:
            resp = await client.get(f"/webhooks/v1/events/{event_id}", headers=world.partner)
            return (await resp.json())["status"] == "Success"

        await wait_until(succeeded)
        resp = await client.get(f"/webhooks/v1/events/{event_id}/attempts", headers=world.partner)
        # The first attempt failed before the replay; the replayed round is attempt 2.
        answers = [(a["attemptNumber"], a["responseStatus"]) for a in (await resp.json())["data"]]
        assert answers == [(1, 500), (2, 200)]
    assert await statuses(db, [delivered]) == ["Success"]
    assert len(receiver.received) == 2


async def test_replay_of_a_suspended_registration_waits_in_its_queue(client, db, receiver):
    world = await make_world(client)
    reg = await world.register(receiver.url)
    ids = await insert_history(db, world, reg["id"], [("Failed", BASE)])
    await db.execute("UPDATE registrations SET status = 'Suspended' WHERE id = $1::uuid", reg["id"])
    status, body = await replay(world, reg["id"], {"since": iso(BASE)})
    assert (status, body) == (202, {"requeued": 1})
    assert await statuses(db, ids) == ["Pending"]
    parked = await db.fetchval(
        "SELECT next_due_at = 'infinity' FROM delivery_ready WHERE registration_id = $1::uuid",
        reg["id"],
    )
    assert parked  # no worker claims it until restart


async def test_more_than_100000_is_refused_naming_the_count(client, db, receiver):
    world = await make_world(client)
    reg = await world.register(receiver.url)
    await db.execute("SELECT broker_ensure_history_partitions($1::date, $1::date)", BASE.date())
    await db.execute(
        """INSERT INTO events (id, partner_id, registration_id, event_name, status)
           SELECT broker_uuid7($4::timestamptz + make_interval(secs => i / 1000.0)),
                  $1::uuid, $2::uuid, $3, 'Failed'
           FROM generate_series(1, 100001) AS i""",
        world.partner_id,
        reg["id"],
        world.event_name,
        BASE,
    )
    status, body = await replay(world, reg["id"], {"since": iso(BASE)})
    assert status == 422, body
    assert body["count"] == 100001 and body["limit"] == 100000
    assert "100001" in body["detail"] and "100000" in body["detail"]
    assert await db.fetchval("SELECT count(*) FROM events WHERE status = 'Pending'") == 0
    assert await db.fetchval("SELECT count(*) FROM delivery_queue") == 0
    # A narrower range is within the limit: exactly 100000 are queued.
    status, body = await replay(
        world,
        reg["id"],
        {"since": iso(BASE + timedelta(milliseconds=2)), "until": iso(BASE + timedelta(hours=1))},
    )
    assert (status, body) == (202, {"requeued": 100000})
    assert await db.fetchval("SELECT count(*) FROM delivery_queue") == 100000


async def test_deleted_is_409_and_another_partners_is_404(client, db, receiver):
    world = await make_world(client)
    reg = await world.register(receiver.url)
    ids = await insert_history(db, world, reg["id"], [("Failed", BASE)])
    stranger = await make_world(client)
    status, body = await replay(stranger, reg["id"], {"since": iso(BASE)})
    assert status == 404, body
    status, body = await replay(world, str(uuid.uuid4()), {"since": iso(BASE)})
    assert status == 404, body
    status, body = await replay(world, "not-a-uuid", {"since": iso(BASE)})
    assert status == 404, body
    resp = await client.delete(f"/webhooks/v1/registrations/{reg['id']}", headers=world.partner)
    assert resp.status == 204
    status, body = await replay(world, reg["id"], {"since": iso(BASE)})
    assert status == 409 and body["currentStatus"] == "Deleted", body
    assert await statuses(db, ids) == ["Failed"]


async def test_bad_bodies_are_400_naming_the_field(client, db, receiver):
    world = await make_world(client)
    reg = await world.register(receiver.url)
    ids = await insert_history(db, world, reg["id"], [("Failed", BASE)])
    cases: list[tuple[Any, str]] = [
        ({"since": iso(BASE), "until": iso(BASE)}, "until"),
        ({"since": iso(BASE), "until": iso(BASE - timedelta(seconds=1))}, "until"),
        ({"since": iso(datetime.now(UTC) + timedelta(days=1))}, "since"),
        ({"since": iso(BASE), "status": ["Pending"]}, "status[0]"),
        ({"since": iso(BASE), "status": ["Lost"]}, "status[0]"),
        ({"since": iso(BASE), "status": []}, "status"),
        ({"since": iso(BASE), "status": "Failed"}, "status"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-03-01T12:00:00"}, "since"),  # no time zone
        ({"since": 1772366400}, "since"),
        ({"until": iso(BASE)}, "since"),
        ({"since": iso(BASE), "colour": "red"}, "colour"),
        ([], ""),
    ]
    for sent, field in cases:
        status, body = await replay(world, reg["id"], sent)
        assert status == 400, (sent, body)
        assert field in [e["field"] for e in body["errors"]], (sent, body)
    resp = await client.post(
        f"/webhooks/v1/registrations/{reg['id']}/replay", data=b"{", headers=world.partner
    )
    assert resp.status == 400
    assert await statuses(db, ids) == ["Failed"]


async def test_a_delete_during_the_replay_stops_it_with_409(client, db, db_url, receiver):
    world = await make_world(client)
    reg = await world.register(receiver.url)
    ids = await insert_history(db, world, reg["id"], [("Failed", BASE)] * 3)
    # Hold the registration's row lock, as a concurrent DELETE does: the replay's first batch
    # waits for it (lock_registrations_of_events), and the delete commits meanwhile.
    deleter = await asyncpg.connect(db_url)
    try:
        tx = deleter.transaction()
        await tx.start()
        await deleter.execute(
            "SELECT 1 FROM registrations WHERE id = $1::uuid FOR UPDATE", reg["id"]
        )
        replaying = asyncio.create_task(replay(world, reg["id"], {"since": iso(BASE)}))

        async def replay_waits() -> bool:
            waiting = await db.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            return bool(waiting)

        await wait_until(replay_waits)
        await deleter.execute(
            "UPDATE registrations SET status = 'Deleted', deleted_at = now() WHERE id = $1::uuid",
            reg["id"],
        )
        await tx.commit()
    finally:
        await deleter.close()
    status, body = await replaying
    assert status == 409, body
    assert body["currentStatus"] == "Deleted" and "during the replay" in body["detail"]
    assert await statuses(db, ids) == ["Failed"] * 3
    assert await db.fetchval("SELECT count(*) FROM delivery_queue") == 0
