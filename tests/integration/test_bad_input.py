"""Bad input: every kind of malformed request is a clear 4xx and stores nothing.

Oversized bodies (with and without Content-Length), deep JSON, invalid UTF-8, huge or hostile
``resources``, abusive headers (sent over a raw socket, the way an attacker would), abusive query
strings, and floods against the per-producer rate limit.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from tests.conftest import ADMIN_TOKEN, World, admin_headers, bearer, make_world

INGEST = "/internal/v1/resource-events"
JSON = {"Content-Type": "application/json"}


async def snapshot(db: asyncpg.Connection) -> dict[str, int]:
    """Row counts of every table broker owns: "nothing stored" means none of them changed.

    Except the rate-limit buckets: a refused request still counts against its limit (that is
    how floods of garbage are stopped), and a bucket holds no data."""
    tables = await db.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        " AND tablename <> 'rate_buckets' ORDER BY tablename"
    )
    return {
        t["tablename"]: await db.fetchval(f'SELECT count(*) FROM "{t["tablename"]}"')
        for t in tables
    }


async def assert_problem(resp: Any, *statuses: int) -> dict[str, Any]:
    text = await resp.text()
    assert resp.status in statuses, (resp.status, text[:300])
    assert resp.content_type == "application/problem+json", text[:200]
    problem = json.loads(text)
    assert {"title", "status", "detail"} <= problem.keys()
    assert problem["status"] == resp.status
    return problem


def item(world: World, **overrides: Any) -> dict[str, Any]:
    return {
        "partnerId": world.partner_id,
        "eventName": world.event_name,
        "resource": "core/v1/dda/accounts/1",
        **overrides,
    }


async def chunked(data: bytes, size: int = 65536) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_oversized_bodies_are_413_with_or_without_content_length(make_client, db):
    client = await make_client(ingest_max_body_bytes=256 * 1024)
    world = await make_world(client)
    before = await snapshot(db)
    big_ingest = json.dumps({"events": [item(world, resource="r/" + "x" * 2000)] * 200}).encode()
    big_small = json.dumps({"name": "x" * 100_000}).encode()  # over the 64 KiB of small bodies
    cases = [
        (INGEST, world.producer, big_ingest),
        ("/admin/v1/partners", admin_headers(), big_small),
        ("/admin/v1/producer-keys", admin_headers(), big_small),
        ("/webhooks/v1/registrations", world.partner, big_small),
    ]
    for path, headers, data in cases:
        for body in (data, chunked(data)):  # with Content-Length, then chunked without one
            resp = await client.post(path, data=body, headers={**headers, **JSON})
            await assert_problem(resp, 413)
    resp = await client.put(
        "/admin/v1/event-types/Core.Big.Thing", data=big_small, headers={**admin_headers(), **JSON}
    )
    await assert_problem(resp, 413)
    assert await snapshot(db) == before


async def test_deep_json_is_400(world, db):
    client = world.client
    before = await snapshot(db)
    bodies = [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"events": ' + b"[" * 20_000 + b"]" * 20_000 + b"}",
        b'{"events": [' + b'{"a":' * 10_000 + b"1" + b"}" * 10_000 + b"]}",
    ]
    for body in bodies:
        resp = await client.post(INGEST, data=body, headers={**world.producer, **JSON})
        await assert_problem(resp, 400)
    small = b'{"url": ' + b"[" * 5_000 + b"]" * 5_000 + b"}"
    resp = await client.post(
        "/webhooks/v1/registrations", data=small, headers={**world.partner, **JSON}
    )
    await assert_problem(resp, 400)
    assert await snapshot(db) == before


async def test_invalid_utf8_and_unicode_tricks_are_400(world, db):
    client = world.client
    before = await snapshot(db)
    partner = world.partner_id.encode()
    raw_bodies = [
        b'{"name": "\xff\xfe"}',  # not UTF-8 at all
        b'{"name": "\xc0\xaf"}',  # overlong encoding of "/"
        b'{"name": "\xed\xa0\x80"}',  # a UTF-16 surrogate encoded in UTF-8
        b'{"name": "\\ud800"}',  # a lone surrogate escape
        b'{"name": "a\\u0000b"}',  # NUL, which PostgreSQL text cannot hold
        b'\xef\xbb\xbf{"name": "bom"}',
        b'{"name": "ok"',  # truncated
        b'{"name": NaN}',
    ]
    for body in raw_bodies:
        resp = await client.post(
            "/admin/v1/partners", data=body, headers={**admin_headers(), **JSON}
        )
        await assert_problem(resp, 400)
    ingest_bodies = [
        b'{"events": [{"partnerId": "'
        + partner
        + b'", "eventName": "Core.Account.Opened", "resource": "a/\xff"}]}',
        b'{"events": [{"partnerId": "'
        + partner
        + b'", "eventName": "Core.Account.Opened", "resource": "a/\\ud800"}]}',
        b'{"events": [{"partnerId": "'
        + partner
        + b'", "eventName": "Core.Account.Opened", "resource": "a/\\u0000"}]}',
        b'{"events": [{"partnerId": "'
        + partner
        + b'", "eventName": "Core.Account.Opene\\u0000", "resource": "a"}]}',
    ]
    for body in ingest_bodies:
        resp = await client.post(INGEST, data=body, headers={**world.producer, **JSON})
        await assert_problem(resp, 400)
    resp = await client.post(
        "/webhooks/v1/registrations",
        data=b'{"url": "http://127.0.0.1:9/\xff", "eventTypes": ["*"]}',
        headers={**world.partner, **JSON},
    )
    await assert_problem(resp, 400)
    assert await snapshot(db) == before


async def test_huge_and_hostile_resources_are_400_naming_the_items(make_client, db):
    client = await make_client(ingest_max_events=1000)
    world = await make_world(client)
    before = await snapshot(db)
    bad_resources = [
        "",
        "r/" + "x" * 2047,
        "a b",
        "a\tb",
        "a\nb",
        "a\x00b",
        "a\x7fb",
        "a\u0085b",
        "a\u2028b",
        "http://evil/x",
        "//evil/x",
        "javascript:alert(1)",
        5,
        None,
        ["a"],
        {"a": 1},
    ]
    events = [item(world)] + [item(world, resource=r) for r in bad_resources]
    resp = await client.post(INGEST, json={"events": events}, headers=world.producer)
    problem = await assert_problem(resp, 400)
    named = {e["field"] for e in problem["errors"]}
    assert named == {f"events[{i + 1}].resource" for i in range(len(bad_resources))}
    # Too many items, unknown fields, wrong shapes.
    for body in (
        {"events": [item(world, resource=f"r/{i}") for i in range(1001)]},
        {"events": []},
        {"events": [item(world, extra="x")]},
        {"events": [item(world)], "more": 1},
        {"events": [item(world, partnerId="not-a-uuid")]},
        {"events": [item(world, occurredAt="yesterday")]},
        {"events": [item(world, occurredAt="9999-12-31T23:59:59-23:59")]},
        {"events": "all of them"},
        {"events": [[item(world)]]},
    ):
        resp = await client.post(INGEST, json=body, headers=world.producer)
        await assert_problem(resp, 400)
    # The largest legal resource is fine and stored once.
    resp = await client.post(
        INGEST, json={"events": [item(world, resource="r/" + "x" * 2046)]}, headers=world.producer
    )
    assert resp.status == 202
    after = await snapshot(db)
    assert after["resource_events"] == before["resource_events"] + 1


async def raw_request(client: TestClient, data: bytes) -> bytes:
    """Send bytes over a fresh TCP connection; return what came back (bounded)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    try:
        writer.write(data)
        await writer.drain()
        chunks = []
        async with asyncio.timeout(10):
            while chunk := await reader.read(65536):
                chunks.append(chunk)
                if sum(map(len, chunks)) > 1_000_000:
                    break
        return b"".join(chunks)
    except TimeoutError:
        return b"".join(chunks)
    finally:
        writer.close()


def status_of(raw: bytes) -> int:
    assert raw.startswith(b"HTTP/1."), raw[:100]
    return int(raw.split(b" ", 2)[1])


async def test_header_abuse_is_4xx_and_stores_nothing(world, db):
    client = world.client
    before = await snapshot(db)
    key = world.producer_key.encode()
    body = json.dumps({"events": [item(world)]}).encode()
    head = b"POST " + INGEST.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"

    def post(extra: bytes, payload: bytes = body, length: bool = True) -> bytes:
        cl = b"Content-Length: %d\r\n" % len(payload) if length else b""
        return head + extra + cl + b"\r\n" + payload

    auth = b"Authorization: Bearer " + key + b"\r\nContent-Type: application/json\r\n"
    abuses = {
        "oversized header": post(auth + b"X-Big: " + b"a" * 20_000 + b"\r\n"),
        "too many headers": post(auth + b"".join(b"X-H%d: v\r\n" % i for i in range(300))),
        "Content-Length and Transfer-Encoding": post(auth + b"Transfer-Encoding: chunked\r\n"),
        "two Content-Lengths": post(auth + b"Content-Length: 3\r\n"),
        "NUL in a header": post(auth + b"X-Evil: a\x00b\r\n"),
        "bad chunk": head
        + auth
        + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n"
        + body
        + b"\r\n0\r\n\r\n",
        "bad bytes in the path": b"GET /webhooks/v1/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
        "not HTTP": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,
        "huge bearer": post(
            b"Authorization: Bearer " + b"k" * 8000 + b"\r\nContent-Type: application/json\r\n"
        ),
        "non-ASCII bearer": post(
            b"Authorization: Bearer \xc3\xa9\xff\r\nContent-Type: application/json\r\n"
        ),
        "Basic instead of Bearer": post(
            b"Authorization: Basic "
            + base64.b64encode(key)
            + b"\r\nContent-Type: application/json\r\n"
        ),
        "bearer twice": post(b"Authorization: Bearer nope\r\n" + auth),
        "Idempotency-Key too long": post(auth + b"Idempotency-Key: " + b"i" * 300 + b"\r\n"),
        "Idempotency-Key control": post(auth + b"Idempotency-Key: a\x01b\r\n"),
        "form content type": post(
            b"Authorization: Bearer "
            + key
            + b"\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        ),
        "Content-Length lies (short)": head + auth + b"Content-Length: 10\r\n\r\n" + body,
        "gzip bomb": None,
    }
    import gzip

    bomb = gzip.compress(b"[" * (64 * 1024 * 1024))
    abuses["gzip bomb"] = post(auth + b"Content-Encoding: gzip\r\n", payload=bomb)
    answers: dict[str, int] = {}
    for name, data in abuses.items():
        assert data is not None
        raw = await raw_request(client, data)
        answers[name] = status_of(raw) if raw else 0
        assert 400 <= answers[name] < 500, (name, raw[:300])
    assert answers["huge bearer"] == 401 and answers["non-ASCII bearer"] == 401
    assert answers["Basic instead of Bearer"] == 401 and answers["bearer twice"] == 401
    assert answers["form content type"] == 415 and answers["gzip bomb"] == 413
    assert await snapshot(db) == before
    # The server is still healthy afterwards.
    assert (await client.get("/healthz")).status == 200


async def test_query_abuse_on_the_events_list_is_400(world, db):
    client = world.client
    cursor_of = lambda text: base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")  # noqa: E731
    bad = [
        {"limit": "²"},
        {"limit": "١٢"},
        {"limit": "0"},
        {"limit": "501"},
        {"limit": "-1"},
        {"limit": "9" * 100},
        {"eventName": "\x00"},
        {"eventName": "x" * 201},
        {"status": "Delivered"},
        {"registrationId": "../../etc"},
        {"createdAfter": "9999-12-31T23:59:59-23:59"},
        {"createdBefore": "0001-01-01T00:00:00+23:59"},
        {"createdAfter": "2026-01-01"},
        {"createdAfter": "2026-01-01T00:00:00"},
        {"cursor": "%%%"},
        {"cursor": cursor_of("0001-01-01T00:00:00+23:59|" + "0" * 32)},
        {"cursor": cursor_of("2020-01-01T00:00:00|" + "0" * 32)},  # no time zone
        {"cursor": cursor_of("x" * 5000)},
        {"unknown": "1"},
        # a request line past aiohttp's default 8190 bytes (a fuzzer found it): still ours
        {"eventName": "x" * 9000},
        {"cursor": cursor_of("y" * 20000)},
    ]
    for params in bad:
        resp = await client.get("/webhooks/v1/events", params=params, headers=world.partner)
        await assert_problem(resp, 400)
    resp = await client.get("/webhooks/v1/events", params={"limit": "500"}, headers=world.partner)
    assert resp.status == 200


async def test_path_abuse_is_404_never_500(world):
    client = world.client
    for path in (
        "/webhooks/v1/registrations/" + "a" * 5000,
        "/webhooks/v1/registrations/%00",
        "/webhooks/v1/registrations/00000000-0000-0000-0000-000000000000%00",
        "/webhooks/v1/events/..%2f..%2fadmin",
        "/webhooks/v1/events/%ED%A0%80/attempts",
    ):
        resp = await client.get(path, headers=world.partner)
        await assert_problem(resp, 404)
    resp = await client.put("/admin/v1/event-types/%00", json={}, headers=admin_headers())
    await assert_problem(resp, 400, 404)


async def test_rate_limit_rejects_floods_before_reading_them(make_client, db):
    client = await make_client(ingest_rate_limit=2)
    world = await make_world(client)
    before = await snapshot(db)
    garbage = b"{" * 1000

    async def send() -> Any:
        return await client.post(INGEST, data=garbage, headers={**world.producer, **JSON})

    responses = await asyncio.gather(*(send() for _ in range(40)))
    statuses = [r.status for r in responses]
    assert statuses.count(429) >= 30 and set(statuses) <= {400, 429}
    limited = next(r for r in responses if r.status == 429)
    await assert_problem(limited, 429)
    assert int(limited.headers["Retry-After"]) >= 1
    assert await snapshot(db) == before
    # Other producers are not slowed down by this one's flood.
    resp = await client.post("/admin/v1/producer-keys", json={"name": "b"}, headers=admin_headers())
    other = (await resp.json())["apiKey"]
    resp = await client.post(INGEST, json={"events": [item(world)]}, headers=bearer(other))
    assert resp.status == 202


async def test_admin_token_guesses_are_401(client):
    for guess in (ADMIN_TOKEN[:-1], ADMIN_TOKEN + "x", ADMIN_TOKEN.upper(), "", "Bearer"):
        resp = await client.get("/admin/v1/partners", headers={"Authorization": f"Bearer {guess}"})
        assert resp.status == 401, guess
