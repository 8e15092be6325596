"""The portal's Replay form: a registration's failed events of a date range queued again and
delivered; a refused range shows the problem's detail. Headless Chromium against a real broker,
workers and receiver."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from playwright.async_api import expect

from tests.conftest import make_world, wait_until
from tests.integration.test_replay import insert_history

pytestmark = pytest.mark.browser

# A datetime-local value (local time of the browser) for a moment `offset_ms` from now.
LOCAL_INPUT = """(offset) => {
  const d = new Date(Date.now() + offset);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T` +
         `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}"""


async def local_input(page: Any, offset: timedelta) -> str:
    value: str = await page.evaluate(LOCAL_INPUT, offset.total_seconds() * 1000)
    return value


async def test_replay_form_queues_failed_events_again_and_they_are_delivered(
    make_client, open_portal, receiver, db
):
    client = await make_client(workers=True)
    world = await make_world(client)
    reg = await world.register(receiver.url)
    now = datetime.now(UTC)
    # Failed while the endpoint was down (two hours and ten minutes ago), one delivered event.
    old = await insert_history(db, world, reg["id"], [("Failed", now - timedelta(hours=2))])
    failed = await insert_history(
        db, world, reg["id"], [("Failed", now - timedelta(minutes=m)) for m in (10, 9)]
    )
    await insert_history(db, world, reg["id"], [("Success", now - timedelta(minutes=8))])

    portal = await open_portal(client)
    page = portal.page
    await portal.open()
    await portal.sign_in(world.partner_key)
    row = portal.registration_row(reg["id"])
    await row.locator("[data-action=replay]").click()
    panel = page.locator("#replay-panel")
    await expect(panel).to_be_visible()
    await expect(page.locator("#replay-context")).to_contain_text(receiver.url)
    await expect(page.locator("#replay-status-failed")).to_be_checked()
    await expect(page.locator("#replay-status-success")).not_to_be_checked()

    # A range that ends before it starts: the problem's detail, nothing queued.
    await page.fill("#replay-since", await local_input(page, -timedelta(hours=1)))
    await page.fill("#replay-until", await local_input(page, -timedelta(hours=3)))
    await page.click("#replay-submit")
    result = page.locator("#replay-result")
    await expect(result).to_have_attribute("data-outcome", "error")
    await expect(result).to_contain_text("until: must be later than since")
    assert receiver.received == []

    # The last hour, failed only: the two events of ten minutes ago, not the older one nor the
    # delivered one.
    await page.fill("#replay-until", "")
    await page.click("#replay-submit")
    await expect(result).to_have_attribute("data-outcome", "ok")
    await expect(result).to_have_text("2 event objects queued again.")
    await portal.screenshot("portal-replay.png")
    received = await receiver.wait_for(2)
    assert sorted(r.json()["id"] for r in received) == sorted(str(i) for i in failed)

    async def delivered() -> bool:
        for event_id in failed:
            resp = await client.get(f"/webhooks/v1/events/{event_id}", headers=world.partner)
            if (await resp.json())["status"] != "Success":
                return False
        return True

    await wait_until(delivered)
    # Delivered: the events page shows them Success, with a second attempt.
    await page.evaluate(
        "(id) => { location.hash = `#/events?registrationId=${id}&status=Success`; }", reg["id"]
    )
    for event_id in failed:
        events_row = page.locator(f'#events-body tr[data-event-id="{event_id}"]')
        await expect(events_row).to_be_visible()
    await page.locator(f'#events-body tr[data-event-id="{failed[0]}"] .event-link').click()
    await expect(page.locator("#attempts-body tr")).to_have_count(2)
    resp = await client.get(f"/webhooks/v1/events/{old[0]}", headers=world.partner)
    assert (await resp.json())["status"] == "Failed"
    portal.assert_healthy()
