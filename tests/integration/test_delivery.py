"""Delivery: signed POSTs, retries, suspension, leases and several workers on one database.

Receivers are real aiohttp servers on 127.0.0.1; every delivered body is verified with the
reference ``standardwebhooks`` verifier, and outcomes are checked in PostgreSQL and through the
partner API.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import signal
import socket
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook

import broker
from broker.domain.ids import format_time
from broker.domain.states import Trigger
from broker.store.db import create_pool
from broker.store.store import DeliveryResult, Store, WindowRules
from tests.conftest import ADMIN_TOKEN, ROOT, TEST_ENCRYPTION_KEY, TEST_KEYS, make_world, wait_until

R = "core/v1/dda/accounts/"


def verify(secret: str, delivery) -> dict[str, Any]:
    payload: dict[str, Any] = Webhook(secret).verify(delivery.body, delivery.headers)
    return payload


async def registration(world, reg_id: str) -> dict[str, Any]:
    resp = await world.client.get(f"/webhooks/v1/registrations/{reg_id}", headers=world.partner)
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def event(world, event_id: str) -> dict[str, Any]:
    resp = await world.client.get(f"/webhooks/v1/events/{event_id}", headers=world.partner)
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def attempts(world, event_id: str) -> list[dict[str, Any]]:
    resp = await world.client.get(f"/webhooks/v1/events/{event_id}/attempts", headers=world.partner)
    assert resp.status == 200, await resp.text()
    data: list[dict[str, Any]] = (await resp.json())["data"]
    return data


async def wait_status(world, event_id: str, status: str, timeout: float = 10.0) -> dict[str, Any]:
    async def reached() -> bool:
        return (await event(world, event_id))["status"] == status

    await wait_until(reached, timeout=timeout)
    return await event(world, event_id)


async def wait_reg_status(world, reg_id: str, status: str, timeout: float = 10.0) -> dict[str, Any]:
    async def reached() -> bool:
        return (await registration(world, reg_id))["status"] == status

    await wait_until(reached, timeout=timeout)
    return await registration(world, reg_id)


async def wait_attempts(world, event_id: str, count: int, timeout: float = 10.0) -> list[Any]:
    async def enough() -> bool:
        return len(await attempts(world, event_id)) >= count

    await wait_until(enough, timeout=timeout)
    return await attempts(world, event_id)


def answer(status: int, body: str | bytes = "", **headers: str):
    async def behaviour(_request: web.Request, _n: int) -> web.StreamResponse:
        data = body.encode() if isinstance(body, str) else body
        return web.Response(status=status, body=data, headers=headers)

    return behaviour


# ---------------------------------------------------------------------- what is sent


async def test_headers_and_signature_exactly_as_the_contract(make_client, receiver, db):
    client = await make_client(workers=True)
    world = await make_world(client)
    with_auth = await world.register(receiver.url + "/auth", basicAuth="alice:s3cret")
    plain = await world.register(receiver.url + "/plain")
    before = int(time.time())
    await world.emit([R + "1", R + "2"])
    deliveries = await receiver.wait_for(2)
    after = int(time.time())
    by_reg = {d.json()["registrationId"]: d for d in deliveries}
    assert set(by_reg) == {with_auth["id"], plain["id"]}
    for reg in (with_auth, plain):
        delivery = by_reg[reg["id"]]
        payload = verify(reg["secret"], delivery)
        headers = delivery.headers
        assert headers["Content-Type"] == "application/json"
        assert headers["User-Agent"] == f"broker-webhooks/{broker.__version__}"
        assert headers["webhook-id"] == payload["id"]
        assert before - 1 <= int(headers["webhook-timestamp"]) <= after + 1
        assert [s.split(",")[0] for s in headers["webhook-signature"].split(" ")] == ["v1"]
        row = await db.fetchrow("SELECT * FROM events WHERE id = $1::uuid", payload["id"])
        assert payload == {
            "id": str(row["id"]),
            "eventName": "Core.Account.Opened",
            "status": "Pending",
            "partnerId": world.partner_id,
            "registrationId": reg["id"],
            "createdAt": format_time(row["created_at"]),
            "lastAttemptedAt": None,
            "resources": [R + "1", R + "2"],
        }
        # Someone else's secret does not verify it.
        other = "whsec_" + base64.b64encode(os.urandom(32)).decode()
        with pytest.raises(Exception, match="signature"):
            Webhook(other).verify(delivery.body, delivery.headers)
    expected = "Basic " + base64.b64encode(b"alice:s3cret").decode()
    assert by_reg[with_auth["id"]].headers["Authorization"] == expected
    assert "Authorization" not in by_reg[plain["id"]].headers


async def test_during_a_rotation_both_secrets_verify(make_client, receiver):
    client = await make_client(workers=True)
    world = await make_world(client)
    reg = await world.register(receiver.url)
    old = reg["secret"]
    resp = await client.post(
        f"/webhooks/v1/registrations/{reg['id']}/rotate-secret",
        json={"graceSeconds": 3600},
        headers=world.partner,
    )
    assert resp.status == 200, await resp.text()
    new = (await resp.json())["secret"]
    assert new != old
    await world.emit([R + "1"])
    [delivery] = await receiver.wait_for(1)
    assert len(delivery.headers["webhook-signature"].split(" ")) == 2
    assert verify(old, delivery) == verify(new, delivery)


# ---------------------------------------------------------------------- retries and outcomes


async def test_retries_follow_the_schedule_then_fail_the_event_and_suspend(
    make_client, receiver, db
):
    client = await make_client(workers=True, retry_schedule=(0.4, 0.8))
    world = await make_world(client)
    reg = await world.register(receiver.url)
    receiver.behaviour = answer(500, "boom")
    await world.emit([R + "1"])
    deliveries = await receiver.wait_for(3)
    event_id = deliveries[0].json()["id"]
    final = await wait_status(world, event_id, "Failed")
    # One attempt, then one after each delay: never earlier than the schedule says.
    assert deliveries[1].at - deliveries[0].at >= 0.4 - 0.05
    assert deliveries[2].at - deliveries[1].at >= 0.8 - 0.05
    reg_now = await wait_reg_status(world, reg["id"], "Suspended")
    assert reg_now["failureCount"] == 3
    assert reg_now["lastFailureAt"] is not None and reg_now["lastSuccessAt"] is None
    tries = await attempts(world, event_id)
    assert [a["attemptNumber"] for a in tries] == [1, 2, 3]
    assert all(a["responseStatus"] == 500 and a["responseBody"] == "boom" for a in tries)
    assert all(a["error"] and a["durationMs"] >= 0 for a in tries)
    assert reg_now["lastFailureAt"] == tries[-1]["attemptedAt"]
    assert final["lastAttemptedAt"] == tries[-1]["attemptedAt"]
    # Each delivered body names the start of the previous attempt (none on the first).
    payloads = [verify(reg["secret"], d) for d in deliveries]
    assert [p["lastAttemptedAt"] for p in payloads] == [
        None,
        tries[0]["attemptedAt"],
        tries[1]["attemptedAt"],
    ]
    assert {d.headers["webhook-id"] for d in deliveries} == {event_id}
    assert all(p["status"] == "Pending" for p in payloads)
    # Exhausted means exhausted: nothing more is attempted.
    await asyncio.sleep(1.0)
    assert len(receiver.received) == 3
    assert await db.fetchval("SELECT status FROM events WHERE id = $1::uuid", event_id) == "Failed"
    # A finished event leaves the delivery queue.
    assert (
        await db.fetchval("SELECT count(*) FROM delivery_queue WHERE event_id = $1::uuid", event_id)
        == 0
    )


async def test_a_success_resets_the_failure_count(make_client, receiver):
    client = await make_client(workers=True, retry_schedule=(0.1, 1.5, 0.1))

    async def flaky(_request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=500 if n <= 2 else 200, text=f"try {n}")

    receiver.behaviour = flaky
    world = await make_world(client)
    reg = await world.register(receiver.url)
    await world.emit([R + "1"])

    async def two_failures() -> bool:
        return (await registration(world, reg["id"]))["failureCount"] == 2

    await wait_until(two_failures)  # the 1.5 s delay leaves time to see it
    deliveries = await receiver.wait_for(3)
    event_id = deliveries[0].json()["id"]
    await wait_status(world, event_id, "Success")

    async def reset() -> bool:
        return (await registration(world, reg["id"]))["failureCount"] == 0

    await wait_until(reset)
    reg_now = await registration(world, reg["id"])
    assert reg_now["status"] == "Active"
    tries = await attempts(world, event_id)
    assert [(a["attemptNumber"], a["responseStatus"]) for a in tries] == [
        (1, 500),
        (2, 500),
        (3, 200),
    ]
    assert tries[2]["error"] is None and tries[2]["responseBody"] == "try 3"
    assert reg_now["lastSuccessAt"] == tries[2]["attemptedAt"]
    assert reg_now["lastFailureAt"] == tries[1]["attemptedAt"]


async def test_410_suspends_at_once_and_keeps_the_event_pending(make_client, receiver, db):
    client = await make_client(workers=True, retry_schedule=(0.1, 0.1, 0.1))
    world = await make_world(client)
    reg = await world.register(receiver.url)
    receiver.behaviour = answer(410, "gone")
    await world.emit([R + "1"])
    [delivery] = await receiver.wait_for(1)
    event_id = delivery.json()["id"]
    reg_now = await wait_reg_status(world, reg["id"], "Suspended")
    assert reg_now["failureCount"] == 1
    await asyncio.sleep(1.0)  # the 0.1 s retries would have come by now
    assert len(receiver.received) == 1
    assert (await event(world, event_id))["status"] == "Pending"
    [attempt] = await attempts(world, event_id)
    assert attempt["responseStatus"] == 410
    # New windows keep queueing for it, unattempted.
    await world.emit([R + "2"])

    async def two_events() -> bool:
        return await db.fetchval("SELECT count(*) FROM events") == 2

    await wait_until(two_events)
    await asyncio.sleep(0.5)
    assert len(receiver.received) == 1
    statuses = await db.fetch("SELECT status, attempt_count FROM events ORDER BY created_at")
    assert [(r["status"], r["attempt_count"]) for r in statuses] == [("Pending", 1), ("Pending", 0)]


async def test_a_timeout_is_a_recorded_failed_attempt(make_client, receiver):
    client = await make_client(workers=True, delivery_timeout_seconds=0.5, retry_schedule=(0.2,))

    async def slow_once(_request: web.Request, n: int) -> web.StreamResponse:
        if n == 1:
            await asyncio.sleep(1.5)
        return web.Response(text="ok")

    receiver.behaviour = slow_once
    world = await make_world(client)
    reg = await world.register(receiver.url)
    await world.emit([R + "1"])
    deliveries = await receiver.wait_for(2)
    event_id = deliveries[0].json()["id"]
    await wait_status(world, event_id, "Success")
    first, second = await attempts(world, event_id)
    assert first["responseStatus"] is None
    assert "timeout" in first["error"].lower()
    assert 400 <= first["durationMs"] < 1500
    assert (second["responseStatus"], second["error"]) == (200, None)
    assert (await registration(world, reg["id"]))["lastFailureAt"] == first["attemptedAt"]


async def test_connection_refused_is_a_recorded_failed_attempt(make_client):
    client = await make_client(workers=True, retry_schedule=(0.1,))
    world = await make_world(client)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    reg = await world.register(f"http://127.0.0.1:{port}/hook")
    await world.emit([R + "1"])
    await wait_reg_status(world, reg["id"], "Suspended")
    resp = await client.get("/webhooks/v1/events", headers=world.partner)
    [ev] = (await resp.json())["data"]
    assert ev["status"] == "Failed"
    tries = await attempts(world, ev["id"])
    assert len(tries) == 2
    assert all(a["responseStatus"] is None and a["error"] for a in tries)


async def test_redirects_are_not_followed_and_count_as_failures(make_client, receiver):
    client = await make_client(workers=True, retry_schedule=(0.1,))
    world = await make_world(client)
    reg = await world.register(receiver.url)

    paths: list[str] = []

    async def redirect(request: web.Request, _n: int) -> web.StreamResponse:
        paths.append(request.path)
        if request.path.endswith("/elsewhere"):
            return web.Response(text="followed!")
        raise web.HTTPFound(location=receiver.url + "/elsewhere")

    receiver.behaviour = redirect
    await world.emit([R + "1"])
    deliveries = await receiver.wait_for(2)
    event_id = deliveries[0].json()["id"]
    await wait_status(world, event_id, "Failed")
    assert paths == ["/hook", "/hook"]  # the two attempts, never the redirect target
    tries = await attempts(world, event_id)
    assert [a["responseStatus"] for a in tries] == [302, 302]
    assert all("redirect" in a["error"] for a in tries)
    reg_now = await wait_reg_status(world, reg["id"], "Suspended")
    assert reg_now["failureCount"] == 2


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_is_honoured_on_429_and_503(make_client, receiver, status):
    client = await make_client(workers=True, retry_schedule=(0.1,))

    async def busy_once(_request: web.Request, n: int) -> web.StreamResponse:
        if n > 1:
            return web.Response(text="ok")
        if status == 429:
            return web.Response(status=429, headers={"Retry-After": "2"})
        when = format_datetime(datetime.now(UTC) + timedelta(seconds=3), usegmt=True)
        return web.Response(status=503, headers={"Retry-After": when})

    receiver.behaviour = busy_once
    world = await make_world(client)
    await world.register(receiver.url)
    await world.emit([R + "1"])
    first, second = await receiver.wait_for(2)
    # The HTTP date has second precision, so 3 s ahead is at least 2 s ahead.
    assert second.at - first.at >= 2.0 - 0.05
    event_id = first.json()["id"]
    await wait_status(world, event_id, "Success")
    tries = await attempts(world, event_id)
    assert [a["responseStatus"] for a in tries] == [status, 200]


async def test_retry_after_on_other_statuses_is_ignored(make_client, receiver):
    client = await make_client(workers=True, retry_schedule=(0.1,))

    async def fail_once(_request: web.Request, n: int) -> web.StreamResponse:
        if n == 1:
            return web.Response(status=500, headers={"Retry-After": "30"})
        return web.Response(text="ok")

    receiver.behaviour = fail_once
    world = await make_world(client)
    await world.register(receiver.url)
    await world.emit([R + "1"])
    first, second = await receiver.wait_for(2, timeout=10)
    assert second.at - first.at < 10


async def test_response_bodies_are_kept_to_their_first_1024_bytes(make_client, receiver):
    client = await make_client(workers=True)
    world = await make_world(client, event_types=("Core.Account.Opened", "Core.Card.Issued"))
    huge = "x" * 5_000_000
    euros = "€" * 1000  # 3 bytes each: 1024 bytes end inside a character

    async def talkative(request: web.Request, _n: int) -> web.StreamResponse:
        return web.Response(text=huge if request.path.endswith("/huge") else euros)

    receiver.behaviour = talkative
    await world.register(receiver.url + "/huge", ["Core.Account.Opened"])
    await world.register(receiver.url + "/euros", ["Core.Card.Issued"])
    await world.emit([R + "1"])
    await world.emit([R + "1"], event_name="Core.Card.Issued")
    deliveries = await receiver.wait_for(2)
    for delivery in deliveries:
        event_id = delivery.json()["id"]
        await wait_status(world, event_id, "Success")
        [attempt] = await attempts(world, event_id)
        body = attempt["responseBody"]
        size = len(body.encode())
        if delivery.json()["eventName"] == "Core.Account.Opened":
            assert body == "x" * 1024
        else:
            assert 1021 <= size <= 1024
            assert euros.startswith(body)


async def test_a_response_body_postgres_cannot_store_does_not_jam_recording(
    make_client, receiver, db
):
    """A NUL byte in a response body cannot go into a text column; the attempt is still kept."""
    client = await make_client(workers=True)
    world = await make_world(client)
    await world.register(receiver.url)
    receiver.behaviour = answer(200, b"ok\x00\xff\xfe binary")
    await world.emit([R + "1"])
    [delivery] = await receiver.wait_for(1)
    event_id = delivery.json()["id"]
    await wait_status(world, event_id, "Success", timeout=5)
    [attempt] = await attempts(world, event_id)
    assert attempt["responseStatus"] == 200
    assert attempt["responseBody"].startswith("ok")
    assert "\x00" not in attempt["responseBody"]
    # And later deliveries are recorded too (the worker is not stuck on the first result).
    receiver.behaviour = None
    await world.emit([R + "2"])
    _, second = await receiver.wait_for(2)
    await wait_status(world, second.json()["id"], "Success", timeout=5)


async def test_deleting_a_registration_mid_delivery_does_not_jam_recording(
    make_client, receiver, db
):
    client = await make_client(workers=True)
    world = await make_world(client, event_types=("Core.Account.Opened", "Core.Card.Issued"))
    doomed = await world.register(receiver.url + "/doomed", ["Core.Account.Opened"])
    await world.register(receiver.url + "/fine", ["Core.Card.Issued"])
    release = asyncio.Event()

    async def hang_doomed(request: web.Request, _n: int) -> web.StreamResponse:
        if request.path.endswith("/doomed"):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(release.wait(), 1.5)
        return web.Response(text="ok")

    receiver.behaviour = hang_doomed
    await world.emit([R + "1"])
    [first] = await receiver.wait_for(1)
    # Deleting discards its queued events while the attempt is in flight.
    resp = await client.delete(f"/webhooks/v1/registrations/{doomed['id']}", headers=world.partner)
    assert resp.status == 204
    release.set()
    await asyncio.sleep(0.3)  # the in-flight result is recorded (or dropped) now
    await world.emit([R + "2"], event_name="Core.Card.Issued")
    _, second = await receiver.wait_for(2)
    assert second.json()["eventName"] == "Core.Card.Issued"
    await wait_status(world, second.json()["id"], "Success", timeout=5)
    # The in-flight event is gone, or kept with its attempt recorded: never stuck mid-air.
    row = await db.fetchrow("SELECT status FROM events WHERE id = $1::uuid", first.json()["id"])
    assert row is None or row["status"] != "Pending"
    assert await db.fetchval("SELECT count(*) FROM delivery_queue") == 0


# ---------------------------------------------------------------------- who is attempted


async def test_paused_and_suspended_registrations_are_not_attempted(make_client, receiver, db):
    client = await make_client(workers=True)
    world = await make_world(client)
    paused = await world.register(receiver.url + "/paused")
    suspended = await world.register(receiver.url + "/suspended")
    resp = await client.post(
        f"/webhooks/v1/registrations/{paused['id']}/pause", headers=world.partner
    )
    assert resp.status == 200
    await db.execute(
        "UPDATE registrations SET status = 'Suspended' WHERE id = $1::uuid", suspended["id"]
    )
    await world.emit([R + "1"])

    async def queued() -> bool:
        return await db.fetchval("SELECT count(*) FROM events") == 2

    await wait_until(queued)
    await asyncio.sleep(1.0)  # five poll intervals
    assert receiver.received == []
    assert await db.fetchval("SELECT sum(attempt_count) FROM events") == 0
    assert await db.fetchval("SELECT count(*) FROM attempts") == 0
    # Unpausing lets the queue drain; the Suspended one still waits.
    resp = await client.post(
        f"/webhooks/v1/registrations/{paused['id']}/unpause", headers=world.partner
    )
    assert resp.status == 200
    [delivery] = await receiver.wait_for(1)
    assert verify(paused["secret"], delivery)["registrationId"] == paused["id"]
    await asyncio.sleep(0.6)
    assert len(receiver.received) == 1


# ---------------------------------------------------------------------- leases and many workers


async def _close_windows_by_hand(db_url: str, rules: WindowRules) -> None:
    pool = await create_pool(db_url, size=2)
    try:
        store = Store(pool, keys=TEST_KEYS)

        async def created() -> bool:
            return bool((await store.close_due_windows(rules)).created)

        await wait_until(created, timeout=5)
    finally:
        await pool.close()


async def test_an_abandoned_claim_is_delivered_by_another_worker_after_its_lease(
    make_client, receiver, db_url, db
):
    api = await make_client(workers=False)
    world = await make_world(api)
    reg = await world.register(receiver.url)
    await world.emit([R + "1"])
    await _close_windows_by_hand(
        db_url, WindowRules(min_seconds=0.3, max_seconds=2, max_resources=1000)
    )
    # A worker claims with a short lease, then "crashes": it never sends nor records.
    pool = await create_pool(db_url, size=2)
    try:
        [claimed] = await Store(pool, keys=TEST_KEYS).claim_deliveries(
            limit=10, per_registration=16, lease_seconds=1.5, worker_id="crashed-worker"
        )
    finally:
        await pool.close()
    claimed_at = time.monotonic()
    await make_client(workers=True)  # a healthy worker on the same database
    [delivery] = await receiver.wait_for(1, timeout=10)
    assert delivery.at - claimed_at >= 1.5 - 0.1  # not while the lease was live
    payload = verify(reg["secret"], delivery)
    assert payload["id"] == str(claimed.id)
    assert payload["lastAttemptedAt"] == format_time(claimed.attempted_at)
    await wait_status(world, str(claimed.id), "Success")
    tries = await attempts(world, str(claimed.id))
    # The lost attempt is on record too, as one whose outcome is unknown.
    assert [a["attemptNumber"] for a in tries] == [1, 2]
    assert tries[0]["attemptedAt"] == format_time(claimed.attempted_at)
    assert tries[0]["responseStatus"] is None and "lease" in tries[0]["error"]
    assert (tries[1]["responseStatus"], tries[1]["error"]) == (200, None)
    await asyncio.sleep(0.5)
    assert len(receiver.received) == 1


async def test_a_stale_result_after_a_lease_expired_changes_nothing(
    make_client, receiver, db_url, db
):
    """The first claimant reports late, after another worker delivered: it must not undo that."""
    api = await make_client(workers=False, retry_schedule=(0.1,))
    world = await make_world(api)
    reg = await world.register(receiver.url)
    await world.emit([R + "1"])
    await _close_windows_by_hand(
        db_url, WindowRules(min_seconds=0.3, max_seconds=2, max_resources=1000)
    )
    pool = await create_pool(db_url, size=2)
    try:
        store = Store(pool, keys=TEST_KEYS)
        [stale] = await store.claim_deliveries(
            limit=10, per_registration=16, lease_seconds=0.5, worker_id="slow-worker"
        )
        await make_client(workers=True, retry_schedule=(0.1,))
        await receiver.wait_for(1)
        await wait_status(world, str(stale.id), "Success")
        # Now the slow worker's "last attempt failed" arrives.
        await store.record_results(
            [
                DeliveryResult(
                    event_id=stale.id,
                    registration_id=stale.registration_id,
                    attempt_number=stale.attempt_count,
                    attempted_at=stale.attempted_at,
                    duration_ms=10,
                    response_status=500,
                    error="HTTP 500",
                    response_body="late",
                    success=False,
                    new_event_status="Failed",
                    next_attempt_at=None,
                    round_attempts=stale.round_attempts,
                    registration_trigger=Trigger.EXHAUSTED,
                )
            ]
        )
    finally:
        await pool.close()
    assert (await event(world, str(stale.id)))["status"] == "Success"
    assert (await registration(world, reg["id"]))["status"] == "Active"


async def test_two_workers_on_one_database_deliver_everything_never_concurrently(
    make_client, receiver, db
):
    settings = {
        "window_min_seconds": 0.2,
        "window_max_seconds": 1.0,
        "window_max_resources": 1,  # one event object per resource: many small events
        "retry_schedule": (0.05, 0.05, 0.05, 0.05),
        "delivery_per_registration": 4,
    }
    first = await make_client(workers=True, **settings)
    await make_client(workers=True, **settings)
    world = await make_world(first)
    regs = [await world.register(f"{receiver.url}/{i}") for i in range(3)]
    in_flight: Counter[str] = Counter()
    tries: Counter[str] = Counter()
    overlaps: list[str] = []

    async def busy(request: web.Request, n: int) -> web.StreamResponse:
        msg_id = request.headers["webhook-id"]
        in_flight[msg_id] += 1
        tries[msg_id] += 1
        if in_flight[msg_id] > 1:
            overlaps.append(msg_id)
        try:
            await asyncio.sleep(0.01 * (n % 4))
        finally:
            in_flight[msg_id] -= 1
        # About a third of the events fail their first try, so they go through two claims.
        fail = uuid.UUID(msg_id).int % 3 == 0 and tries[msg_id] == 1
        return web.Response(status=503 if fail else 200)

    receiver.behaviour = busy
    resources = [f"{R}{i}" for i in range(40)]
    for chunk in range(0, 40, 10):
        await world.emit(resources[chunk : chunk + 10])
    total = 40 * len(regs)

    async def all_done() -> bool:
        return await db.fetchval("SELECT count(*) FROM events WHERE status = 'Success'") == total

    # A third of first tries fail, so five in a row for one registration open its breaker for
    # 10 s now and then (broker.domain.isolation): slower, still all delivered.
    await wait_until(all_done, timeout=45)
    assert overlaps == []
    rows = await db.fetch(
        "SELECT event_id, attempt_number, attempted_at, duration_ms FROM attempts"
        " ORDER BY event_id, attempt_number"
    )
    per_event: dict[uuid.UUID, list[Any]] = {}
    for row in rows:
        per_event.setdefault(row["event_id"], []).append(row)
    assert len(per_event) == total
    assert any(len(t) > 1 for t in per_event.values())  # retries did happen
    for tries in per_event.values():
        assert [t["attempt_number"] for t in tries] == list(range(1, len(tries) + 1))
        for a, b in itertools.pairwise(tries):
            ended = a["attempted_at"] + timedelta(milliseconds=a["duration_ms"])
            assert ended <= b["attempted_at"] + timedelta(milliseconds=5), "overlapping attempts"
    delivered = {d.headers["webhook-id"] for d in receiver.received}
    assert delivered == {str(e) for e in per_event}
    # Every resource reached every registration once, each in its own event object.
    got = await db.fetch("SELECT registration_id, resources FROM event_objects")
    for reg in regs:
        mine = sorted(r["resources"][0] for r in got if str(r["registration_id"]) == reg["id"])
        assert mine == sorted(resources)


# ---------------------------------------------------------------------- real worker processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


WORKER_ENV = {
    "BROKER_ALLOW_PRIVATE_URLS": "true",
    "BROKER_ADMIN_TOKEN": ADMIN_TOKEN,
    "BROKER_ENCRYPTION_KEYS": TEST_ENCRYPTION_KEY,
    "BROKER_WINDOW_MIN_SECONDS": "0.3",
    "BROKER_WINDOW_MAX_SECONDS": "1",
    "BROKER_WINDOW_MAX_RESOURCES": "25",
    "BROKER_POLL_INTERVAL_SECONDS": "0.2",
    "BROKER_RETRY_SCHEDULE": "0.2,0.2,0.2",
    "BROKER_RETRY_JITTER": "0",
    "BROKER_DELIVERY_TIMEOUT_SECONDS": "2",
    "BROKER_LEASE_MARGIN_SECONDS": "1",
    "BROKER_DB_POOL_SIZE": "4",
    "BROKER_LOG_LEVEL": "WARNING",
}


async def _start_worker(
    db_url: str, log: Path, **extra_env: str
) -> tuple[asyncio.subprocess.Process, int]:
    port = _free_port()
    env = {**os.environ, **WORKER_ENV, **extra_env, "BROKER_DATABASE_URL": db_url}
    handle = log.open("wb")
    proc = await asyncio.create_subprocess_exec(
        str(ROOT / ".venv" / "bin" / "broker"),
        "serve",
        "--role",
        "worker",
        "--port",
        str(port),
        env=env,
        stdout=handle,
        stderr=asyncio.subprocess.STDOUT,
        cwd=str(ROOT),
    )
    handle.close()
    return proc, port


async def _wait_healthy(port: int, proc: asyncio.subprocess.Process, log: Path) -> None:
    async with aiohttp.ClientSession() as session, asyncio.timeout(15):
        while True:
            if proc.returncode is not None:
                raise AssertionError(await asyncio.to_thread(log.read_text))
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


async def test_two_worker_processes_close_each_window_once_and_deliver_everything(
    make_client, receiver, db_url, db, tmp_path
):
    names = tuple(f"Core.Scale.E{i}" for i in range(5))
    procs: list[asyncio.subprocess.Process] = []
    try:
        started = [await _start_worker(db_url, tmp_path / f"worker{i}.log") for i in range(2)]
        procs = [p for p, _ in started]
        api = await make_client(
            workers=False, window_min_seconds=0.3, window_max_seconds=1.0, window_max_resources=25
        )
        world = await make_world(api, event_types=names)
        every = await world.register(receiver.url + "/every", ["*"])
        some = await world.register(receiver.url + "/some", ["Core.Scale.E0", "Core.Scale.E3"])
        for i, (proc, port) in enumerate(started):
            await _wait_healthy(port, proc, tmp_path / f"worker{i}.log")
        emitted: dict[str, list[str]] = {name: [] for name in names}
        for round_ in range(8):
            for i, name in enumerate(names):
                batch = [f"{R}{round_}/{i}/{j}" for j in range(5 + 7 * ((round_ + i) % 3))]
                await world.emit(batch, event_name=name)
                emitted[name].extend(batch)
            await asyncio.sleep(0.15)

        async def finished() -> bool:
            open_groups = await db.fetchval("SELECT count(*) FROM window_groups")
            pending = await db.fetchval("SELECT count(*) FROM events WHERE status <> 'Success'")
            return open_groups == 0 and pending == 0

        await wait_until(finished, timeout=15)
        for proc in procs:
            assert proc.returncode is None  # neither worker died along the way
    finally:
        for proc in procs:
            await _stop(proc)
    rows = await db.fetch("SELECT id, registration_id, event_name, resources FROM event_objects")
    expected = {(every["id"], n): emitted[n] for n in names}
    expected |= {(some["id"], n): emitted[n] for n in ("Core.Scale.E0", "Core.Scale.E3")}
    seen: dict[tuple[str, str], Counter[str]] = {}
    for row in rows:
        resources = list(row["resources"])
        assert len(resources) == len(set(resources)) <= 25
        seen.setdefault((str(row["registration_id"]), row["event_name"]), Counter()).update(
            resources
        )
    assert set(seen) == set(expected)
    for key, resources in expected.items():
        assert [r for r, n in seen[key].items() if n > 1] == [], f"{key}: closed twice"
        assert set(seen[key]) == set(resources), f"{key}: resources lost"
    delivered = {d.headers["webhook-id"] for d in receiver.received}
    assert delivered == {str(r["id"]) for r in rows}
    secrets = {every["id"]: every["secret"], some["id"]: some["secret"]}
    for delivery in receiver.received:
        verify(secrets[delivery.json()["registrationId"]], delivery)


@pytest.mark.fault
async def test_a_worker_killed_mid_delivery_is_redelivered_by_another(
    make_client, receiver, db_url, db, tmp_path
):
    release = asyncio.Event()

    async def hang_first(_request: web.Request, n: int) -> web.StreamResponse:
        if n == 1:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(release.wait(), 5)
        return web.Response(text="ok")

    receiver.behaviour = hang_first
    log = tmp_path / "victim.log"
    proc, port = await _start_worker(
        db_url, log, BROKER_DELIVERY_TIMEOUT_SECONDS="3", BROKER_LEASE_MARGIN_SECONDS="0.5"
    )
    try:
        api = await make_client(workers=False, window_min_seconds=0.3, window_max_seconds=1.0)
        world = await make_world(api)
        reg = await world.register(receiver.url)
        await _wait_healthy(port, proc, log)
        await world.emit([R + "1"])
        [first] = await receiver.wait_for(1)
        proc.send_signal(signal.SIGKILL)  # mid-delivery: no drain, no lease released
        await proc.wait()
        killed_at = time.monotonic()
        release.set()
    finally:
        await _stop(proc)
    event_id = first.json()["id"]
    row = await db.fetchrow(
        "SELECT e.status, q.locked_until FROM events e JOIN delivery_queue q ON q.event_id = e.id"
        " WHERE e.id = $1::uuid",
        event_id,
    )
    assert row["status"] == "Pending" and row["locked_until"] is not None
    await make_client(
        workers=True, window_min_seconds=0.3, window_max_seconds=1.0, delivery_timeout_seconds=3
    )
    _, second = await receiver.wait_for(2, timeout=10)
    assert second.headers["webhook-id"] == event_id
    assert second.at - killed_at > 0  # only after the lease ran out
    payload = verify(reg["secret"], second)
    assert payload["lastAttemptedAt"] is not None
    await wait_status(world, event_id, "Success")
    tries = await attempts(world, event_id)
    assert [a["attemptNumber"] for a in tries] == [1, 2]
    assert tries[0]["responseStatus"] is None and tries[1]["responseStatus"] == 200
