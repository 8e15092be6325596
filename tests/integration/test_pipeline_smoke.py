"""Ingest -> window -> event object -> signed delivery, end to end on real servers."""

from __future__ import annotations

from standardwebhooks.webhooks import Webhook

from tests.conftest import make_world, wait_until


async def test_resources_arrive_aggregated_signed_and_recorded(make_client, receiver, db):
    client = await make_client(workers=True)
    world = await make_world(client)
    reg = await world.register(receiver.url)
    await world.emit(["core/v1/dda/accounts/1", "core/v1/dda/accounts/2", "core/v1/dda/accounts/1"])
    await world.emit(["core/v1/dda/accounts/3"])
    [delivery] = await receiver.wait_for(1)
    payload = Webhook(reg["secret"]).verify(delivery.body, delivery.headers)
    assert payload["resources"] == [
        "core/v1/dda/accounts/1",
        "core/v1/dda/accounts/2",
        "core/v1/dda/accounts/3",
    ]
    assert payload["status"] == "Pending"
    assert payload["lastAttemptedAt"] is None
    assert payload["registrationId"] == reg["id"]
    assert delivery.headers["webhook-id"] == payload["id"]
    assert delivery.headers["User-Agent"].startswith("broker-webhooks/")

    async def delivered() -> bool:
        resp = await client.get(f"/webhooks/v1/events/{payload['id']}", headers=world.partner)
        return (await resp.json())["status"] == "Success"

    await wait_until(delivered)
    attempts = await (
        await client.get(f"/webhooks/v1/events/{payload['id']}/attempts", headers=world.partner)
    ).json()
    assert [a["attemptNumber"] for a in attempts["data"]] == [1]
    assert attempts["data"][0]["responseStatus"] == 200
    assert attempts["data"][0]["responseBody"] == "ok"
    assert await db.fetchval("SELECT count(*) FROM resource_events") == 0
    assert await db.fetchval("SELECT count(*) FROM window_groups") == 0
