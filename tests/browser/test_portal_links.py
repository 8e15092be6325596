"""Portal links in headless Chromium: a link signs the portal in, a read-only link's session
changes nothing, a revoked link signs nobody in (and signs out a portal that used it)."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import expect

from tests.conftest import World, admin_headers, make_world

pytestmark = pytest.mark.browser


async def portal_link(world: World, **body: Any) -> dict[str, Any]:
    resp = await world.client.post(
        f"/admin/v1/partners/{world.partner_id}/portal-links", json=body, headers=admin_headers()
    )
    assert resp.status == 201, await resp.text()
    link: dict[str, Any] = await resp.json()
    return link


async def revoke_links(world: World) -> None:
    resp = await world.client.delete(
        f"/admin/v1/partners/{world.partner_id}/portal-links", headers=admin_headers()
    )
    assert resp.status == 204


async def test_opening_a_link_signs_the_portal_in_and_takes_the_token_out_of_the_url(
    make_client, open_portal, receiver
):
    client = await make_client()
    world = await make_world(client)
    reg = await world.register(receiver.url, description="Ledger hook")
    link = await portal_link(world, ttlSeconds=900)
    portal = await open_portal(client)
    page = portal.page

    response = await page.goto(link["url"])
    assert response is not None
    headers = await response.all_headers()
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"

    row = portal.registration_row(reg["id"])
    await expect(row).to_have_attribute("data-status", "Active")
    await expect(row).to_contain_text("Ledger hook")
    await expect(page.locator("#signin")).to_be_hidden()
    await expect(page.locator("#status")).to_have_text("Signed in by link.")
    await expect(page.locator("#session-note")).to_contain_text("Signed in by link")
    # The token left the address bar (and history) at once; it lives in this tab only.
    assert link["token"] not in page.url
    assert page.url.endswith("/portal/#/registrations")
    assert await page.evaluate("sessionStorage.getItem('broker.partnerKey')") == link["token"]
    assert await page.evaluate("localStorage.length") == 0
    # Not read-only: the write controls are there and work.
    await expect(page.locator("#create-section")).to_be_visible()
    await row.locator("[data-action=pause]").click()
    await expect(row).to_have_attribute("data-status", "Paused")
    await page.reload()  # the same tab stays signed in
    await expect(row).to_have_attribute("data-status", "Paused")
    portal.assert_healthy()


async def test_a_read_only_session_shows_no_write_control_and_writes_are_refused(
    make_client, open_portal, receiver, db
):
    client = await make_client()
    world = await make_world(client)
    reg = await world.register(receiver.url)
    link = await portal_link(world, readOnly=True)
    portal = await open_portal(client)
    page = portal.page
    await page.goto(link["url"])

    row = portal.registration_row(reg["id"])
    await expect(row).to_have_attribute("data-status", "Active")
    await expect(page.locator("#status")).to_have_text("Signed in by link (read-only).")
    await expect(page.locator("#session-note")).to_contain_text("Read-only session")
    for action in ("edit", "pause", "test", "rotate-secret", "delete"):
        await expect(row.locator(f"[data-action={action}]")).to_have_count(0)
    await expect(row.locator("[data-action=events]")).to_be_visible()
    await expect(page.locator("#create-section")).to_be_hidden()
    await page.reload()  # still read-only after a reload (the session is asked again)
    await expect(row).to_have_attribute("data-status", "Active")
    await expect(row.locator("[data-action=pause]")).to_have_count(0)
    await expect(page.locator("#create-section")).to_be_hidden()

    # Whatever the page shows, the server refuses a write with this token.
    status = await page.evaluate(
        """async ([path, token]) => (await fetch(path, {method: "POST",
               headers: {Authorization: `Bearer ${token}`}})).status""",
        [f"/webhooks/v1/registrations/{reg['id']}/pause", link["token"]],
    )
    assert status == 403
    assert await db.fetchval("SELECT status FROM registrations") == "Active"
    portal.assert_healthy()


async def test_a_revoked_link_signs_nobody_in_and_signs_out_an_open_portal(
    make_client, open_portal, receiver
):
    client = await make_client()
    world = await make_world(client)
    reg = await world.register(receiver.url)
    used = await portal_link(world)
    portal = await open_portal(client)
    page = portal.page
    await page.goto(used["url"])
    row = portal.registration_row(reg["id"])
    await expect(row).to_have_attribute("data-status", "Active")

    unused = await portal_link(world)
    await revoke_links(world)
    # The open portal's next poll is refused (401): it signs out and forgets the token.
    await expect(page.locator("#signin")).to_be_visible()
    await expect(page.locator("#alert")).to_contain_text("no longer accepted")
    assert await page.evaluate("sessionStorage.getItem('broker.partnerKey')") is None

    # A revoked link opened later signs nothing in.
    other = await open_portal(client)
    await other.page.goto(unused["url"])
    await expect(other.page.locator("#signin")).to_be_visible()
    await expect(other.page.locator("#alert")).to_contain_text("expired or was revoked")
    await expect(other.page.locator("#registrations")).to_be_hidden()
    assert await other.page.evaluate("sessionStorage.getItem('broker.partnerKey')") is None
    assert unused["token"] not in other.page.url
    # The partner's own key still signs in there.
    await other.sign_in(world.partner_key)
    await expect(other.registration_row(reg["id"])).to_have_attribute("data-status", "Active")
    await expect(other.page.locator("#session-note")).to_be_hidden()
