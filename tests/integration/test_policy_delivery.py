"""The delivery engine applies each registration's policy: timeout, retry schedule, suspension
threshold, FIFO order, a rate limit that holds across workers, signature scheme and headers.

Real receivers on 127.0.0.1, the real delivery workers on the real PostgreSQL; what a partner sees
is read through the API, and what a receiver got from the requests it received.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import uuid
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from broker.domain.ids import uuid7
from broker.store.db import create_pool
from broker.store.delivery import insert_event_objects
from tests.conftest import Receiver, World, make_world, wait_until

R = "core/v1/dda/accounts/"
SECRET = "optional-shared-secret"


async def registration(world: World, reg_id: str) -> dict[str, Any]:
    resp = await world.client.get(f"/webhooks/v1/registrations/{reg_id}", headers=world.partner)
    assert resp.status == 200
    body: dict[str, Any] = await resp.json()
    return body


async def events_of(world: World, reg_id: str) -> list[dict[str, Any]]:
    resp = await world.client.get(
        f"/webhooks/v1/events?registrationId={reg_id}&limit=500", headers=world.partner
    )
    data: list[dict[str, Any]] = (await resp.json())["data"]
    return data


async def attempts_of(world: World, event_id: str) -> list[dict[str, Any]]:
    resp = await world.client.get(f"/webhooks/v1/events/{event_id}/attempts", headers=world.partner)
    data: list[dict[str, Any]] = (await resp.json())["data"]
    return data


async def wait_reg(world: World, reg_id: str, status: str, timeout: float = 10) -> dict[str, Any]:
    async def reached() -> bool:
        return (await registration(world, reg_id))["status"] == status

    await wait_until(reached, timeout=timeout)
    return await registration(world, reg_id)


async def queue_events(
    db_url: str, world: World, reg_id: str, count: int, *, at_once: bool = False
) -> list[uuid.UUID]:
    """``count`` event objects for one registration, made the way a window close makes them:
    each in its own transaction (distinct createdAt, in this order), or all in one (``at_once``:
    the whole queue appears together)."""
    pool = await create_pool(db_url, size=2)
    ids: list[uuid.UUID] = []
    try:
        async with pool.acquire() as conn:

            async def one(i: int) -> None:
                ids.append(uuid7())
                await insert_event_objects(
                    conn,
                    partner_id=uuid.UUID(world.partner_id),
                    event_name=world.event_name,
                    resources=[f"{R}{i}"],
                    registration_ids=[uuid.UUID(reg_id)],
                    event_ids=[ids[-1]],
                )

            if at_once:
                async with conn.transaction():
                    for i in range(count):
                        await one(i)
            else:
                for i in range(count):
                    async with conn.transaction():
                        await one(i)
            await conn.execute("SELECT pg_notify('broker_events', '')")
    finally:
        await pool.close()
    return ids


def status_script(statuses: list[int]) -> Any:
    """A receiver behaviour answering the n-th request with statuses[n-1] (200 after them)."""

    async def behaviour(request: web.Request, n: int) -> web.StreamResponse:
        status = statuses[n - 1] if n <= len(statuses) else 200
        return web.Response(status=status, text="scripted")

    return behaviour


# ---------------------------------------------------------------------- timeout and retries


async def test_the_registrations_timeout_and_retry_schedule_apply(make_client, receiver):
    async def slow(request: web.Request, n: int) -> web.StreamResponse:
        await asyncio.sleep(1.5)
        return web.Response(text="late")

    receiver.behaviour = slow
    # Global: 4 s timeout, two retries. The registration: 1 s, one retry after 0.2 s.
    client = await make_client(
        workers=True, delivery_timeout_seconds=4.0, retry_schedule=(0.1, 0.1)
    )
    world = await make_world(client)
    reg = await world.register(receiver.url, delivery={"timeoutSeconds": 1, "retrySchedule": [0.2]})
    await world.emit([R + "1"])
    done = await wait_reg(world, reg["id"], "Suspended", timeout=15)
    [event] = await events_of(world, reg["id"])
    assert event["status"] == "Failed"
    tries = await attempts_of(world, event["id"])
    assert [a["attemptNumber"] for a in tries] == [1, 2]  # two attempts, not three
    assert all("timeout after 1s" in a["error"] for a in tries)
    assert done["failureCount"] == 2


async def test_an_empty_retry_schedule_is_a_single_attempt(make_client, receiver):
    receiver.behaviour = status_script([500, 500, 500])
    client = await make_client(workers=True, retry_schedule=(0.05, 0.05))
    world = await make_world(client)
    reg = await world.register(receiver.url, delivery={"retrySchedule": []})
    await world.emit([R + "1"])
    await wait_reg(world, reg["id"], "Suspended")
    [event] = await events_of(world, reg["id"])
    assert event["status"] == "Failed"
    assert len(await attempts_of(world, event["id"])) == 1
    await asyncio.sleep(0.5)
    assert len(receiver.received) == 1


async def test_consecutive_failures_suspend_before_retries_run_out(make_client, receiver, db):
    receiver.behaviour = status_script([500] * 10)
    client = await make_client(workers=True, retry_schedule=(0.05,) * 8)
    world = await make_world(client)
    reg = await world.register(receiver.url, delivery={"suspendAfterConsecutiveFailures": 3})
    await world.emit([R + "1"])
    after = await wait_reg(world, reg["id"], "Suspended")
    await asyncio.sleep(0.5)  # nothing more is attempted
    assert len(receiver.received) == 3
    [event] = await events_of(world, reg["id"])
    assert event["status"] == "Pending"  # its retries were not used up: it waits, queued
    assert after["failureCount"] == 3
    # A test delivery that fails counts too: after a restart's successful probe the count is 0;
    # two failing tests and one failing delivery suspend again.
    receiver.behaviour = None
    resp = await client.post(
        f"/webhooks/v1/registrations/{reg['id']}/restart", headers=world.partner
    )
    assert resp.status == 200
    await wait_reg(world, reg["id"], "Active")
    assert (
        await db.fetchval(
            "SELECT consecutive_failures FROM registrations WHERE id = $1::uuid", reg["id"]
        )
        == 0
    )
    receiver.behaviour = status_script([0] * len(receiver.received) + [500] * 10)
    for _ in range(2):
        await client.post(f"/webhooks/v1/registrations/{reg['id']}/test", headers=world.partner)
    assert (await registration(world, reg["id"]))["status"] == "Active"
    await world.emit([R + "2"])
    await wait_reg(world, reg["id"], "Suspended")


# ---------------------------------------------------------------------- FIFO


async def test_fifo_delivers_in_created_order_and_a_failure_holds_back_the_rest(
    make_client, receiver, db_url
):
    # The first event fails twice before it succeeds: nothing behind it may overtake it.
    receiver.behaviour = status_script([503, 503])
    client = await make_client(
        workers=True, retry_schedule=(0.2, 0.2, 0.2), delivery_per_registration=16
    )
    world = await make_world(client)
    reg = await world.register(receiver.url, delivery={"ordering": "fifo"})
    ids = await queue_events(db_url, world, reg["id"], 30)
    await receiver.wait_for(32, timeout=20)
    arrived = [r.json()["id"] for r in receiver.received]
    assert arrived[:3] == [str(ids[0])] * 3
    assert arrived[3:] == [str(i) for i in ids[1:]]

    async def all_done() -> bool:
        return all(e["status"] == "Success" for e in await events_of(world, reg["id"]))

    await wait_until(all_done)


async def test_fifo_exhaustion_suspends_and_later_events_stay_queued(make_client, receiver, db_url):
    receiver.behaviour = status_script([500] * 3)
    client = await make_client(workers=True, retry_schedule=(0.1, 0.1))
    world = await make_world(client)
    reg = await world.register(receiver.url, delivery={"ordering": "fifo"})
    ids = await queue_events(db_url, world, reg["id"], 5)
    await wait_reg(world, reg["id"], "Suspended")
    await asyncio.sleep(0.5)
    assert [r.json()["id"] for r in receiver.received] == [str(ids[0])] * 3
    by_id = {e["id"]: e["status"] for e in await events_of(world, reg["id"])}
    assert by_id[str(ids[0])] == "Failed"
    assert [by_id[str(i)] for i in ids[1:]] == ["Pending"] * 4
    # Restarted, the rest drains in order.
    await client.post(f"/webhooks/v1/registrations/{reg['id']}/restart", headers=world.partner)
    await receiver.wait_for(7)
    assert [r.json()["id"] for r in receiver.received[3:]] == [str(i) for i in ids[1:]]


async def test_fifo_keeps_one_attempt_in_flight(make_client, receiver, db_url):
    in_flight = 0
    most = 0

    async def slowish(request: web.Request, n: int) -> web.StreamResponse:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        return web.Response(text="ok")

    receiver.behaviour = slowish
    client = await make_client(workers=True, delivery_per_registration=16)
    world = await make_world(client)
    fifo = await world.register(receiver.url, delivery={"ordering": "fifo"})
    ids = await queue_events(db_url, world, fifo["id"], 20)
    await receiver.wait_for(20)
    assert most == 1
    assert [r.json()["id"] for r in receiver.received] == [str(i) for i in ids]


# ---------------------------------------------------------------------- rate limit


async def test_the_rate_limit_holds_across_workers(make_client, receiver, db_url):
    # Three apps with workers on one database (as three worker processes would be).
    clients: list[TestClient] = [
        await make_client(workers=True, delivery_per_registration=16) for _ in range(3)
    ]
    world = await make_world(clients[0])
    reg = await world.register(receiver.url, delivery={"rateLimitPerSecond": 20})
    await queue_events(db_url, world, reg["id"], 200, at_once=True)
    await receiver.wait_for(5, timeout=10)
    await asyncio.sleep(3.0)
    times = [r.at for r in receiver.received]
    start = times[0]
    window = [t for t in times if start <= t < start + 3.0]
    # 20/s over 3 s with a burst of 2: at most 62, and not far below the limit either.
    assert 50 <= len(window) <= 62, len(window)
    # no 1 s stretch holds more than the rate plus its burst
    for t in times:
        assert len([u for u in times if t <= u < t + 1.0]) <= 22


# ---------------------------------------------------------------------- signatures, headers


async def test_deliveries_are_signed_per_scheme_with_the_registrations_headers(
    make_client, receiver: Receiver
):
    client = await make_client(workers=True)
    world = await make_world(client)
    hmac_reg = await world.register(
        receiver.url + "/hmac",
        secret=SECRET,
        signature={"scheme": "hmac-sha256-hex", "header": "X-Aerostic-Signature"},
        headers={"X-Tenant": "acme"},
    )
    stamped = await world.register(
        receiver.url + "/stamped",
        secret=SECRET,
        signature={
            "scheme": "hmac-sha256-hex",
            "prefix": "",
            "timestampHeader": "Request-Timestamp",
        },
    )
    unsigned = await world.register(
        receiver.url + "/none", signature={"scheme": "none"}, basicAuth="broker:pw-12345678"
    )
    await world.emit([R + "1"])
    got = await receiver.wait_for(3)
    by_reg = {r.json()["registrationId"]: r for r in got}

    a = by_reg[hmac_reg["id"]]
    digest = hmac.new(SECRET.encode(), a.body, hashlib.sha256).hexdigest()
    assert a.headers["X-Aerostic-Signature"] == f"sha256={digest}"
    assert a.headers["X-Tenant"] == "acme"
    assert not [h for h in a.headers if h.lower().startswith("webhook-")]

    b = by_reg[stamped["id"]]
    stamp = b.headers["Request-Timestamp"]
    signed = stamp.encode() + b"." + b.body
    assert (
        b.headers["X-Webhook-Signature"]
        == hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
    )

    c = by_reg[unsigned["id"]]
    assert not [
        h for h in c.headers if "signature" in h.lower() or h.lower().startswith("webhook-")
    ]
    assert c.headers["Authorization"].startswith("Basic ")
    assert {a.headers["Content-Type"], c.headers["User-Agent"].split("/")[0]} == {
        "application/json",
        "broker-webhooks",
    }


async def test_a_rotation_signs_with_both_hex_secrets_newest_first(make_client, receiver):
    client = await make_client(workers=True)
    world = await make_world(client)
    reg = await world.register(receiver.url, secret=SECRET, signature={"scheme": "hmac-sha256-hex"})
    new = "the-rotated-secret-0123"
    resp = await client.post(
        f"/webhooks/v1/registrations/{reg['id']}/rotate-secret",
        json={"secret": new, "graceSeconds": 3600},
        headers=world.partner,
    )
    assert resp.status == 200
    await world.emit([R + "1"])
    [got] = await receiver.wait_for(1)
    parts = got.headers["X-Webhook-Signature"].split(" ")
    assert parts == [
        "sha256=" + hmac.new(k.encode(), got.body, hashlib.sha256).hexdigest()
        for k in (new, SECRET)
    ]
