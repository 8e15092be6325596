"""Names are matched whole: a trailing newline (which Python's ``$`` lets through) is refused."""

from __future__ import annotations

from tests.conftest import admin_headers

INGEST = "/internal/v1/resource-events"


async def test_event_type_names_refuse_a_trailing_newline(world, db):
    resp = await world.client.put(
        "/admin/v1/event-types/Core.Account.Closed%0A",
        json={"description": "x"},
        headers=admin_headers(),
    )
    assert resp.status == 400, await resp.text()
    assert [e["field"] for e in (await resp.json())["errors"]] == ["name"]
    item = {"partnerId": world.partner_id, "resource": "a/1"}
    resp = await world.client.post(
        INGEST,
        json={"events": [{**item, "eventName": world.event_name + "\n"}]},
        headers=world.producer,
    )
    assert resp.status == 400, await resp.text()
    assert [e["field"] for e in (await resp.json())["errors"]] == ["events[0].eventName"]
    resp = await world.client.post(
        "/webhooks/v1/registrations",
        json={"url": "https://93.184.216.34/h", "eventTypes": [world.event_name + "\n"]},
        headers=world.partner,
    )
    assert resp.status == 400, await resp.text()
    assert [e["field"] for e in (await resp.json())["errors"]] == ["eventTypes[0]"]
    assert await db.fetchval("SELECT count(*) FROM event_types WHERE name LIKE '%' || chr(10)") == 0
    assert await db.fetchval("SELECT count(*) FROM resource_events") == 0
    assert await db.fetchval("SELECT count(*) FROM registrations") == 0
