"""Isolation: a partner sees only what is its own, and keys are what they claim to be.

For every partner endpoint another partner's ids answer 404 exactly like ids that do not exist,
and change nothing; lists never leak; a key of the wrong kind is 403; a revoked key is 401 at
once, in every process; keys are stored hashed and compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from typing import Any

from tests.conftest import admin_headers, bearer, make_world, wait_until

PARTNER_CALLS = [
    ("GET", "/webhooks/v1/registrations/{reg}", None),
    ("PATCH", "/webhooks/v1/registrations/{reg}", {"description": "mine now"}),
    ("PATCH", "/webhooks/v1/registrations/{reg}", {"url": "http://127.0.0.1:1/stolen"}),
    ("POST", "/webhooks/v1/registrations/{reg}/restart", {"resendFailed": True}),
    ("POST", "/webhooks/v1/registrations/{reg}/pause", None),
    ("POST", "/webhooks/v1/registrations/{reg}/unpause", None),
    ("POST", "/webhooks/v1/registrations/{reg}/rotate-secret", {"graceSeconds": 0}),
    ("POST", "/webhooks/v1/registrations/{reg}/test", None),
    ("DELETE", "/webhooks/v1/registrations/{reg}", None),
    ("GET", "/webhooks/v1/events/{event}", None),
    ("GET", "/webhooks/v1/events/{event}/attempts", None),
    ("POST", "/webhooks/v1/events/{event}/resend", None),
]


def _strip(problem: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in problem.items() if k != "instance"}


async def test_another_partners_ids_are_404_and_change_nothing(make_client, receiver, db):
    client = await make_client(workers=True)
    owner = await make_world(client)
    intruder = await make_world(client)
    reg = await owner.register(receiver.url)
    await intruder.register(receiver.url)
    await owner.emit(["core/v1/dda/accounts/1"])
    [delivery] = await receiver.wait_for(1)
    event_id = delivery.json()["id"]

    async def delivered() -> bool:
        resp = await client.get(f"/webhooks/v1/events/{event_id}", headers=owner.partner)
        return (await resp.json())["status"] == "Success"

    await wait_until(delivered)
    before_reg = await db.fetchrow("SELECT * FROM registrations WHERE id = $1::uuid", reg["id"])
    before_event = await db.fetchrow("SELECT * FROM events WHERE id = $1::uuid", event_id)

    for method, template, body in PARTNER_CALLS:
        theirs = template.format(reg=reg["id"], event=event_id)
        nobodys = template.format(reg=uuid.uuid4(), event=uuid.uuid4())
        answers = []
        for path in (theirs, nobodys):
            resp = await client.request(method, path, json=body, headers=intruder.partner)
            assert resp.status == 404, (method, path, resp.status, await resp.text())
            assert resp.content_type == "application/problem+json"
            answers.append(_strip(await resp.json()))
        # Exactly as if it did not exist: same status, same words.
        assert answers[0] == answers[1], (method, template)

    after_reg = await db.fetchrow("SELECT * FROM registrations WHERE id = $1::uuid", reg["id"])
    after_event = await db.fetchrow("SELECT * FROM events WHERE id = $1::uuid", event_id)
    assert dict(after_reg) == dict(before_reg)
    assert dict(after_event) == dict(before_event)
    assert (
        await db.fetchval("SELECT count(*) FROM attempts WHERE event_id = $1::uuid", event_id) == 1
    )
    assert len(receiver.received) == 1  # no test delivery, no resend reached the owner's URL
    # The owner still sees everything as it was.
    resp = await client.get(f"/webhooks/v1/registrations/{reg['id']}", headers=owner.partner)
    assert resp.status == 200 and (await resp.json())["status"] == "Active"


async def test_lists_never_leak(make_client, receiver):
    client = await make_client(workers=True)
    owner = await make_world(client)
    intruder = await make_world(client)
    owner_reg = await owner.register(receiver.url, description="owner")
    intruder_reg = await intruder.register(receiver.url, description="intruder")
    await owner.emit(["core/v1/dda/accounts/1"])
    await intruder.emit(["core/v1/dda/accounts/2"])
    await receiver.wait_for(2)

    resp = await client.get("/webhooks/v1/registrations", headers=intruder.partner)
    assert [r["id"] for r in (await resp.json())["data"]] == [intruder_reg["id"]]
    queries: list[dict[str, str]] = [
        {},
        {"registrationId": owner_reg["id"]},
        {"eventName": owner.event_name},
        {"status": "Pending"},
        {"status": "Success"},
        {"createdAfter": "2000-01-01T00:00:00Z"},
        {"limit": "500"},
    ]
    for params in queries:
        resp = await client.get("/webhooks/v1/events", params=params, headers=intruder.partner)
        assert resp.status == 200, await resp.text()
        page = await resp.json()
        assert all(e["partnerId"] == intruder.partner_id for e in page["data"]), params
        assert all(e["registrationId"] == intruder_reg["id"] for e in page["data"]), params
        if "registrationId" in params:
            assert page["data"] == [] and page["nextCursor"] is None
    # A cursor is only a position: the owner's cursor used by the intruder still shows only
    # the intruder's own events.
    await owner.emit(["core/v1/dda/accounts/3"])
    await receiver.wait_for(3)
    resp = await client.get("/webhooks/v1/events", params={"limit": "1"}, headers=owner.partner)
    cursor = (await resp.json())["nextCursor"]
    assert cursor
    resp = await client.get(
        "/webhooks/v1/events", params={"cursor": cursor}, headers=intruder.partner
    )
    assert all(e["partnerId"] == intruder.partner_id for e in (await resp.json())["data"])


async def test_wrong_key_kind_is_403_everywhere(client):
    world = await make_world(client)
    keys = {"admin": admin_headers(), "producer": world.producer, "partner": world.partner}
    probes = {
        "admin": [
            ("GET", "/admin/v1/partners"),
            ("POST", "/admin/v1/producer-keys"),
            ("GET", "/admin/v1/event-types"),
        ],
        "producer": [("POST", "/internal/v1/resource-events")],
        "partner": [
            ("GET", "/webhooks/v1/registrations"),
            ("GET", "/webhooks/v1/events"),
            ("GET", "/webhooks/v1/event-types"),
            ("GET", f"/webhooks/v1/registrations/{uuid.uuid4()}"),
        ],
    }
    for needed, calls in probes.items():
        for kind, headers in keys.items():
            for method, path in calls:
                resp = await client.request(method, path, json={}, headers=headers)
                if kind == needed:
                    assert resp.status != 403, (kind, path)
                else:
                    assert resp.status == 403, (kind, method, path, resp.status)
                    assert resp.content_type == "application/problem+json"
    for headers in (
        {},
        bearer("bk_partner_guess"),
        {"Authorization": "Basic Zm9vOmJhcg=="},
        {"Authorization": "Bearer"},
        bearer("x" * 600),
    ):
        for path in ("/admin/v1/partners", "/webhooks/v1/registrations"):
            resp = await client.get(path, headers=headers)
            assert resp.status == 401, (headers, path)
            assert "WWW-Authenticate" in resp.headers


async def test_revoked_keys_are_refused_at_once_in_every_process(make_client):
    first = await make_client()
    second = await make_client()  # another process on the same database
    world = await make_world(first)
    resp = await first.post(f"/admin/v1/partners/{world.partner_id}/keys", headers=admin_headers())
    partner_key = await resp.json()
    resp = await first.post(
        "/admin/v1/producer-keys", json={"name": "other"}, headers=admin_headers()
    )
    producer_key = await resp.json()
    ingest = {
        "events": [
            {
                "partnerId": world.partner_id,
                "eventName": world.event_name,
                "resource": "core/v1/x/1",
            }
        ]
    }
    for client in (first, second):
        resp = await client.get("/webhooks/v1/registrations", headers=bearer(partner_key["apiKey"]))
        assert resp.status == 200
        resp = await client.post(
            "/internal/v1/resource-events", json=ingest, headers=bearer(producer_key["apiKey"])
        )
        assert resp.status == 202
    for key in (partner_key, producer_key):
        resp = await first.delete(f"/admin/v1/keys/{key['id']}", headers=admin_headers())
        assert resp.status == 204
    for client in (second, first):
        resp = await client.get("/webhooks/v1/registrations", headers=bearer(partner_key["apiKey"]))
        assert resp.status == 401
        resp = await client.post(
            "/internal/v1/resource-events", json=ingest, headers=bearer(producer_key["apiKey"])
        )
        assert resp.status == 401
    # The other keys keep working.
    assert (await second.get("/webhooks/v1/registrations", headers=world.partner)).status == 200


async def test_keys_are_stored_hashed_nowhere_in_plain(client, db):
    world = await make_world(client)
    await world.register("http://127.0.0.1:9/hook")
    issued = [world.partner_key, world.producer_key]
    rows = await db.fetch("SELECT kind, key_hash, key_prefix FROM api_keys")
    hashes = {bytes(r["key_hash"]) for r in rows}
    for key in issued:
        assert hashlib.sha256(key.encode()).digest() in hashes
    for row in rows:
        assert len(row["key_prefix"]) <= 20  # a display prefix, not the key
    # No table holds a key in plain text.
    tables = await db.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    for table in tables:
        dump = await db.fetchval(
            f"SELECT coalesce(string_agg(t::text, E'\\n'), '') FROM \"{table['tablename']}\" t"
        )
        for key in issued:
            assert key not in dump, table["tablename"]
            assert key[-20:] not in dump, table["tablename"]


async def test_keys_are_compared_in_constant_time(client, monkeypatch):
    """The admin token is compared with hmac.compare_digest on fixed-length digests; partner and
    producer keys are looked up by their SHA-256, so no comparison ever runs over the key."""
    import broker.api.auth as auth

    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    world = await make_world(client)
    assert (await client.get("/admin/v1/partners", headers=admin_headers())).status == 200
    assert (
        await client.get("/admin/v1/partners", headers=bearer("wrong-token-of-any-length"))
    ).status == 401
    assert (await client.get("/webhooks/v1/registrations", headers=world.partner)).status == 200
    assert calls and all(len(a) == len(b) == 32 for a, b in calls)
    assert all(isinstance(a, bytes) and isinstance(b, bytes) for a, b in calls)
