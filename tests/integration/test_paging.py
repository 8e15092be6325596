"""Pages of registrations and partners, and the per-partner registration quota."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import World, admin_headers, make_world

REGS = "/webhooks/v1/registrations"
PARTNERS = "/admin/v1/partners"
PUBLIC_URL = "https://93.184.216.34/hook"


async def create(world: World, n: int = 0) -> Any:
    resp = await world.client.post(
        REGS,
        json={"url": PUBLIC_URL, "eventTypes": [world.event_name], "description": f"r{n}"},
        headers=world.partner,
    )
    return resp


async def walk(client: Any, path: str, headers: dict[str, str], limit: int) -> list[list[str]]:
    """Every page's ids, following nextCursor to the end."""
    pages: list[list[str]] = []
    params: dict[str, str] = {"limit": str(limit)}
    while True:
        resp = await client.get(path, params=params, headers=headers)
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        pages.append([item["id"] for item in body["data"]])
        if body["nextCursor"] is None:
            return pages
        params = {"limit": str(limit), "cursor": body["nextCursor"]}


async def test_registrations_page_in_creation_order_to_the_end(world):
    made = [(await (await create(world, i)).json())["id"] for i in range(5)]
    pages = await walk(world.client, REGS, world.partner, 2)
    assert pages == [made[0:2], made[2:4], made[4:5]]
    # default: everything on one page, with nextCursor null
    body = await (await world.client.get(REGS, headers=world.partner)).json()
    assert [r["id"] for r in body["data"]] == made and body["nextCursor"] is None


async def test_a_cursor_is_stable_while_rows_come_and_go(world):
    made = [(await (await create(world, i)).json())["id"] for i in range(4)]
    first = await (
        await world.client.get(REGS, params={"limit": "2"}, headers=world.partner)
    ).json()
    assert [r["id"] for r in first["data"]] == made[:2]
    # between the pages: one of the first page is deleted and a new one is created
    assert (await world.client.delete(f"{REGS}/{made[0]}", headers=world.partner)).status == 204
    newest = (await (await create(world, 9)).json())["id"]
    rest = await world.client.get(
        REGS, params={"limit": "10", "cursor": first["nextCursor"]}, headers=world.partner
    )
    assert [r["id"] for r in (await rest.json())["data"]] == [*made[2:], newest]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "²"}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": ""}, "cursor"),
        ({"offset": "3"}, "offset"),
    ],
)
async def test_bad_paging_parameters_are_400_problems_naming_them(world, params, field):
    for path, headers in ((REGS, world.partner), (PARTNERS, admin_headers())):
        resp = await world.client.get(path, params=params, headers=headers)
        assert resp.status == 400, await resp.text()
        assert resp.content_type == "application/problem+json"
        assert [e["field"] for e in (await resp.json())["errors"]] == [field]


async def test_limit_bounds_are_accepted(world):
    for i in range(3):
        await create(world, i)
    for limit, size in (("1", 1), ("500", 3)):
        resp = await world.client.get(REGS, params={"limit": limit}, headers=world.partner)
        assert len((await resp.json())["data"]) == size


async def test_partners_page_to_the_end(client):
    made = []
    for i in range(5):
        resp = await client.post(PARTNERS, json={"name": f"p{i}"}, headers=admin_headers())
        made.append((await resp.json())["id"])
    pages = await walk(client, PARTNERS, admin_headers(), 2)
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [i for page in pages for i in page] == made


async def test_registration_quota_is_429_naming_the_limit(make_client, db):
    client = await make_client(max_registrations_per_partner=3)
    world = await make_world(client)
    made = [await create(world, i) for i in range(3)]
    assert [r.status for r in made] == [201, 201, 201]
    resp = await create(world, 3)
    assert resp.status == 429, await resp.text()
    assert resp.content_type == "application/problem+json"
    problem = await resp.json()
    assert "BROKER_MAX_REGISTRATIONS_PER_PARTNER" in problem["detail"]
    assert "3" in problem["detail"]
    assert await db.fetchval("SELECT count(*) FROM registrations") == 3
    # Deleted ones do not count
    first = (await made[0].json())["id"]
    assert (await client.delete(f"{REGS}/{first}", headers=world.partner)).status == 204
    assert (await create(world, 4)).status == 201
    # another partner has its own quota
    other = await make_world(client)
    assert (await create(other, 0)).status == 201


async def test_concurrent_creates_cannot_overshoot_the_quota(make_client, db):
    client = await make_client(max_registrations_per_partner=4)
    world = await make_world(client)
    answers = await asyncio.gather(*(create(world, i) for i in range(12)))
    assert sorted(r.status for r in answers) == [201] * 4 + [429] * 8
    assert await db.fetchval("SELECT count(*) FROM registrations") == 4
