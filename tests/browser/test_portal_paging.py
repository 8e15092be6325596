"""The portal follows the registration list's pages: a partner with more than one page of
registrations sees all of them."""

from __future__ import annotations

import asyncio

import pytest
from playwright.async_api import expect

from tests.conftest import make_world

pytestmark = pytest.mark.browser

PAGE_MAX = 500


async def test_every_page_of_registrations_is_shown(make_client, open_portal):
    client = await make_client(max_registrations_per_partner=PAGE_MAX + 5)
    world = await make_world(client)
    made: list[str] = []
    for start in range(0, PAGE_MAX + 2, 50):
        batch = await asyncio.gather(
            *(
                world.register("https://93.184.216.34/hook", description=f"r{i}")
                for i in range(start, min(start + 50, PAGE_MAX + 2))
            )
        )
        made.extend(reg["id"] for reg in batch)
    portal = await open_portal(client)
    await portal.open("/portal/")
    await portal.sign_in(world.partner_key)
    await expect(portal.registration_row(made[-1])).to_be_visible()
    await expect(portal.page.locator("#registrations-body tr[data-registration-id]")).to_have_count(
        len(made)
    )
    portal.assert_healthy()
