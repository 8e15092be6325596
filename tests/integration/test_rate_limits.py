"""Abuse limits: test deliveries per registration (1/s, burst 5) and per partner, and the
ingest rate limit, all held in PostgreSQL so that they hold across API processes.

Each refusal is a 429 problem+json naming the limit, with Retry-After, and sends nothing."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from tests.conftest import admin_headers, bearer, make_world

REGS = "/webhooks/v1/registrations"
INGEST = "/internal/v1/resource-events"


async def assert_429(resp: Any, names: str) -> dict[str, Any]:
    text = await resp.text()
    assert resp.status == 429, text
    assert resp.content_type == "application/problem+json"
    problem = json.loads(text)
    assert problem["status"] == 429 and problem["title"] == "Too Many Requests"
    assert names in problem["detail"], problem
    assert 1 <= int(resp.headers["Retry-After"]) <= 60
    return problem


async def test_test_deliveries_are_limited_per_registration(make_client, receiver, db):
    client = await make_client()
    world = await make_world(client)
    reg = await world.register(receiver.url)
    other = await world.register(receiver.url)
    url = f"{REGS}/{reg['id']}/test"
    answers = [await client.post(url, headers=world.partner) for _ in range(5)]
    assert [a.status for a in answers] == [200] * 5
    refused = await client.post(url, headers=world.partner)
    await assert_429(refused, "1 per second per registration (burst 5)")
    assert len(receiver.received) == 5  # nothing sent for the refused one
    assert await db.fetchval("SELECT count(*) FROM events WHERE event_name = 'test.event'") == 5
    # Another registration of the same partner has its own budget.
    resp = await client.post(f"{REGS}/{other['id']}/test", headers=world.partner)
    assert resp.status == 200
    # And the bucket refills at 1 per second.
    await asyncio.sleep(int(refused.headers["Retry-After"]) + 0.05)
    assert (await client.post(url, headers=world.partner)).status == 200
    # An unknown id, or another partner's, is 404 whatever the budget: never a 429 that would
    # tell it exists.
    resp = await client.post("/admin/v1/partners", json={"name": "B"}, headers=admin_headers())
    stranger = bearer((await resp.json())["apiKey"])
    for _ in range(7):
        assert (await client.post(url, headers=stranger)).status == 404


async def test_test_deliveries_are_limited_per_partner_across_registrations(
    make_client, receiver, db
):
    client = await make_client(test_delivery_partner_rate=0.05, test_delivery_partner_burst=3)
    world = await make_world(client)
    regs = [await world.register(receiver.url) for _ in range(4)]
    for reg in regs[:3]:
        assert (await client.post(f"{REGS}/{reg['id']}/test", headers=world.partner)).status == 200
    refused = await client.post(f"{REGS}/{regs[3]['id']}/test", headers=world.partner)
    await assert_429(refused, "0.05 per second per partner (burst 3)")
    assert int(refused.headers["Retry-After"]) >= 19  # 1 token at 0.05/s
    assert len(receiver.received) == 3
    # Another partner is not affected by this one's use.
    other_world = await make_world(client, event_types=("Core.Card.Issued",))
    mine = await other_world.register(receiver.url, ["Core.Card.Issued"])
    assert (
        await client.post(f"{REGS}/{mine['id']}/test", headers=other_world.partner)
    ).status == 200
    # The refused request took nothing from its registration's own bucket: with the partner
    # limit off (another process, other settings, same database) that registration still has
    # its whole burst of 5.
    unlimited = await make_client(test_delivery_partner_rate=0)
    url = f"{REGS}/{regs[3]['id']}/test"
    statuses = [(await unlimited.post(url, headers=world.partner)).status for _ in range(6)]
    assert statuses == [200] * 5 + [429]


async def test_test_delivery_limits_hold_across_api_processes(make_client, receiver):
    first = await make_client()
    second = await make_client()  # a second app on the same database: another API process
    world = await make_world(first)
    reg = await world.register(receiver.url)
    url = f"{REGS}/{reg['id']}/test"
    statuses = [
        (await (first if i % 2 else second).post(url, headers=world.partner)).status
        for i in range(8)
    ]
    assert statuses.count(200) == 5 and statuses[:5] == [200] * 5
    assert len(receiver.received) == 5


async def test_ingest_rate_limit_holds_across_api_processes(make_client, db):
    # 1 request per second, burst 2: two processes used to allow 2 x 2 at once.
    apps = [await make_client(ingest_rate_limit=1), await make_client(ingest_rate_limit=1)]
    world = await make_world(apps[0])
    body = {
        "events": [
            {"partnerId": world.partner_id, "eventName": world.event_name, "resource": "r/1"}
        ]
    }
    answers = [await apps[i % 2].post(INGEST, json=body, headers=world.producer) for i in range(6)]
    statuses = [a.status for a in answers]
    assert statuses[:2] == [202, 202] and statuses[2:] == [429] * 4, statuses
    await assert_429(answers[2], "limited to 1 requests per second (BROKER_INGEST_RATE_LIMIT)")
    assert await db.fetchval("SELECT count(*) FROM resource_events") == statuses.count(202)
    # Another producer key has its own bucket.
    resp = await apps[1].post(
        "/admin/v1/producer-keys", json={"name": "b"}, headers=admin_headers()
    )
    other = bearer((await resp.json())["apiKey"])
    assert (await apps[1].post(INGEST, json=body, headers=other)).status == 202
    # Concurrent requests from both processes at once: exactly the burst gets through.
    await asyncio.sleep(2.1)  # refilled to the burst of 2
    started = time.monotonic()
    many = await asyncio.gather(
        *(apps[i % 2].post(INGEST, json=body, headers=world.producer) for i in range(20))
    )
    refilled = int(time.monotonic() - started)  # at 1 per second, while they ran
    accepted = sum(r.status == 202 for r in many)
    assert 2 <= accepted <= 2 + refilled and {r.status for r in many} == {202, 429}
