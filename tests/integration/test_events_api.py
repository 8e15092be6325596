"""The partner events API: listing, filters, keyset pagination, attempts, resend, query plans.

History rows are mostly inserted straight into PostgreSQL (precise timestamps, any volume), then
read back over HTTP; resend is exercised end to end with a real receiver.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from broker.domain.ids import (
    first_id_after,
    first_id_at_or_after,
    format_time,
    uuid7_at,
    uuid7_time,
)
from broker.store.history import history_page_query
from tests.conftest import insert_event_rows, make_world, wait_until

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
    await insert_event_rows(db, rows)


def at(moment: datetime) -> tuple[uuid.UUID, datetime]:
    """An event id made at ``moment`` and the created_at it gives (its millisecond)."""
    event_id = uuid7_at(moment)
    return event_id, uuid7_time(event_id)


def make_rows(
    partner_id: str, regs: list[str], count: int, *, start: datetime = BASE
) -> list[dict[str, Any]]:
    statuses = ("Pending", "Success", "Failed")
    rows = []
    for i in range(count):
        # Every fifth event shares its timestamp with the previous one: ties must page right.
        created = start + timedelta(seconds=i - (1 if i % 5 == 4 else 0), microseconds=123456)
        event_id, created = at(created)
        rows.append(
            {
                "id": event_id,
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


# Every combination of the five filters (the cursor is in every one: list_all pages by 3).
FILTER_VALUES = {
    "registrationId": 1,
    "eventName": "Core.Card.Issued",
    "status": "Failed",
    "createdAfter": 5,
    "createdBefore": 33,
}
FILTER_COMBINATIONS = [
    {k: v for k, v, on in zip(FILTER_VALUES, FILTER_VALUES.values(), mask, strict=True) if on}
    for mask in itertools.product((False, True), repeat=len(FILTER_VALUES))
] + [{"registrationId": 0, "status": "Pending"}, {"status": "Success", "createdBefore": 30}]


@pytest.mark.parametrize("params", FILTER_COMBINATIONS, ids=lambda p: "+".join(p) or "none")
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
    assert keep and (len(keep) < len(rows) or not params)  # the case is meaningful
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
        row["id"], row["created_at"] = at(tied)
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

PAGE = 20  # the API asks for one row more than the page, to know whether there is a next one


def _literal(value: Any) -> str:
    """A test-made value as an SQL literal (EXECUTE takes expressions, not bind parameters)."""
    if isinstance(value, datetime):
        return f"'{value.isoformat()}'::timestamptz"
    if isinstance(value, uuid.UUID):
        return f"'{value}'::uuid"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return str(int(value))


def rows_read(plan: dict[str, Any], table: str = "") -> int:
    """Rows every scan node of an EXPLAIN (ANALYZE, FORMAT JSON) plan produced or filtered out
    (of the tables whose name starts with ``table``)."""
    node_rows = 0
    if plan.get("Relation Name", "\0").startswith(table):
        seen = (
            plan["Actual Rows"]
            + plan.get("Rows Removed by Filter", 0)
            + plan.get("Rows Removed by Index Recheck", 0)
        )
        node_rows = seen * plan["Actual Loops"]
    return node_rows + sum(rows_read(child, table) for child in plan.get("Plans", []))


def scans(plan: dict[str, Any]) -> list[str]:
    """The scan nodes that read a row. (A day partition with no rows may be scanned
    sequentially: the planner knows it is empty, and the scan reads nothing.)"""
    own = [f"{plan['Node Type']} {plan.get('Index Name', '')}".strip()]
    table_scan = "Relation Name" in plan
    own = own if table_scan and rows_read({**plan, "Plans": []}) else []
    return own + [s for child in plan.get("Plans", []) for s in scans(child)]


async def test_every_filter_shape_reads_one_page_whatever_plan_the_cache_picks(client, db):
    """Each filter combination, first and deep pages, run as a prepared statement more than five
    times (PostgreSQL may switch to a generic plan from the sixth) and once forced generic: every
    run reads at most a small multiple of the page from an index, never the partner's history."""
    world = await make_world(client, event_types=NAMES)
    regs = [(await world.register(f"http://127.0.0.1:9/{i}", ["*"]))["id"] for i in range(3)]
    other = await make_world(client, event_types=NAMES)
    other_reg = (await other.register("http://127.0.0.1:9/o", ["*"]))["id"]
    # Skewed like real history: mostly Success, few Failed and Pending, a rare event name and a
    # quiet registration (regs[1]), so a plan that filters instead of seeking reads hundreds or
    # thousands of rows for a sparse page.
    insert = """
        WITH g AS MATERIALIZED (
            SELECT broker_uuid7(timestamptz '2026-03-01 00:00:00+00' + make_interval(secs => g))
                       AS id, g
            FROM generate_series(1, $3::int) AS g
        ), w AS (
            INSERT INTO windows (id, partner_id, event_name, resources)
            SELECT id, $1::uuid, 'Core.Account.Opened', ARRAY['core/v1/r/' || g] FROM g
        )
        INSERT INTO events (id, partner_id, registration_id, event_name, window_id, status)
        SELECT id, $1::uuid,
               ($2::uuid[])[least(array_length($2::uuid[], 1),
                                  CASE WHEN g % 11 = 0 THEN 2 ELSE 1 + 2 * (g % 2) END)],
               CASE WHEN g % 7 = 0 THEN 'Core.Card.Issued' ELSE 'Core.Account.Opened' END,
               id,
               CASE WHEN g % 29 = 0 THEN 'Failed' WHEN g % 31 = 0 THEN 'Pending'
                    ELSE 'Success' END
        FROM g"""
    await db.execute("SELECT broker_ensure_history_partitions('2026-03-01', '2026-03-01')")
    await db.execute(insert, world.partner_id, regs, 30000)
    await db.execute(insert, other.partner_id, [other_reg], 30000)
    await db.execute("ANALYZE events")
    await db.execute("ANALYZE windows")
    start = datetime(2026, 3, 1, tzinfo=UTC)
    values: dict[str, Any] = {
        "registration_id": uuid.UUID(regs[1]),
        "event_name": "Core.Card.Issued",
        "status": "Failed",
        "created_after": start + timedelta(seconds=3000),
        "created_before": start + timedelta(seconds=27000),
    }
    deep = start + timedelta(seconds=6000, microseconds=1)
    pages = {
        "first page": None,
        # A cursor is (created_at, id) of the last row shown; created_at is the id's time.
        "deep page": (deep, first_id_at_or_after(deep)),
    }
    for mask in itertools.product((False, True), repeat=len(values)):
        filters = {k: (v if on else None) for (k, v), on in zip(values.items(), mask, strict=True)}
        for page_name, after in pages.items():
            # One day's query, as the store walks them (the data is all on that day).
            uppers = []
            if filters["created_before"] is not None:
                uppers.append(first_id_at_or_after(filters["created_before"]))
            if after is not None:
                uppers.append(after[1])
            created_after = filters["created_after"]
            sql, args = history_page_query(
                uuid.UUID(world.partner_id),
                registration_id=filters["registration_id"],
                event_name=filters["event_name"],
                status=filters["status"],
                day=(
                    first_id_at_or_after(start),
                    first_id_at_or_after(start + timedelta(days=1)),
                ),
                ids_from=None if created_after is None else first_id_after(created_after),
                ids_before=min(uppers, default=None),
                limit=PAGE + 1,
            )
            shape = f"{[k for k, v in filters.items() if v is not None]}, {page_name}"
            await db.execute(f"PREPARE page AS {sql.rstrip().rstrip(';')}")
            execute = f"EXECUTE page ({', '.join(_literal(a) for a in args)})"
            for mode in ("auto",) * 7 + ("force_generic_plan",):
                await db.execute(f"SET plan_cache_mode = {mode}")
                [plan] = orjson.loads(
                    await db.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {execute}")
                )
                read = rows_read(plan["Plan"], "events")
                used = scans(plan["Plan"])
                assert all(s.startswith("Index Scan") for s in used), f"{shape}, {mode}: {used}"
                assert read <= 2 * (PAGE + 1), f"{shape}, {mode}: read {read} rows with {used}"
                # The resources: one window per row of the page, looked up by key.
                assert rows_read(plan["Plan"], "windows") <= PAGE + 1, f"{shape}, {mode}"

            got = [r["id"] for r in await db.fetch(execute)]
            await db.execute("RESET plan_cache_mode")
            await db.execute("DEALLOCATE page")
            # ... and the page is the right one.
            where = ["partner_id = $1"]
            params: list[Any] = [uuid.UUID(world.partner_id)]
            for column, value in filters.items():
                if value is not None:
                    params.append(value)
                    column_op = {
                        "created_after": "created_at >",
                        "created_before": "created_at <",
                    }.get(column, f"{column} =")
                    where.append(f"{column_op} ${len(params)}")
            if after is not None:
                params += list(after)
                where.append(f"(created_at, id) < (${len(params) - 1}, ${len(params)})")
            expected = await db.fetch(
                f"SELECT id FROM events WHERE {' AND '.join(where)}"
                f" ORDER BY created_at DESC, id DESC LIMIT {PAGE + 1}",
                *params,
            )
            assert got == [r["id"] for r in expected], shape
