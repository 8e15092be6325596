"""Producer API: ``POST /internal/v1/resource-events`` over real HTTP, rows checked in PostgreSQL."""

from __future__ import annotations

import asyncio
import io
import uuid
from typing import Any

import orjson

from tests.conftest import TEST_KEYS, World, admin_headers, bearer, make_world, wait_until

PATH = "/internal/v1/resource-events"
PROBLEM = "application/problem+json"


def item(world: World, resource: str = "core/v1/dda/accounts/1", **extra: Any) -> dict[str, Any]:
    return {
        "partnerId": world.partner_id,
        "eventName": world.event_name,
        "resource": resource,
        **extra,
    }


async def post(world: World, body: Any, **headers: str) -> Any:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return await world.client.post(
        PATH,
        # aiohttp warns about sending large raw bytes in one piece; a file object streams
        data=io.BytesIO(data) if len(data) > 512 * 1024 else data,
        headers={**world.producer, "Content-Type": "application/json", **headers},
    )


async def count(db, table: str) -> int:
    return int(await db.fetchval(f"SELECT count(*) FROM {table}"))


async def assert_problem(resp, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == PROBLEM
    problem: dict[str, Any] = await resp.json()
    assert {"title", "status", "detail"} <= set(problem)
    assert problem["status"] == status
    return problem


async def test_accepted_items_are_stored_with_their_window_group(world, db):
    body = {
        "events": [
            item(world, "core/v1/dda/accounts/1", occurredAt="2026-01-01T00:00:00Z"),
            item(world, "core/v1/dda/accounts/2"),
            item(world, "core/v1/dda/accounts/1"),
        ]
    }
    resp = await post(world, body)
    assert resp.status == 202, await resp.text()
    assert await resp.json() == {"accepted": 3}
    rows = await db.fetch(
        "SELECT partner_id, event_name, resource, occurred_at FROM resource_events ORDER BY id"
    )
    assert [r["resource"] for r in rows] == [
        "core/v1/dda/accounts/1",
        "core/v1/dda/accounts/2",
        "core/v1/dda/accounts/1",
    ]
    assert {str(r["partner_id"]) for r in rows} == {world.partner_id}
    assert {r["event_name"] for r in rows} == {world.event_name}
    assert rows[0]["occurred_at"].isoformat() == "2026-01-01T00:00:00+00:00"
    assert rows[1]["occurred_at"] is None
    group = await db.fetchrow("SELECT * FROM window_groups")
    assert str(group["partner_id"]) == world.partner_id
    assert group["event_name"] == world.event_name
    assert group["pending_count"] == 3
    assert group["due_at"] > group["opened_at"]


async def test_one_request_per_event_name_gets_one_group_each(client, db):
    world = await make_world(client, event_types=("Core.Account.Opened", "Core.Account.Closed"))
    body = {
        "events": [
            item(world, "a/1"),
            item(world, "a/2", eventName="Core.Account.Closed"),
            item(world, "a/3"),
        ]
    }
    assert (await post(world, body)).status == 202
    groups = await db.fetch("SELECT event_name, pending_count FROM window_groups ORDER BY 1")
    assert [(g["event_name"], g["pending_count"]) for g in groups] == [
        ("Core.Account.Closed", 1),
        ("Core.Account.Opened", 2),
    ]


async def test_every_bad_item_is_named_and_nothing_is_stored(world, db):
    unknown_partner = str(uuid.uuid4())
    events: list[Any] = [item(world, f"core/v1/dda/accounts/{i}") for i in range(14)]
    events[1] = item(world, "x", occurredAt="yesterday")
    events[3] = item(world, "")
    events[5] = item(world, "x", partnerId=unknown_partner)
    events[7] = item(world, "x", eventName="Core.Account.Unknown")
    events[8] = item(world, "x", color="blue")
    events[9] = item(world, "core/v1/accounts/with space")
    events[10] = item(world, "core/v1/accounts/\x07bell")
    events[11] = item(world, "a" * 2049)
    events[12] = item(world, "https://x/y")
    events[13] = ["not", "an", "object"]
    resp = await post(world, {"events": events})
    problem = await assert_problem(resp, 400)
    fields = {e["field"] for e in problem["errors"]}
    assert fields == {
        "events[1].occurredAt",
        "events[3].resource",
        "events[5].partnerId",
        "events[7].eventName",
        "events[8].color",
        "events[9].resource",
        "events[10].resource",
        "events[11].resource",
        "events[12].resource",
        "events[13]",
    }
    by_field = {e["field"]: e["message"] for e in problem["errors"]}
    assert "unknown partner" in by_field["events[5].partnerId"]
    assert "unknown event type" in by_field["events[7].eventName"]
    # errors come in item order
    order = [int(e["field"][7 : e["field"].index("]")]) for e in problem["errors"]]
    assert order == sorted(order)
    assert await count(db, "resource_events") == 0
    assert await count(db, "window_groups") == 0


async def test_structurally_bad_fields_of_one_item_are_all_named(world, db):
    bad = {"partnerId": "not-a-uuid", "eventName": "no dots", "resource": 5, "occurredAt": 12}
    resp = await post(world, {"events": [item(world), bad]})
    problem = await assert_problem(resp, 400)
    assert {e["field"] for e in problem["errors"]} == {
        "events[1].partnerId",
        "events[1].eventName",
        "events[1].resource",
        "events[1].occurredAt",
    }
    assert await count(db, "resource_events") == 0


async def test_resource_edge_lengths_and_forms(world, db):
    ok = ["a", "a" * 2048, "core/v1/dda/accounts/2001231231?x=1", "/core/v1/x", "ünïcode/ok"]
    resp = await post(world, {"events": [item(world, r) for r in ok]})
    assert resp.status == 202, await resp.text()
    stored = await db.fetch("SELECT resource FROM resource_events ORDER BY id")
    assert [r["resource"] for r in stored] == ok
    for bad in ("tab\there", "line\nbreak", "nul\x00byte", "del\x7f", "nbsp\u00a0x", "//host/path"):
        resp = await post(world, {"events": [item(world, bad)]})
        problem = await assert_problem(resp, 400)
        assert [e["field"] for e in problem["errors"]] == ["events[0].resource"], bad
    assert await count(db, "resource_events") == len(ok)


async def test_occurred_at_out_of_range_is_a_400_not_a_500(world, db):
    for stamp in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2026-13-01T00:00:00Z"):
        resp = await post(world, {"events": [item(world, occurredAt=stamp)]})
        problem = await assert_problem(resp, 400)
        assert [e["field"] for e in problem["errors"]] == ["events[0].occurredAt"], stamp
    resp = await post(world, {"events": [item(world, occurredAt="2026-01-01T00:00:00")]})
    await assert_problem(resp, 400)  # no time zone: ambiguous
    assert await count(db, "resource_events") == 0


async def test_item_count_limits(make_client, db):
    client = await make_client(ingest_max_events=3)
    world = await make_world(client)
    problem = await assert_problem(await post(world, {"events": []}), 400)
    assert [e["field"] for e in problem["errors"]] == ["events"]
    problem = await assert_problem(await post(world, {"events": [item(world)] * 4}), 400)
    assert [e["field"] for e in problem["errors"]] == ["events"]
    assert (await post(world, {"events": [item(world)] * 3})).status == 202
    assert await count(db, "resource_events") == 3


async def test_default_item_limit_is_ten_thousand(world, db):
    one = item(world, "core/v1/dda/accounts/1")
    await assert_problem(await post(world, {"events": [one] * 10001}), 400)
    assert await count(db, "resource_events") == 0
    resp = await post(world, {"events": [one] * 10000})
    assert await resp.json() == {"accepted": 10000}
    assert await count(db, "resource_events") == 10000


async def test_bad_bodies_are_400_and_store_nothing(world, db):
    cases: list[bytes] = [
        b"",
        b"{",
        b'{"events": [}',
        b"\xff\xfe\x00",
        b'{"events": [{"resource": "caf\xe9"}]}',  # latin-1, not UTF-8
        b"[" * 100_000 + b"]" * 100_000,
        b'{"events": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b"[]",
        b'"events"',
        b"null",
        b'{"events": {}}',
        b'{"events": null}',
        b'{"events": [], "extra": 1}',
        orjson.dumps({"evnts": [item(world)]}),
    ]
    for body in cases:
        resp = await post(world, body)
        assert resp.status == 400, (body[:40], resp.status, await resp.text())
        assert resp.content_type == PROBLEM
    assert await count(db, "resource_events") == 0


async def test_unknown_top_level_field_is_named(world, db):
    resp = await post(world, {"events": [item(world)], "extra": 1})
    problem = await assert_problem(resp, 400)
    assert [e["field"] for e in problem["errors"]] == ["extra"]
    assert await count(db, "resource_events") == 0


async def test_body_over_the_size_limit_is_413(make_client, db):
    client = await make_client(ingest_max_body_bytes=2048)
    world = await make_world(client)
    big = {"events": [item(world, f"core/v1/dda/accounts/{i:010d}") for i in range(40)]}
    data = orjson.dumps(big)
    assert len(data) > 2048
    problem = await assert_problem(await post(world, data), 413)
    assert "2048" in problem["detail"]

    # the same without a Content-Length (chunked): the limit is enforced while reading
    async def chunks():
        for start in range(0, len(data), 512):
            yield data[start : start + 512]

    resp = await client.post(
        PATH, data=chunks(), headers={**world.producer, "Content-Type": "application/json"}
    )
    await assert_problem(resp, 413)
    assert await count(db, "resource_events") == 0
    small = {"events": [item(world)]}
    assert (await post(world, small)).status == 202


async def test_wrong_content_type_is_415(world, db):
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "application/xml"):
        resp = await post(world, {"events": [item(world)]}, **{"Content-Type": ctype})
        await assert_problem(resp, 415)
    assert await count(db, "resource_events") == 0
    resp = await post(
        world, {"events": [item(world)]}, **{"Content-Type": "application/json; charset=utf-8"}
    )
    assert resp.status == 202


async def test_idempotency_key_replays_the_first_answer(world, db):
    body = {"events": [item(world, "a/1"), item(world, "a/2")]}
    first = await post(world, body, **{"Idempotency-Key": "req-1"})
    assert first.status == 202
    assert "Idempotent-Replayed" not in first.headers
    assert await first.json() == {"accepted": 2}
    # even a different body: the key decides, and nothing new is stored
    again = await post(world, {"events": [item(world, "b/1")]}, **{"Idempotency-Key": "req-1"})
    assert again.status == 202
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert await again.json() == {"accepted": 2}
    assert await count(db, "resource_events") == 2
    assert await db.fetchval("SELECT pending_count FROM window_groups") == 2
    # a new key is a new request
    fresh = await post(world, body, **{"Idempotency-Key": "req-2"})
    assert fresh.status == 202 and "Idempotent-Replayed" not in fresh.headers
    assert await count(db, "resource_events") == 4


async def test_idempotency_key_is_per_producer_key(world, db):
    resp = await world.client.post(
        "/admin/v1/producer-keys", json={"name": "other"}, headers=admin_headers()
    )
    other = (await resp.json())["apiKey"]
    body = {"events": [item(world)]}
    assert (await post(world, body, **{"Idempotency-Key": "shared"})).status == 202
    resp = await world.client.post(
        PATH, json=body, headers={**bearer(other), "Idempotency-Key": "shared"}
    )
    assert resp.status == 202
    assert "Idempotent-Replayed" not in resp.headers
    assert await count(db, "resource_events") == 2


async def test_rejected_request_does_not_burn_its_idempotency_key(world, db):
    bad = await post(world, {"events": [item(world, "")]}, **{"Idempotency-Key": "k"})
    await assert_problem(bad, 400)
    good = await post(world, {"events": [item(world)]}, **{"Idempotency-Key": "k"})
    assert good.status == 202 and "Idempotent-Replayed" not in good.headers
    assert await count(db, "resource_events") == 1


async def test_invalid_idempotency_key_is_400(world, db):
    resp = await post(world, {"events": [item(world)]}, **{"Idempotency-Key": "x" * 256})
    problem = await assert_problem(resp, 400)
    assert [e["field"] for e in problem["errors"]] == ["Idempotency-Key"]
    assert await count(db, "resource_events") == 0


async def test_concurrent_requests_with_one_key_store_once(world, db):
    body = {"events": [item(world, "a/1"), item(world, "a/2"), item(world, "a/3")]}
    responses = await asyncio.gather(
        *(post(world, body, **{"Idempotency-Key": "burst"}) for _ in range(5))
    )
    assert [r.status for r in responses] == [202] * 5
    assert [await r.json() for r in responses] == [{"accepted": 3}] * 5
    replayed = [r.headers.get("Idempotent-Replayed") for r in responses]
    assert replayed.count("true") == 4
    assert await count(db, "resource_events") == 3
    assert await count(db, "idempotency_keys") == 1


async def test_keys_older_than_a_day_are_not_honoured(world, db):
    body = {"events": [item(world)]}
    assert (await post(world, body, **{"Idempotency-Key": "old"})).status == 202
    await db.execute("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
    resp = await post(world, body, **{"Idempotency-Key": "old"})
    assert resp.status == 202
    assert "Idempotent-Replayed" not in resp.headers
    assert await count(db, "resource_events") == 2
    # and the renewed key is honoured again from now on
    resp = await post(world, body, **{"Idempotency-Key": "old"})
    assert resp.headers.get("Idempotent-Replayed") == "true"
    assert await count(db, "resource_events") == 2
    # just inside the 24 h it still holds
    await db.execute("UPDATE idempotency_keys SET created_at = now() - interval '23 hours'")
    resp = await post(world, body, **{"Idempotency-Key": "old"})
    assert resp.headers.get("Idempotent-Replayed") == "true"
    assert await count(db, "resource_events") == 2


async def test_group_commit_stores_every_concurrent_request(world, db):
    async def one(i: int) -> int:
        resp = await post(world, {"events": [item(world, f"core/v1/dda/accounts/{i}")]})
        assert await resp.json() == {"accepted": 1}
        return resp.status

    statuses = await asyncio.gather(*(one(i) for i in range(200)))
    assert statuses == [202] * 200
    rows = await db.fetch("SELECT resource FROM resource_events")
    assert sorted(r["resource"] for r in rows) == sorted(
        f"core/v1/dda/accounts/{i}" for i in range(200)
    )
    assert await db.fetchval("SELECT pending_count FROM window_groups") == 200


async def test_concurrent_good_and_bad_requests_do_not_affect_each_other(world, db):
    good = {"events": [item(world, "good/1")]}
    bad = {"events": [item(world, "bad one")]}
    responses = await asyncio.gather(*(post(world, good if i % 2 else bad) for i in range(40)))
    assert sorted(r.status for r in responses) == [202] * 20 + [400] * 20
    assert await count(db, "resource_events") == 20


async def test_rate_limit_answers_429_with_retry_after(make_client, db):
    client = await make_client(ingest_rate_limit=5)
    world = await make_world(client)
    body = {"events": [item(world)]}
    responses = await asyncio.gather(*(post(world, body) for _ in range(60)))
    statuses = [r.status for r in responses]
    assert 202 in statuses and 429 in statuses
    limited = next(r for r in responses if r.status == 429)
    problem = await assert_problem(limited, 429)
    assert int(limited.headers["Retry-After"]) >= 1
    assert "5" in problem["detail"]
    assert await count(db, "resource_events") == statuses.count(202)
    # another producer key has its own budget
    resp = await client.post("/admin/v1/producer-keys", json={"name": "b"}, headers=admin_headers())
    other = (await resp.json())["apiKey"]
    resp = await client.post(PATH, json=body, headers=bearer(other))
    assert resp.status == 202


async def test_producer_key_required(world, db):
    body = {"events": [item(world)]}
    assert (await world.client.post(PATH, json=body)).status == 401
    assert (await world.client.post(PATH, json=body, headers=world.partner)).status == 403
    assert (await world.client.post(PATH, json=body, headers=admin_headers())).status == 403
    assert await count(db, "resource_events") == 0


async def test_two_processes_claiming_the_same_keys_in_opposite_order_do_not_deadlock(
    db_url, world, db
):
    """Several API processes may share a database: their group commits must lock idempotency
    keys in one order, or two batches holding the same keys in opposite order deadlock."""
    from broker.domain.models import ResourceEvent
    from broker.store.db import create_pool
    from broker.store.store import IngestRequest, Store, WindowRules

    producer_id = await db.fetchval("SELECT id FROM api_keys WHERE kind = 'producer'")
    rules = WindowRules(min_seconds=30, max_seconds=120, max_resources=1000)
    event = ResourceEvent(
        partner_id=uuid.UUID(world.partner_id),
        event_name=world.event_name,
        resource="a/1",
        occurred_at=None,
    )
    pools = [await create_pool(db_url, size=2) for _ in range(2)]
    try:
        stores = [Store(pool, keys=TEST_KEYS) for pool in pools]
        for round_ in range(5):
            keys = [f"r{round_}-k{i}" for i in range(20)]

            def batch(order: list[str]) -> list[IngestRequest]:
                return [
                    IngestRequest(producer_key_id=producer_id, idempotency_key=k, items=[event])
                    for k in order
                ]

            first, second = await asyncio.gather(
                stores[0].ingest(batch(keys), rules),
                stores[1].ingest(batch(keys[::-1]), rules),
            )
            replays = sum(a.replayed for a in first) + sum(a.replayed for a in second)
            assert replays == 20
        assert await count(db, "resource_events") == 100
    finally:
        for pool in pools:
            await pool.close()


async def test_stopping_the_batcher_mid_commit_fails_its_waiters_instead_of_hanging(
    db_url, world, db
):
    from broker.api.group_commit import IngestBatcher
    from broker.domain.models import ResourceEvent
    from broker.store.db import create_pool
    from broker.store.store import IngestRequest, Store, WindowRules

    producer_id = await db.fetchval("SELECT id FROM api_keys WHERE kind = 'producer'")
    event = ResourceEvent(
        partner_id=uuid.UUID(world.partner_id),
        event_name=world.event_name,
        resource="a/1",
        occurred_at=None,
    )
    pool = await create_pool(db_url, size=2)
    batcher = IngestBatcher(
        Store(pool, keys=TEST_KEYS), WindowRules(min_seconds=30, max_seconds=120, max_resources=10)
    )
    batcher.start()
    blocker = db.transaction()
    await blocker.start()
    try:
        # an uncommitted row with the same key: the batcher's claim waits on it
        await db.execute(
            "INSERT INTO idempotency_keys (producer_key_id, idempotency_key, response_status,"
            " response_body) VALUES ($1, 'held', 202, '{}')",
            producer_id,
        )
        waiter = asyncio.ensure_future(
            batcher.submit(
                IngestRequest(producer_key_id=producer_id, idempotency_key="held", items=[event])
            )
        )

        async def claim_is_waiting() -> bool:
            return bool(
                await db.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND datname = current_database()"
                )
            )

        await wait_until(claim_is_waiting, timeout=10)
        await batcher.stop()
        async with asyncio.timeout(5):
            try:
                await waiter
            except ConnectionError:
                pass
            else:
                raise AssertionError("a stopped batcher answered as if it had committed")
    finally:
        await blocker.rollback()
        await pool.close()
    assert await count(db, "resource_events") == 0


async def test_raw_header_bytes_that_are_not_utf8_are_refused_not_crashed(world, db):
    """aiohttp hands undecodable header bytes over as surrogates; they must not become a 500."""
    server = world.client.server
    body = orjson.dumps({"events": [item(world)]})

    async def raw(extra_header: bytes) -> bytes:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        try:
            writer.write(
                b"POST " + PATH.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"Content-Type: application/json\r\n"
                b"Content-Length: "
                + str(len(body)).encode()
                + b"\r\n"
                + extra_header
                + b"\r\n"
                + body
            )
            await writer.drain()
            return await reader.read()
        finally:
            writer.close()

    answer = await raw(b"Authorization: Bearer bk_producer_\xff\xfe\r\n")
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    good_auth = f"Authorization: Bearer {world.producer_key}\r\n".encode()
    answer = await raw(good_auth + b"Idempotency-Key: k\xff\r\n")
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b"Idempotency-Key" in answer
    assert await count(db, "resource_events") == 0


async def test_compressed_body_is_limited_by_its_decompressed_size(make_client, db):
    import gzip

    client = await make_client(ingest_max_body_bytes=4096)
    world = await make_world(client)
    small = orjson.dumps({"events": [item(world)]})
    resp = await post(world, gzip.compress(small), **{"Content-Encoding": "gzip"})
    assert resp.status == 202, await resp.text()
    # a few KB on the wire, megabytes once inflated
    bomb = b'{"events": [' + b" " * 2_000_000 + b"]}"
    packed = gzip.compress(bomb)
    assert len(packed) < 4096
    resp = await post(world, packed, **{"Content-Encoding": "gzip"})
    await assert_problem(resp, 413)
    assert await count(db, "resource_events") == 1
