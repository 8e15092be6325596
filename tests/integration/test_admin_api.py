"""Admin API and the authentication rules, over HTTP, with rows checked in PostgreSQL."""

from __future__ import annotations

import hashlib

from broker.domain.operational import EVENT_TYPES
from tests.conftest import admin_headers, bearer, make_world


async def test_create_partner_returns_key_once_and_stores_only_its_hash(client, db):
    resp = await client.post("/admin/v1/partners", json={"name": "Acme"}, headers=admin_headers())
    assert resp.status == 201
    body = await resp.json()
    assert set(body) == {"id", "name", "apiKey", "createdAt"}
    assert body["createdAt"].endswith("Z")
    row = await db.fetchrow("SELECT key_hash FROM api_keys WHERE partner_id = $1::uuid", body["id"])
    assert row["key_hash"] == hashlib.sha256(body["apiKey"].encode()).digest()
    stored = await db.fetch("SELECT * FROM api_keys")
    assert all(body["apiKey"] not in str(dict(r)) for r in stored)
    listed = await (await client.get("/admin/v1/partners", headers=admin_headers())).json()
    assert [p["id"] for p in listed["data"]] == [body["id"]]
    assert "apiKey" not in listed["data"][0]


async def test_missing_unknown_and_wrong_kind_keys(client):
    world = await make_world(client)
    resp = await client.get("/admin/v1/partners")
    assert resp.status == 401
    assert resp.content_type == "application/problem+json"
    problem = await resp.json()
    assert {"title", "status", "detail"} <= set(problem)
    assert (await client.get("/admin/v1/partners", headers=bearer("nope"))).status == 401
    assert (await client.get("/admin/v1/partners", headers=world.partner)).status == 403
    assert (await client.get("/webhooks/v1/registrations", headers=admin_headers())).status == 403
    assert (await client.get("/webhooks/v1/registrations", headers=world.producer)).status == 403
    resp = await client.post(
        "/internal/v1/resource-events", json={"events": []}, headers=world.partner
    )
    assert resp.status == 403


async def test_additional_partner_key_and_revocation_take_effect_at_once(client):
    world = await make_world(client)
    resp = await client.post(f"/admin/v1/partners/{world.partner_id}/keys", headers=admin_headers())
    assert resp.status == 201
    key = await resp.json()
    assert (
        await client.get("/webhooks/v1/registrations", headers=bearer(key["apiKey"]))
    ).status == 200
    assert (
        await client.delete(f"/admin/v1/keys/{key['id']}", headers=admin_headers())
    ).status == 204
    assert (
        await client.get("/webhooks/v1/registrations", headers=bearer(key["apiKey"]))
    ).status == 401
    # the partner's first key is untouched
    assert (await client.get("/webhooks/v1/registrations", headers=world.partner)).status == 200


async def test_unknown_partner_and_key_are_404(client):
    missing = "00000000-0000-0000-0000-000000000000"
    resp = await client.post(f"/admin/v1/partners/{missing}/keys", headers=admin_headers())
    assert resp.status == 404
    assert (await client.delete(f"/admin/v1/keys/{missing}", headers=admin_headers())).status == 404
    assert (await client.delete("/admin/v1/keys/not-a-uuid", headers=admin_headers())).status == 404


async def test_event_types_put_creates_then_updates(client, db):
    url = "/admin/v1/event-types/Core.Account.Opened"
    resp = await client.put(url, json={"description": "opened"}, headers=admin_headers())
    assert resp.status == 201
    resp = await client.put(
        url, json={"description": "an account was opened"}, headers=admin_headers()
    )
    assert resp.status == 200
    assert (await resp.json())["description"] == "an account was opened"
    listed = await (await client.get("/admin/v1/event-types", headers=admin_headers())).json()
    names = [t["name"] for t in listed["data"]]
    assert "test.event" in names and "Core.Account.Opened" in names


async def test_event_type_name_is_validated(client, db):
    for bad in ("Core", "1Core.Account", "Core..Account", "Core.Account.", "Core.Acc-ount"):
        resp = await client.put(f"/admin/v1/event-types/{bad}", json={}, headers=admin_headers())
        assert resp.status == 400, bad
        assert resp.content_type == "application/problem+json"
    assert await db.fetchval("SELECT count(*) FROM event_types") == 1 + len(
        EVENT_TYPES
    )  # built-ins


async def test_bad_admin_bodies_are_problems_and_store_nothing(client, db):
    cases = [
        (b"{", "application/json"),
        (b"[]", "application/json"),
        (b'{"name": ""}', "application/json"),
        (b'{"name": 5}', "application/json"),
        (b'{"name": "x", "extra": 1}', "application/json"),
        (b"\xff\xfe", "application/json"),
        (b'{"name": "x"}', "text/plain"),
    ]
    for body, ctype in cases:
        resp = await client.post(
            "/admin/v1/partners", data=body, headers={**admin_headers(), "Content-Type": ctype}
        )
        assert resp.status in (400, 415), (body, resp.status)
        assert resp.content_type == "application/problem+json"
    assert await db.fetchval("SELECT count(*) FROM partners") == 0


async def test_service_endpoints(client):
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200
    resp = await client.get("/nope")
    assert resp.status == 404 and resp.content_type == "application/problem+json"
    resp = await client.delete("/healthz")
    assert resp.status == 405 and resp.content_type == "application/problem+json"
