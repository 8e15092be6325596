"""The partner events API: listing, filters, keyset pagination, attempts, resend, query plans.

History rows are mostly inserted straight into PostgreSQL (precise timestamps, any volume), then
read back over HTTP; resend is exercised end to end with a real receiver.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from broker.domain.ids import format_time, uuid7
from broker.store.db import create_pool
from broker.store.queries import Q
from broker.store.store import Store
from tests.conftest import make_world, wait_until

NAMES = ("Core.Account.Opened", "Core.Card.Issued")
BASE = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
FIXED_ID = "01a20504-0f03-71fc-ba0d-842261fdd2cb"
EVENT_KEYS = {
    "id",
    "eventName",
    "status",
    "partnerId",
    "registrationId",
    "createdAt",
    "lastAttemptedAt",
    "resources",
}


async def insert_events(db, rows: list[dict[str, Any]]) -> None:
    await db.executemany(
        "INSERT INTO events (id, partner_id, registration_id, event_name, resources, status,"
        " created_at, last_attempted_at) VALUES ($1, $2::uuid, $3::uuid, $4, $5, $6, $7, $8)",
        [
            (
                r["id"],
                r["partner_id"],
                r["registration_id"],
                r["event_name"],
                r["resources"],
                r["status"],
                r["created_at"],
                r.get("last_attempted_at"),
            )
            for r in rows
        ],
    )


def make_rows(
    partner_id: str, regs: list[str], count: int, *, start: datetime = BASE
) -> list[dict[str, Any]]:
    statuses = ("Pending", "Success", "Failed")
    rows = []
    for i in range(count):
        # Every fifth event shares its timestamp with the previous one: ties must page right.
        created = start + timedelta(seconds=i - (1 if i % 5 == 4 else 0), microseconds=123456)
        rows.append(
            {
                "id": uuid7(),
                "partner_id": partner_id,
                "registration_id": regs[i % len(regs)],
                "event_name": NAMES[i % 2],
                "resources": [f"core/v1/r/{i}"],
                "status": statuses[i % 3],
                "created_at": created,
                "last_attempted_at": None if i % 3 == 0 else created + timedelta(seconds=1),
            }
        )
    return rows


def newest_first(rows: list[dict[str, Any]]) -> list[str]:
    ordered = sorted(rows, key=lambda r: (r["created_at"], r["id"]), reverse=True)
    return [str(r["id"]) for r in ordered]


async def list_page(world, **params: Any) -> tuple[int, dict[str, Any]]:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    resp = await world.client.get(f"/webhooks/v1/events?{query}", headers=world.partner)
    return resp.status, await resp.json()


async def list_all(world, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        status, body = await list_page(world, cursor=cursor, **params)
        assert status == 200, body
        items.extend(body["data"])
        cursor = body["nextCursor"]
        if cursor is None:
            return items
    raise AssertionError("pagination never ended")


@pytest.fixture
async def seeded(client, db):
    """A partner with two registrations and 40 events, and a second partner with its own."""
    world = await make_world(client, event_types=NAMES)
    regs = [
        (await world.register("http://127.0.0.1:9/a", list(NAMES)))["id"],
        (await world.register("http://127.0.0.1:9/b", ["*"]))["id"],
    ]
    rows = make_rows(world.partner_id, regs, 40)
    other = await make_world(client, event_types=NAMES)
    other_reg = (await other.register("http://127.0.0.1:9/c", ["*"]))["id"]
    other_rows = make_rows(other.partner_id, [other_reg], 10)
    await insert_events(db, rows + other_rows)
    return world, regs, rows, other, other_rows


async def test_list_is_newest_first_and_shaped_like_the_contract(seeded):
    world, _regs, rows, _other, _ = seeded
    status, body = await list_page(world)
    assert status == 200
    assert body["nextCursor"] is None
    assert [e["id"] for e in body["data"]] == newest_first(rows)
    by_id = {str(r["id"]): r for r in rows}
    for item in body["data"]:
        assert set(item) == EVENT_KEYS
        row = by_id[item["id"]]
        assert item["partnerId"] == world.partner_id
        assert item["createdAt"] == format_time(row["created_at"])
        assert item["createdAt"].endswith("Z") and len(item["createdAt"]) == 24
        assert item["lastAttemptedAt"] == format_time(row["last_attempted_at"])
        assert item["resources"] == row["resources"]
        assert item["status"] == row["status"]


@pytest.mark.parametrize(
    "params",
    [
        {"registrationId": 0},
        {"registrationId": 1},
        {"eventName": "Core.Card.Issued"},
        {"status": "Pending"},
        {"status": "Success"},
        {"status": "Failed"},
        {"createdAfter": 10},
        {"createdBefore": 30},
        {"createdAfter": 5, "createdBefore": 25},
        {"registrationId": 1, "eventName": "Core.Card.Issued", "status": "Failed"},
        {"registrationId": 0, "createdAfter": 3, "createdBefore": 33, "status": "Success"},
    ],
)
async def test_every_filter_narrows_the_list(seeded, params):
    world, regs, rows, _other, _ = seeded

    def moment(i: int) -> datetime:
        return BASE + timedelta(seconds=i, microseconds=500000)  # between two events

    query: dict[str, Any] = {}
    keep = list(rows)
    if "registrationId" in params:
        query["registrationId"] = regs[params["registrationId"]]
        keep = [r for r in keep if r["registration_id"] == query["registrationId"]]
    if "eventName" in params:
        query["eventName"] = params["eventName"]
        keep = [r for r in keep if r["event_name"] == params["eventName"]]
    if "status" in params:
        query["status"] = params["status"]
        keep = [r for r in keep if r["status"] == params["status"]]
    if "createdAfter" in params:
        bound = moment(params["createdAfter"])
        query["createdAfter"] = bound.isoformat().replace("+00:00", "Z")
        keep = [r for r in keep if r["created_at"] > bound]
    if "createdBefore" in params:
        bound = moment(params["createdBefore"])
        # Any offset is fine: the same instant written in +02:00.
        query["createdBefore"] = bound.astimezone(timezone(timedelta(hours=2))).isoformat()
        keep = [r for r in keep if r["created_at"] < bound]
    assert 0 < len(keep) < len(rows)  # the case is meaningful
    got = await list_all(world, limit=3, **query)
    assert [e["id"] for e in got] == newest_first(keep)


async def test_filters_never_reach_another_partners_events(seeded):
    world, _regs, _rows, other, other_rows = seeded
    other_reg = str(other_rows[0]["registration_id"])
    status, body = await list_page(world, registrationId=other_reg)
    assert status == 200 and body["data"] == []
    theirs = await list_all(other)
    assert [e["id"] for e in theirs] == newest_first(other_rows)


async def test_limit_bounds_and_default(client, db):
    world = await make_world(client, event_types=NAMES)
    reg = (await world.register("http://127.0.0.1:9/a", ["*"]))["id"]
    rows = make_rows(world.partner_id, [reg], 520)
    await insert_events(db, rows)
    expected = newest_first(rows)
    status, body = await list_page(world)
    assert status == 200 and len(body["data"]) == 100 and body["nextCursor"]
    status, body = await list_page(world, limit=1)
    assert [e["id"] for e in body["data"]] == expected[:1] and body["nextCursor"]
    status, body = await list_page(world, limit=500)
    assert [e["id"] for e in body["data"]] == expected[:500]
    status, body = await list_page(world, limit=500, cursor=body["nextCursor"])
    assert [e["id"] for e in body["data"]] == expected[500:]
    assert body["nextCursor"] is None
    # A page that ends exactly at the last row says so: no cursor to an empty page.
    pending = [r for r in rows if r["status"] == "Pending"]
    status, body = await list_page(world, limit=len(pending), status="Pending")
    assert [e["id"] for e in body["data"]] == newest_first(pending)
    assert body["nextCursor"] is None


def _cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("registrationId=not-a-uuid", "registrationId"),
        ("registrationId=", "registrationId"),
        ("status=Done", "status"),
        ("status=pending", "status"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=abc", "limit"),
        ("limit=-1", "limit"),
        ("limit=1.5", "limit"),
        ("limit=%C2%B2", "limit"),  # "²": a digit to str.isdigit()
        ("limit=", "limit"),
        ("createdAfter=yesterday", "createdAfter"),
        ("createdAfter=2026-01-01", "createdAfter"),
        ("createdAfter=2026-01-01T00:00:00", "createdAfter"),  # no zone: ambiguous
        ("createdBefore=2026-13-01T00:00:00Z", "createdBefore"),
        ("createdBefore=9999-12-31T23:59:59-01:00", "createdBefore"),
        ("createdAfter=0001-01-01T00:00:00%2B01:00", "createdAfter"),
        ("cursor=garbage", "cursor"),
        ("cursor=%21%21%21", "cursor"),
        ("cursor=%C3%A9", "cursor"),
        ("cursor=", "cursor"),
        (f"cursor={_cursor('2026-01-01T00:00:00|' + FIXED_ID)}", "cursor"),
        (f"cursor={_cursor('0001-01-01T00:00:00+05:00|' + FIXED_ID)}", "cursor"),
        (f"cursor={_cursor('2026-01-01T00:00:00+00:00|nope')}", "cursor"),
        ("eventName=", "eventName"),
        ("eventName=%00", "eventName"),
        ("eventName=" + "A.b" * 100, "eventName"),
        ("unknown=1", "unknown"),
        ("status=Pending&status=Failed", "status"),
    ],
)
async def test_bad_filters_are_400_problems_naming_the_field(client, query, field):
    world = await make_world(client)
    resp = await client.get(f"/webhooks/v1/events?{query}", headers=world.partner)
    assert resp.status == 400, await resp.text()
    assert resp.content_type == "application/problem+json"
    problem = await resp.json()
    assert problem["status"] == 400 and problem["title"] and problem["detail"]
    assert field in [e["field"] for e in problem["errors"]]


async def test_every_bad_filter_is_reported_at_once(client):
    world = await make_world(client)
    resp = await client.get(
        "/webhooks/v1/events?status=x&limit=0&registrationId=y&cursor=z", headers=world.partner
    )
    assert resp.status == 400
    fields = {e["field"] for e in (await resp.json())["errors"]}
    assert fields == {"status", "limit", "registrationId", "cursor"}


async def test_keyset_pages_are_stable_under_concurrent_inserts(client, db):
    world = await make_world(client, event_types=NAMES)
    reg = (await world.register("http://127.0.0.1:9/a", ["*"]))["id"]
    original = make_rows(world.partner_id, [reg], 57)
    # A block of events sharing one timestamp straddles page boundaries.
    tied = BASE + timedelta(seconds=20, microseconds=7)
    for row in original[10:25]:
        row["created_at"] = tied
    await insert_events(db, original)
    seen: list[str] = []
    added: list[dict[str, Any]] = []
    cursor = None
    pages = 0
    while True:
        status, body = await list_page(world, limit=7, cursor=cursor)
        assert status == 200
        seen.extend(e["id"] for e in body["data"])
        pages += 1
        # Between pages, new events land: newer ones (the usual case) and one whose
        # transaction started long ago and commits only now (an older created_at).
        late = make_rows(world.partner_id, [reg], 3, start=datetime.now(UTC))
        late += make_rows(world.partner_id, [reg], 1, start=BASE - timedelta(days=1))
        await insert_events(db, late)
        added += late
        cursor = body["nextCursor"]
        if cursor is None:
            break
    assert pages >= 9
    counts = Counter(seen)
    assert [i for i, n in counts.items() if n > 1] == []  # no duplicates
    wanted = newest_first(original)
    assert [i for i in seen if i in set(wanted)] == wanted  # no skips, order kept
    # Rows newer than the first page never show up on later pages; only the late-committing
    # older ones may (after everything they are older than).
    extra = [i for i in seen if i not in set(wanted)]
    old_dated = {str(r["id"]) for r in added if r["created_at"] < BASE}
    assert set(extra) <= old_dated
    assert seen[: len(wanted)] == wanted


async def test_another_partners_event_is_404_everywhere(seeded):
    world, _regs, _rows, other, other_rows = seeded
    theirs = str(other_rows[0]["id"])
    for method, path in (
        ("GET", f"/webhooks/v1/events/{theirs}"),
        ("GET", f"/webhooks/v1/events/{theirs}/attempts"),
        ("POST", f"/webhooks/v1/events/{theirs}/resend"),
        ("GET", f"/webhooks/v1/events/{uuid.uuid4()}"),
        ("GET", f"/webhooks/v1/events/{uuid.uuid4()}/attempts"),
        ("POST", f"/webhooks/v1/events/{uuid.uuid4()}/resend"),
        ("GET", "/webhooks/v1/events/not-a-uuid"),
        ("GET", "/webhooks/v1/events/not-a-uuid/attempts"),
        ("POST", "/webhooks/v1/events/not-a-uuid/resend"),
    ):
        resp = await world.client.request(method, path, headers=world.partner)
        assert resp.status == 404, (method, path)
        assert resp.content_type == "application/problem+json"
    # The owner still sees it, unchanged by the refused resend.
    resp = await other.client.get(f"/webhooks/v1/events/{theirs}", headers=other.partner)
    assert resp.status == 200
    assert (await resp.json())["status"] == other_rows[0]["status"]


async def test_get_and_attempts_of_a_delivered_event(make_client, receiver):
    client = await make_client(workers=True)
    world = await make_world(client)
    await world.register(receiver.url)
    await world.emit(["core/v1/r/1"])
    [delivery] = await receiver.wait_for(1)
    event_id = delivery.json()["id"]

    async def done() -> bool:
        resp = await client.get(f"/webhooks/v1/events/{event_id}", headers=world.partner)
        return (await resp.json())["status"] == "Success"

    await wait_until(done)
    got = await (await client.get(f"/webhooks/v1/events/{event_id}", headers=world.partner)).json()
    assert set(got) == EVENT_KEYS
    attempts = (
        await (
            await client.get(f"/webhooks/v1/events/{event_id}/attempts", headers=world.partner)
        ).json()
    )["data"]
    assert [set(a) for a in attempts] == [
        {"attemptNumber", "attemptedAt", "durationMs", "responseStatus", "error", "responseBody"}
    ]
    assert got["lastAttemptedAt"] == attempts[0]["attemptedAt"]
    listed = await (await client.get("/webhooks/v1/events", headers=world.partner)).json()
    assert listed["data"] == [got]


async def test_resend_starts_a_new_round_of_attempts(make_client, receiver):
    client = await make_client(workers=True)
    world = await make_world(client)
    reg = await world.register(receiver.url)
    await world.emit(["core/v1/r/1"])
    [first] = await receiver.wait_for(1)
    event_id = first.json()["id"]

    async def status_is(value: str) -> bool:
        resp = await client.get(f"/webhooks/v1/events/{event_id}", headers=world.partner)
        return (await resp.json())["status"] == value

    await wait_until(lambda: status_is("Success"))
    resp = await client.post(f"/webhooks/v1/events/{event_id}/resend", headers=world.partner)
    assert resp.status == 202
    body = await resp.json()
    assert body["id"] == event_id and body["status"] == "Pending"
    _, second = await receiver.wait_for(2)
    payload = Webhook(reg["secret"]).verify(second.body, second.headers)
    assert payload["id"] == event_id
    await wait_until(lambda: status_is("Success"))
    attempts = (
        await (
            await client.get(f"/webhooks/v1/events/{event_id}/attempts", headers=world.partner)
        ).json()
    )["data"]
    assert [a["attemptNumber"] for a in attempts] == [1, 2]
    assert payload["lastAttemptedAt"] == attempts[0]["attemptedAt"]


async def test_resend_of_a_failed_event_gets_the_whole_schedule_again(make_client, receiver):
    client = await make_client(workers=True, retry_schedule=(0.1,))
    world = await make_world(client)
    reg = await world.register(receiver.url)

    async def always_500(_request: web.Request, _n: int) -> web.StreamResponse:
        return web.Response(status=500)

    receiver.behaviour = always_500
    await world.emit(["core/v1/r/1"])
    await receiver.wait_for(2)
    event_id = receiver.received[0].json()["id"]

    async def reg_status(value: str) -> bool:
        resp = await client.get(f"/webhooks/v1/registrations/{reg['id']}", headers=world.partner)
        return (await resp.json())["status"] == value

    await wait_until(lambda: reg_status("Suspended"))
    # Resending queues it; a Suspended registration is not attempted until restarted.
    resp = await client.post(f"/webhooks/v1/events/{event_id}/resend", headers=world.partner)
    assert resp.status == 202 and (await resp.json())["status"] == "Pending"
    await asyncio.sleep(0.6)
    assert len(receiver.received) == 2


async def test_resend_during_an_attempt_never_runs_two_at_once(make_client, receiver, db):
    client = await make_client(workers=True)
    world = await make_world(client)
    await world.register(receiver.url)
    in_flight = 0
    most = 0
    go = asyncio.Event()

    async def slow_first(_request: web.Request, n: int) -> web.StreamResponse:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            if n == 1:
                await asyncio.wait_for(go.wait(), 5)
            return web.Response(text="ok")
        finally:
            in_flight -= 1

    receiver.behaviour = slow_first
    await world.emit(["core/v1/r/1"])
    [first] = await receiver.wait_for(1)
    event_id = first.json()["id"]
    resp = await client.post(f"/webhooks/v1/events/{event_id}/resend", headers=world.partner)
    assert resp.status == 202
    await asyncio.sleep(0.6)  # a second worker pass would have claimed it by now
    assert len(receiver.received) == 1
    go.set()
    # The attempt in flight finishes; the resend still gets its own, later attempt.
    await receiver.wait_for(2)

    async def success() -> bool:
        return (
            await db.fetchval("SELECT status FROM events WHERE id = $1::uuid", event_id)
            == "Success"
        )

    await wait_until(success)
    assert most == 1
    rows = await db.fetch(
        "SELECT attempt_number, response_status FROM attempts WHERE event_id = $1::uuid"
        " ORDER BY attempt_number",
        event_id,
    )
    assert [(r["attempt_number"], r["response_status"]) for r in rows] == [(1, 200), (2, 200)]


# ---------------------------------------------------------------------- query plans


async def _plan(db, sql: str, *args: Any) -> str:
    rows = await db.fetch("EXPLAIN " + sql, *args)
    return "\n".join(r[0] for r in rows)


async def test_the_list_query_uses_an_index_for_first_and_cursor_pages(client, db, db_url):
    world = await make_world(client, event_types=NAMES)
    regs = [(await world.register(f"http://127.0.0.1:9/{i}", ["*"]))["id"] for i in range(4)]
    other = await make_world(client, event_types=NAMES)
    other_reg = (await other.register("http://127.0.0.1:9/o", ["*"]))["id"]
    insert = """
        INSERT INTO events (id, partner_id, registration_id, event_name, resources, status,
                            created_at)
        SELECT gen_random_uuid(), $1::uuid, ($2::uuid[])[1 + g % array_length($2::uuid[], 1)],
               CASE WHEN g % 3 = 0 THEN 'Core.Card.Issued' ELSE 'Core.Account.Opened' END,
               ARRAY['core/v1/r/' || g],
               CASE WHEN g % 50 = 0 THEN 'Failed' WHEN g % 50 = 1 THEN 'Pending'
                    ELSE 'Success' END,
               timestamptz '2026-03-01 00:00:00+00' + make_interval(secs => g)
        FROM generate_series(1, $3::int) AS g"""
    await db.execute(insert, world.partner_id, regs, 20000)
    await db.execute(insert, other.partner_id, [other_reg], 20000)
    await db.execute("ANALYZE events")
    # A cursor deep in the middle, as the API would issue it.
    status, body = await list_page(world, limit=500)
    for _ in range(15):
        status, body = await list_page(world, limit=500, cursor=body["nextCursor"])
        assert status == 200
    last = body["data"][-1]
    mid_at = await db.fetchval("SELECT created_at FROM events WHERE id = $1::uuid", last["id"])
    mid = (mid_at, uuid.UUID(last["id"]))
    partner = uuid.UUID(world.partner_id)
    reg = uuid.UUID(regs[1])
    after = datetime(2026, 3, 1, 1, tzinfo=UTC)
    before = datetime(2026, 3, 1, 4, tzinfo=UTC)
    cases = {
        "first page": (None, None, None, None, None, None, None, 101),
        "cursor page": (None, None, None, None, mid[0], mid[1], None, 101),
        "registration": (reg, None, None, None, None, None, None, 101),
        "registration, cursor": (reg, None, None, None, mid[0], mid[1], None, 101),
        "event name": (None, "Core.Card.Issued", None, None, None, None, None, 101),
        "status": (None, None, "Failed", None, None, None, None, 101),
        "status, cursor": (None, None, "Failed", None, mid[0], mid[1], None, 101),
        "time range": (None, None, None, after, None, None, before, 101),
    }
    for name, (
        reg_id,
        event_name,
        st,
        created_after,
        at,
        ident,
        created_before,
        limit,
    ) in cases.items():
        args = (partner, reg_id, event_name, st, created_after, at, ident, created_before, limit)
        plan = await _plan(db, Q.list_events, *args)
        assert "Seq Scan" not in plan, f"{name}:\n{plan}"
        assert "Index" in plan, f"{name}:\n{plan}"
        if at is not None:
            # The cursor bound is where the index scan starts, not a filter over skipped rows.
            assert "Index Cond" in plan and "created_at" in plan.split("Index Cond", 1)[1], plan
    # The store answers the same pages the rows say, from a deep cursor too.
    pool = await create_pool(db_url, size=2)
    try:
        store = Store(pool)
        page = await store.list_events(
            partner,
            registration_id=None,
            event_name=None,
            status=None,
            created_after=None,
            created_before=None,
            after=mid,
            limit=5,
        )
    finally:
        await pool.close()
    expected = await db.fetch(
        "SELECT id FROM events WHERE partner_id = $1 AND (created_at, id) < ($2, $3)"
        " ORDER BY created_at DESC, id DESC LIMIT 5",
        partner,
        *mid,
    )
    assert [e.id for e in page] == [r["id"] for r in expected]


async def test_a_generic_plan_still_starts_cursor_pages_at_the_cursor(client, db):
    """PostgreSQL may run a prepared statement with a generic plan (after five runs, when it
    looks no costlier). Such a plan cannot drop "$n IS NULL OR ..." branches; the cursor and
    time bounds must still bound the index scan, or a deep page reads every newer row."""
    world = await make_world(client, event_types=NAMES)
    reg = (await world.register("http://127.0.0.1:9/a", ["*"]))["id"]
    await db.execute(
        """
        INSERT INTO events (id, partner_id, registration_id, event_name, resources, status,
                            created_at)
        SELECT gen_random_uuid(), $1::uuid, $2::uuid, 'Core.Account.Opened', ARRAY['r' || g],
               'Success', timestamptz '2026-03-01 00:00:00+00' + make_interval(secs => g)
        FROM generate_series(1, 20000) AS g""",
        world.partner_id,
        reg,
    )
    await db.execute("ANALYZE events")
    types = "uuid, uuid, text, text, timestamptz, timestamptz, uuid, timestamptz, bigint"
    await db.execute(f"PREPARE listing ({types}) AS {Q.list_events.rstrip().rstrip(';')}")
    await db.execute("SET plan_cache_mode = force_generic_plan")
    cursor = f"'2026-03-01 01:00:00+00', '{uuid.uuid4()}'"
    args = {
        "cursor page": f"'{world.partner_id}', NULL, NULL, NULL, NULL, {cursor}, NULL, 101",
        "time range": f"'{world.partner_id}', NULL, NULL, NULL, '2026-03-01 00:10:00+00',"
        " NULL, NULL, '2026-03-01 00:20:00+00', 101",
    }
    for name, values in args.items():
        rows = await db.fetch(f"EXPLAIN (ANALYZE, COSTS OFF) EXECUTE listing ({values})")
        plan = "\n".join(r[0] for r in rows)
        assert "Seq Scan" not in plan, f"{name}:\n{plan}"
        cond = plan.split("Index Cond:", 1)[1].split("\n", 1)[0]
        assert "created_at" in cond, f"{name}: the bound is only a filter:\n{plan}"
        removed = [
            int(line.rsplit(":", 1)[1]) for line in plan.splitlines() if "Removed by Filter" in line
        ]
        assert sum(removed) < 100, f"{name}:\n{plan}"
    await db.execute("RESET plan_cache_mode")
    await db.execute("DEALLOCATE listing")
