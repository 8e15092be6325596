"""The partner portal end to end in headless Chromium, against a real broker and real receivers.

Nothing is stubbed: the page talks to the broker's own API, the broker's workers deliver to a
receiver on 127.0.0.1, and status changes reach the page through its own polling (no reload).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import expect

from tests.browser.conftest import UI_TIMEOUT_MS
from tests.conftest import make_world, scrape_metrics, wait_until

pytestmark = pytest.mark.browser


def transitions(samples: dict[str, float], status: str) -> float:
    return samples.get(f'broker_registration_transitions_total{{to="{status}"}}', 0.0)


async def failing(request: web.Request, n: int) -> web.StreamResponse:
    return web.Response(status=500, text="receiver down: disk full")


async def test_sign_in_rejects_a_bad_key_then_lists_registrations(
    make_client, open_portal, receiver
):
    client = await make_client()
    world = await make_world(client)
    reg = await world.register(receiver.url, description="Ledger hook")
    portal = await open_portal(client)
    page = portal.page
    await portal.open("/portal")  # redirected to /portal/
    await expect(page.locator("#signin")).to_be_visible()

    await portal.sign_in("bk_partner_not-a-real-key")
    await expect(page.locator("#alert")).to_contain_text("That key was not accepted")
    await expect(page.locator("#signin")).to_be_visible()
    await expect(page.locator("#registrations")).to_be_hidden()
    assert await page.evaluate("sessionStorage.getItem('broker.partnerKey')") is None

    await portal.sign_in(world.partner_key)
    row = portal.registration_row(reg["id"])
    await expect(row).to_have_attribute("data-status", "Active")
    await expect(row.locator(".badge.status-Active")).to_have_text("Active")
    await expect(row).to_contain_text(receiver.url)
    await expect(row).to_contain_text("Ledger hook")
    await expect(page.locator("#alert")).to_be_empty()
    await expect(page.locator("#status")).to_have_text("Signed in.")
    # The key lives in this tab's sessionStorage only: not in localStorage, cookies or the URL.
    assert await page.evaluate("sessionStorage.getItem('broker.partnerKey')") == world.partner_key
    assert await page.evaluate("localStorage.length") == 0
    assert await page.context.cookies() == []
    assert world.partner_key not in page.url

    await page.reload()  # same tab: still signed in
    await expect(row).to_have_attribute("data-status", "Active")
    await page.click("#sign-out")
    await expect(page.locator("#signin")).to_be_visible()
    assert await page.evaluate("sessionStorage.getItem('broker.partnerKey')") is None
    portal.assert_healthy()


async def test_suspended_registration_is_restarted_from_the_page(
    make_client, open_portal, receiver
):
    client = await make_client(workers=True, retry_schedule=(0.05, 0.05))
    world = await make_world(client)
    receiver.behaviour = failing
    reg = await world.register(receiver.url, description="Orders hook")
    portal = await open_portal(client)
    page = portal.page
    await portal.open("/portal/")
    await portal.sign_in(world.partner_key)
    row = portal.registration_row(reg["id"])
    await expect(row).to_have_attribute("data-status", "Active")
    before = await scrape_metrics(client)

    # Three failed attempts (the first and two retries) exhaust the schedule: Suspended. The page
    # is not reloaded; its polling shows the new status and the failure count.
    await world.emit(["core/v1/dda/accounts/2001231231", "core/v1/dda/accounts/2001231232"])
    await expect(row).to_have_attribute("data-status", "Suspended", timeout=UI_TIMEOUT_MS)
    await expect(row.locator(".badge.status-Suspended")).to_have_text("Suspended")
    await expect(row.locator("td.num")).to_have_text("3")
    await expect(row.locator("time")).to_have_count(1)  # a last failure, no last success yet
    assert len(receiver.received) == 3
    await portal.screenshot("portal-suspended.png")

    receiver.behaviour = None  # the partner fixed the endpoint
    await row.locator("[data-action=restart]").click()
    await expect(page.locator("#restart-dialog")).to_be_visible()
    await page.check("#restart-resend-failed")
    await page.click("#restart-ok")
    await expect(page.locator("#restart-dialog")).to_be_hidden()
    await expect(page.locator("#status")).to_contain_text("Registration restarting")
    # Restarting -> the Failed event, re-queued, gets one attempt -> it succeeds -> Active.
    await expect(row).to_have_attribute("data-status", "Active", timeout=UI_TIMEOUT_MS)
    await expect(row.locator(".badge.status-Active")).to_have_text("Active")
    await expect(row.locator("td.num")).to_have_text("0")
    await expect(row.locator("[data-action=pause]")).to_be_visible()
    await expect(row.locator("[data-action=restart]")).to_have_count(0)
    await expect(page.locator("#alert")).to_be_empty()
    await portal.screenshot("portal.png")

    assert len(receiver.received) == 4
    assert receiver.received[-1].json()["resources"] == [
        "core/v1/dda/accounts/2001231231",
        "core/v1/dda/accounts/2001231232",
    ]
    after = await scrape_metrics(client)
    assert transitions(after, "Suspended") - transitions(before, "Suspended") == 1
    assert transitions(after, "Restarting") - transitions(before, "Restarting") == 1
    assert transitions(after, "Active") - transitions(before, "Active") == 1
    assert after['broker_registrations{status="Active"}'] == 1
    assert after['broker_registrations{status="Suspended"}'] == 0
    portal.assert_healthy()


async def test_event_detail_shows_every_attempt_and_resends(make_client, open_portal, receiver):
    client = await make_client(workers=True, retry_schedule=(0.05, 0.05))
    world = await make_world(client)

    async def fail_twice(request: web.Request, n: int) -> web.StreamResponse:
        if n <= 2:
            return web.Response(status=503, text="receiver down: disk full")
        return web.Response(status=200, text="ok, stored")

    receiver.behaviour = fail_twice
    reg = await world.register(receiver.url)
    await world.emit(["core/v1/dda/accounts/1", "core/v1/dda/accounts/2", "core/v1/dda/accounts/1"])
    event_id = await _settled_event_id(client, world.partner, "Success")

    portal = await open_portal(client)
    page = portal.page
    await portal.open()
    await portal.sign_in(world.partner_key)
    await expect(portal.registration_row(reg["id"])).to_be_visible()
    await page.click("#nav-events")
    event_row = page.locator(f'#events-body tr[data-event-id="{event_id}"]')
    await expect(event_row).to_contain_text("Core.Account.Opened")
    await expect(event_row.locator(".badge.event-Success")).to_be_visible()
    await event_row.locator("td").first.click()  # the whole row opens the detail

    await expect(page.locator("#event-detail")).to_be_visible()
    assert page.url.endswith(f"#/events/{event_id}")
    await expect(page.locator('#event-fields dd[data-field="id"]')).to_have_text(event_id)
    await expect(page.locator('#event-fields dd[data-field="status"]')).to_have_text("Success")
    await expect(page.locator("#event-resources li")).to_have_text(
        ["core/v1/dda/accounts/1", "core/v1/dda/accounts/2"]
    )
    attempts = page.locator("#attempts-body tr[data-attempt-number]")
    await expect(attempts).to_have_count(3)
    first = page.locator('#attempts-body tr[data-attempt-number="1"] td')
    await expect(first.nth(3)).to_have_text("503")
    await expect(first.nth(4)).to_have_text("HTTP 503")
    await expect(first.nth(5)).to_have_text("receiver down: disk full")
    await expect(first.nth(2)).to_have_text(re.compile(r"^\d+ ms$"))
    third = page.locator('#attempts-body tr[data-attempt-number="3"] td')
    await expect(third.nth(3)).to_have_text("200")
    await expect(third.nth(4)).to_have_text("—")
    await expect(third.nth(5)).to_have_text("ok, stored")
    await portal.screenshot("portal-event.png")

    await page.click("#event-resend")
    await expect(page.locator("#status")).to_have_text("Event queued for redelivery.")
    # The detail polls while the event is Pending and shows the new attempt when it lands.
    await expect(attempts).to_have_count(4, timeout=UI_TIMEOUT_MS)
    await expect(page.locator('#event-fields dd[data-field="status"]')).to_have_text(
        "Success", timeout=UI_TIMEOUT_MS
    )
    fourth = page.locator('#attempts-body tr[data-attempt-number="4"] td')
    await expect(fourth.nth(3)).to_have_text("200")
    assert len(receiver.received) == 4
    assert receiver.received[-1].json()["id"] == event_id
    portal.assert_healthy()


async def test_registrations_are_managed_from_the_page(make_client, open_portal, receiver):
    client = await make_client()
    world = await make_world(client)
    portal = await open_portal(client)
    page = portal.page
    await portal.open()
    await portal.sign_in(world.partner_key)
    await expect(page.locator("#registrations-empty")).to_be_visible()

    # Create: invalid input shows the problem's field errors and creates nothing.
    await page.fill("#create-url", receiver.url)
    await page.fill("#create-event-types", "No.Such.Type")
    await page.click("#create-submit")
    await expect(page.locator("#alert")).to_contain_text("eventTypes[0]")
    await page.fill("#create-event-types", "Core.Account.*")
    await page.fill("#create-description", "Accounts")
    await page.click("#create-submit")
    await expect(page.locator("#secret-panel")).to_be_visible()
    secret = await page.input_value("#secret-value")
    assert secret.startswith("whsec_")
    [reg] = await _registrations(client, world.partner)
    assert reg["eventTypes"] == ["Core.Account.*"]
    row = portal.registration_row(reg["id"])
    await expect(row).to_contain_text("Accounts")
    await page.click("#secret-dismiss")
    await expect(page.locator("#secret-panel")).to_be_hidden()

    # Edit.
    await row.locator("[data-action=edit]").click()
    await page.fill("#edit-description", "Accounts (v2)")
    await page.click("#edit-save")
    await expect(page.locator("#edit-dialog")).to_be_hidden()
    await expect(row).to_contain_text("Accounts (v2)")
    assert (await _registrations(client, world.partner))[0]["description"] == "Accounts (v2)"

    # Pause and unpause.
    await row.locator("[data-action=pause]").click()
    await expect(row).to_have_attribute("data-status", "Paused")
    await expect(row.locator(".badge.status-Paused")).to_be_visible()
    await row.locator("[data-action=unpause]").click()
    await expect(row).to_have_attribute("data-status", "Active")

    # Test: one synchronous signed test.event delivery, with its attempt shown.
    await row.locator("[data-action=test]").click()
    await expect(page.locator("#test-result")).to_have_attribute("data-success", "true")
    await expect(page.locator("#test-result-attempt")).to_contain_text("200")
    assert receiver.received[-1].json()["eventName"] == "test.event"
    await page.click("#test-result-dismiss")

    # Rotate: a new secret, shown once.
    await row.locator("[data-action=rotate-secret]").click()
    await expect(page.locator("#secret-panel")).to_be_visible()
    rotated = await page.input_value("#secret-value")
    assert rotated.startswith("whsec_") and rotated != secret
    await page.click("#secret-dismiss")

    # Delete, after confirming; cancelling first changes nothing.
    await row.locator("[data-action=delete]").click()
    await page.click("#confirm-cancel")
    await expect(row).to_be_visible()
    await row.locator("[data-action=delete]").click()
    await page.click("#confirm-ok")
    await expect(row).to_have_count(0)
    await expect(page.locator("#registrations-empty")).to_be_visible()
    assert await _registrations(client, world.partner) == []
    portal.assert_healthy()


async def test_event_history_filters_and_pages(make_client, open_portal, receiver):
    # 53 test deliveries at once: above the default quotas (1/s, burst 5; partner burst 20).
    client = await make_client(test_delivery_registration_burst=60, test_delivery_partner_burst=60)
    world = await make_world(client)
    reg = await world.register(receiver.url)
    # 52 recorded test deliveries: more than one page (50) of history.
    for _ in range(52):
        resp = await client.post(
            f"/webhooks/v1/registrations/{reg['id']}/test", headers=world.partner
        )
        assert resp.status == 200
    receiver.behaviour = failing
    resp = await client.post(f"/webhooks/v1/registrations/{reg['id']}/test", headers=world.partner)
    assert (await resp.json())["success"] is False

    portal = await open_portal(client)
    page = portal.page
    await portal.open()
    await portal.sign_in(world.partner_key)
    await page.click("#nav-events")
    rows = page.locator("#events-body tr[data-event-id]")
    await expect(rows).to_have_count(50)
    await expect(page.locator("#events-page")).to_have_text("Page 1")
    await expect(page.locator("#events-first")).to_be_disabled()
    await page.click("#events-next")
    await expect(page.locator("#events-page")).to_have_text("Page 2")
    await expect(rows).to_have_count(3)
    await expect(page.locator("#events-next")).to_be_disabled()
    await page.click("#events-first")
    await expect(rows).to_have_count(50)

    await page.select_option("#filter-status", "Failed")
    await page.click("#filter-apply")
    await expect(rows).to_have_count(1)
    await expect(rows.locator(".badge.event-Failed")).to_be_visible()
    assert "status=Failed" in page.url
    await page.select_option("#filter-status", "Pending")
    await page.click("#filter-apply")
    await expect(page.locator("#events-empty")).to_be_visible()
    await page.click("#filter-clear")
    await expect(rows).to_have_count(50)
    portal.assert_healthy()


async def _registrations(client: Any, headers: dict[str, str]) -> list[dict[str, Any]]:
    resp = await client.get("/webhooks/v1/registrations", headers=headers)
    data: list[dict[str, Any]] = (await resp.json())["data"]
    return data


async def _settled_event_id(client: Any, headers: dict[str, str], status: str) -> str:
    found: list[str] = []

    async def settled() -> bool:
        resp = await client.get(f"/webhooks/v1/events?status={status}", headers=headers)
        found[:] = [e["id"] for e in (await resp.json())["data"]]
        return bool(found)

    await wait_until(settled, timeout=15)
    return found[0]
