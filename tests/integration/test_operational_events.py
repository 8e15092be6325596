"""Operational events: the broker tells a partner about its own registrations (API.md).

Every scenario runs the real pipeline: a transition (a result flush, a partner's restart / pause
/ unpause, the queued-event TTL) writes an outbox row in its own transaction, the aggregator
moves it into a window, the window closes into event objects for the registrations whose
patterns name ``Broker.``, and a worker delivers them to a real receiver.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from aiohttp import web

from broker.domain.operational import EVENT_TYPES
from broker.store.db import create_pool
from broker.store.store import Store
from broker.workers.aggregator import Aggregator
from tests.conftest import (
    TEST_KEYS,
    Receiver,
    admin_headers,
    make_settings,
    make_world,
    wait_until,
)

R = "core/v1/dda/accounts/"
SUSPENDED = "Broker.Registration.Suspended"
RESTARTING = "Broker.Registration.Restarting"
ACTIVE = "Broker.Registration.Active"
PAUSED = "Broker.Registration.Paused"
FAILED = "Broker.Event.Failed"


def route(receiver: Receiver, failing: dict[str, bool]) -> None:
    """One receiver, two endpoints: /hook (the partner's business endpoint, failing while
    ``failing["on"]``) and /ops (the endpoint registered for Broker.*, always fine)."""

    async def behaviour(request: web.Request, _n: int) -> web.StreamResponse:
        if request.path == "/hook" and failing["on"]:
            return web.Response(status=500)
        return web.Response(text="ok")

    receiver.behaviour = behaviour


async def ops_received(db: asyncpg.Connection, registration_id: str) -> dict[str, list[str]]:
    """Operational event objects made for the ops registration: name -> resources, all windows."""
    rows = await db.fetch(
        "SELECT event_name, resources FROM event_objects WHERE registration_id = $1 ORDER BY created_at",
        registration_id,
    )
    out: dict[str, list[str]] = {}
    for row in rows:
        out.setdefault(row["event_name"], []).extend(row["resources"])
    return out


async def test_a_suspension_reaches_the_registration_that_names_broker_events(
    make_client, receiver: Receiver, db: asyncpg.Connection
):
    failing = {"on": True}
    route(receiver, failing)
    base = receiver.url.removesuffix("/hook")
    client = await make_client(workers=True, retry_schedule=(0.05,))
    world = await make_world(client)
    business = await world.register(base + "/hook")
    everything = await world.register(base + "/everything", ["*"])
    ops = await world.register(base + "/ops", ["Broker.*"])
    await world.emit([R + "1"])

    async def ops_heard_both() -> bool:
        got = await ops_received(db, ops["id"])
        return FAILED in got and SUSPENDED in got

    await wait_until(ops_heard_both, timeout=15)
    failed_event = await db.fetchval(
        "SELECT id FROM events WHERE registration_id = $1 AND event_name = 'Core.Account.Opened'",
        business["id"],
    )
    got = await ops_received(db, ops["id"])
    assert got[SUSPENDED] == [f"webhooks/v1/registrations/{business['id']}"]
    assert got[FAILED] == [f"webhooks/v1/events/{failed_event}"]

    # Delivered over HTTP like any event object, to the ops endpoint only.
    async def delivered() -> bool:
        names = {
            r.json()["eventName"]
            for r in receiver.received
            if r.body and r.json().get("registrationId") == ops["id"]
        }
        return {SUSPENDED, FAILED} <= names

    await wait_until(delivered, timeout=15)
    # "*" and the business pattern never match Broker.* names.
    for reg in (business, everything):
        names = await db.fetchval(
            "SELECT array_agg(DISTINCT event_name) FROM events WHERE registration_id = $1",
            reg["id"],
        )
        assert not any(n.startswith("Broker.") for n in names or [])
    # The partner reads them through the events API, like its other events.
    resp = await client.get(
        "/webhooks/v1/events", params={"eventName": SUSPENDED}, headers=world.partner
    )
    assert resp.status == 200
    listed = (await resp.json())["data"]
    assert [e["resources"] for e in listed] == [[f"webhooks/v1/registrations/{business['id']}"]]


async def test_each_lifecycle_transition_emits_exactly_one_event(
    make_client, receiver: Receiver, db: asyncpg.Connection
):
    failing = {"on": True}
    route(receiver, failing)
    base = receiver.url.removesuffix("/hook")
    client = await make_client(workers=True, retry_schedule=(0.05,))
    world = await make_world(client)
    business = await world.register(base + "/hook")
    ops = await world.register(base + "/ops", ["Broker.Registration.*"])
    reg_uri = f"webhooks/v1/registrations/{business['id']}"
    await world.emit([R + "1"])

    async def status_is(status: str) -> bool:
        resp = await client.get(
            f"/webhooks/v1/registrations/{business['id']}", headers=world.partner
        )
        return bool((await resp.json())["status"] == status)

    async def heard(name: str, times: int) -> None:
        # One transition at a time, each heard before the next: each is then its own window
        # (two in one window would fold into one event object listing the resource once).
        async def enough() -> bool:
            return len((await ops_received(db, ops["id"])).get(name, [])) >= times

        await wait_until(enough, timeout=15)

    await wait_until(lambda: status_is("Suspended"), timeout=15)
    await heard(SUSPENDED, 1)
    failing["on"] = False
    url = f"/webhooks/v1/registrations/{business['id']}"
    resp = await client.post(url + "/restart", headers=world.partner)
    assert resp.status == 200, await resp.text()
    await heard(RESTARTING, 1)
    await world.emit([R + "2"])  # the probe: the next queued event
    await wait_until(lambda: status_is("Active"), timeout=15)  # the probe succeeded
    await heard(ACTIVE, 1)
    for step, name, times in (("pause", PAUSED, 1), ("unpause", ACTIVE, 2), ("pause", PAUSED, 2)):
        resp = await client.post(f"{url}/{step}", headers=world.partner)
        assert resp.status == 200, await resp.text()
        await heard(name, times)
    # A call that changes nothing emits nothing.
    assert (await client.post(url + "/pause", headers=world.partner)).status in (200, 409)
    await asyncio.sleep(1.0)  # longer than a window: anything more would have arrived
    got = await ops_received(db, ops["id"])
    assert got == {
        SUSPENDED: [reg_uri],
        RESTARTING: [reg_uri],
        ACTIVE: [reg_uri, reg_uri],
        PAUSED: [reg_uri, reg_uri],
    }  # and Broker.Registration.* does not match Broker.Event.Failed
    assert await db.fetchval("SELECT count(*) FROM operational_outbox") == 0


async def test_a_transition_that_rolls_back_emits_nothing_and_moves_happen_once(db_url, db):
    """The outbox row lives and dies with the transition; two aggregators racing over the same
    rows store each exactly once."""
    pool = await create_pool(db_url, size=4)
    try:
        store = Store(pool, keys=TEST_KEYS)
        partner, _key = await store.create_partner("Acme")
        await db.execute(
            "INSERT INTO registrations (id, partner_id, url, event_types, secret_sealed) "
            "SELECT gen_random_uuid(), $1, 'https://example.com/h', ARRAY['Broker.*'], '\\x00' "
            "FROM generate_series(1, 300)",
            partner.id,
        )
        await db.execute("UPDATE registrations SET status = 'Paused'")  # committed: 300 rows
        assert await db.fetchval("SELECT count(*) FROM operational_outbox") == 300
        await db.execute("UPDATE registrations SET status = 'Paused'")  # no change: nothing
        rolled_back = db.transaction()
        await rolled_back.start()
        await db.execute("UPDATE registrations SET status = 'Active'")
        assert await db.fetchval("SELECT count(*) FROM operational_outbox") == 600
        await rolled_back.rollback()
        assert await db.fetchval("SELECT count(*) FROM operational_outbox") == 300
        rules = make_settings()
        aggregators = [
            Aggregator(Store(pool, keys=TEST_KEYS), _rules(rules), poll_interval=1)
            for _ in range(3)
        ]
        await asyncio.gather(*(a.run_once() for a in aggregators))
        assert await db.fetchval("SELECT count(*) FROM operational_outbox") == 0
        rows = await db.fetch(
            "SELECT event_name, count(*) AS n, count(DISTINCT resource) AS d "
            "FROM resource_events GROUP BY event_name"
        )
        assert [(r["event_name"], r["n"], r["d"]) for r in rows] == [(PAUSED, 300, 300)]
    finally:
        await pool.close()


def _rules(settings: Any) -> Any:
    from broker.runtime import window_rules

    return window_rules(settings)


async def test_broker_event_types_are_in_the_catalog_and_reserved(client, db):
    world = await make_world(client)
    resp = await client.get("/webhooks/v1/event-types", headers=world.partner)
    names = {t["name"] for t in (await resp.json())["data"]} if resp.status == 200 else set()
    assert set(EVENT_TYPES) <= names
    # Producers cannot forge them: 400 naming the item, nothing stored.
    resp = await client.post(
        "/internal/v1/resource-events",
        json={
            "events": [
                {"partnerId": world.partner_id, "eventName": world.event_name, "resource": R + "1"},
                {"partnerId": world.partner_id, "eventName": SUSPENDED, "resource": R + "2"},
            ]
        },
        headers=world.producer,
    )
    assert resp.status == 400
    problem = await resp.json()
    assert resp.content_type == "application/problem+json"
    assert [e["field"] for e in problem["errors"]] == ["events[1].eventName"]
    assert "operational" in problem["errors"][0]["message"]
    assert await db.fetchval("SELECT count(*) FROM resource_events") == 0
    # The catalog API cannot add names under the prefix.
    resp = await client.put(
        "/admin/v1/event-types/Broker.Something",
        json={"description": "x"},
        headers=admin_headers(),
    )
    assert resp.status == 400
    assert (await resp.json())["errors"][0]["field"] == "name"
    # Registrations may name them, exactly or by prefix.
    reg = await world.register("https://example.com/ops", [SUSPENDED, "Broker.Event.*"])
    assert reg["eventTypes"] == [SUSPENDED, "Broker.Event.*"]


async def test_a_failed_operational_event_raises_no_failed_event(
    make_client, receiver: Receiver, db: asyncpg.Connection
):
    async def behaviour(_request: web.Request, _n: int) -> web.StreamResponse:
        return web.Response(status=500)  # every endpoint fails, the ops one too

    receiver.behaviour = behaviour
    base = receiver.url.removesuffix("/hook")
    client = await make_client(workers=True, retry_schedule=(0.05,))
    world = await make_world(client)
    business = await world.register(base + "/hook")
    ops = await world.register(base + "/ops", ["Broker.Event.Failed"])
    await world.emit([R + "1"])

    async def ops_event_failed() -> bool:
        status = await db.fetchval(
            "SELECT status FROM events WHERE registration_id = $1", ops["id"]
        )
        return bool(status == "Failed")

    await wait_until(ops_event_failed, timeout=15)
    await asyncio.sleep(1.0)  # longer than a window
    failed = await db.fetch("SELECT e.id, e.event_name, e.status FROM events e ORDER BY created_at")
    # One business event failed (one Broker.Event.Failed about it), and that one failed too:
    # nothing is raised about it.
    assert [(r["event_name"], r["status"]) for r in failed] == [
        ("Core.Account.Opened", "Failed"),
        ("Broker.Event.Failed", "Failed"),
    ]
    resources = await db.fetchval(
        "SELECT resources FROM event_objects WHERE registration_id = $1", ops["id"]
    )
    business_event = failed[0]["id"]
    assert resources == [f"webhooks/v1/events/{business_event}"]
    assert business["id"] != ops["id"]
