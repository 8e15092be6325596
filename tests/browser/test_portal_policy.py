"""The portal shows and edits each registration's delivery policy; its Test button signs with the
registration's own scheme and headers. Headless Chromium against a real broker and receiver."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest
from playwright.async_api import expect

from tests.conftest import make_world

pytestmark = pytest.mark.browser

SECRET = "optional-shared-secret"


async def registration(client: Any, partner: dict[str, str], reg_id: str) -> dict[str, Any]:
    resp = await client.get(f"/webhooks/v1/registrations/{reg_id}", headers=partner)
    assert resp.status == 200
    body: dict[str, Any] = await resp.json()
    return body


async def test_policy_is_created_shown_edited_and_used_by_the_test_button(
    make_client, open_portal, receiver
):
    client = await make_client()
    world = await make_world(client)
    portal = await open_portal(client)
    page = portal.page
    await portal.open()
    await portal.sign_in(world.partner_key)
    await expect(page.locator("#registrations-empty")).to_be_visible()

    # Create with the messaging vendor's policy. A bad value first: the field is named.
    await page.fill("#create-url", receiver.url)
    await page.fill("#create-event-types", "Core.Account.*")
    await page.fill("#create-secret", SECRET)
    await page.fill("#create-policy-timeoutSeconds", "45")
    await page.fill("#create-policy-retrySchedule", "30, 300, 1800, 7200")
    await page.select_option("#create-policy-scheme", "hmac-sha256-hex")
    await expect(page.locator("#create-policy-hmac")).to_be_visible()
    await page.fill("#create-policy-header", "X-Aerostic-Signature")
    await page.fill("#create-policy-headers", "X-Tenant: acme")
    await page.click("#create-submit")
    await expect(page.locator("#alert")).to_contain_text("delivery.timeoutSeconds")
    resp = await client.get("/webhooks/v1/registrations", headers=world.partner)
    assert (await resp.json())["data"] == []
    await page.fill("#create-policy-timeoutSeconds", "5")
    await page.click("#create-submit")
    await expect(page.locator("#secret-panel")).to_be_visible()
    assert await page.input_value("#secret-value") == SECRET
    await page.click("#secret-dismiss")

    resp = await client.get("/webhooks/v1/registrations", headers=world.partner)
    [reg] = (await resp.json())["data"]
    assert reg["delivery"]["timeoutSeconds"] == 5
    assert reg["delivery"]["retrySchedule"] == [30, 300, 1800, 7200]
    assert reg["delivery"]["ordering"] is None
    assert reg["signature"] == {
        "scheme": "hmac-sha256-hex",
        "header": "X-Aerostic-Signature",
        "prefix": None,
        "timestampHeader": None,
    }
    assert reg["headers"] == {"X-Tenant": "acme"}
    row = portal.registration_row(reg["id"])
    summary = row.locator(".policy-summary")
    await expect(summary).to_contain_text("timeout 5 s")
    await expect(summary).to_contain_text("retries 30/300/1800/7200 s")
    await expect(summary).to_contain_text("X-Aerostic-Signature: sha256=<hex>")
    await expect(summary).to_contain_text("X-Tenant")

    # Test: signed the vendor's way, with the extra header.
    await row.locator("[data-action=test]").click()
    await expect(page.locator("#test-result")).to_have_attribute("data-success", "true")
    got = receiver.received[-1]
    digest = hmac.new(SECRET.encode(), got.body, hashlib.sha256).hexdigest()
    assert got.headers["X-Aerostic-Signature"] == f"sha256={digest}"
    assert got.headers["X-Tenant"] == "acme"
    await page.click("#test-result-dismiss")

    # Edit: the dialog shows the stored policy; change some fields, clear others.
    await row.locator("[data-action=edit]").click()
    await expect(page.locator("#edit-policy-timeoutSeconds")).to_have_value("5")
    await expect(page.locator("#edit-policy-header")).to_have_value("X-Aerostic-Signature")
    await expect(page.locator("#edit-policy-headers")).to_have_value("X-Tenant: acme")
    await page.fill("#edit-policy-timeoutSeconds", "")
    await page.fill("#edit-policy-retrySchedule", "none")
    await page.fill("#edit-policy-suspendAfterConsecutiveFailures", "5")
    await page.fill("#edit-policy-rateLimitPerSecond", "50")
    await page.select_option("#edit-policy-ordering", "fifo")
    await page.fill("#edit-policy-headers", "X-Region: eu")
    await page.click("#edit-save")
    await expect(page.locator("#edit-dialog")).to_be_hidden()
    after = await registration(client, world.partner, reg["id"])
    assert after["delivery"] == {
        "timeoutSeconds": None,
        "retrySchedule": [],
        "suspendAfterConsecutiveFailures": 5,
        "rateLimitPerSecond": 50,
        "ordering": "fifo",
    }
    assert after["signature"] == reg["signature"]
    assert after["headers"] == {"X-Region": "eu"}
    await expect(summary).to_contain_text("single attempt")
    await expect(summary).to_contain_text("FIFO")
    await expect(summary).to_contain_text("50/s")
    await expect(summary).not_to_contain_text("timeout")
    portal.assert_healthy()
