"""Portal links over HTTP: created by the admin, a bearer credential of one partner until it
expires, read-only when asked, revoked all at once; and the portal pages' security headers."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from broker.api.routes_portal import PORTAL_DIR
from broker.config import ConfigError, Settings
from tests.conftest import World, admin_headers, bearer, make_world


async def create_link(world: World, **body: Any) -> dict[str, Any]:
    resp = await world.client.post(
        f"/admin/v1/partners/{world.partner_id}/portal-links", json=body, headers=admin_headers()
    )
    assert resp.status == 201, await resp.text()
    link: dict[str, Any] = await resp.json()
    return link


async def test_a_link_is_a_partner_credential_until_it_expires(world, receiver, db):
    reg = await world.register(receiver.url)
    before = datetime.now(UTC)
    link = await create_link(world, ttlSeconds=600)
    assert set(link) == {"url", "token", "expiresAt", "readOnly"}
    assert link["readOnly"] is False
    origin = str(world.client.make_url("/")).rstrip("/")
    assert link["url"] == f"{origin}/portal/#token={link['token']}"
    expires = datetime.fromisoformat(link["expiresAt"].replace("Z", "+00:00"))
    assert timedelta(seconds=590) < expires - before < timedelta(seconds=610)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", link["expiresAt"])

    token = bearer(link["token"])
    resp = await world.client.get("/webhooks/v1/registrations", headers=token)
    assert resp.status == 200
    assert [r["id"] for r in (await resp.json())["data"]] == [reg["id"]]
    # Writes work too (not read-only), as that partner.
    resp = await world.client.post(f"/webhooks/v1/registrations/{reg['id']}/pause", headers=token)
    assert resp.status == 200
    resp = await world.client.get("/webhooks/v1/session", headers=token)
    assert await resp.json() == {
        "partnerId": world.partner_id,
        "readOnly": False,
        "expiresAt": link["expiresAt"],
    }
    # Only /webhooks/v1: a link is no admin or producer credential.
    assert (await world.client.get("/admin/v1/partners", headers=token)).status == 403
    resp = await world.client.post(
        "/internal/v1/resource-events", json={"events": []}, headers=token
    )
    assert resp.status == 403
    # Stored hashed, never in the clear.
    rows = await db.fetch("SELECT token_hash, read_only FROM portal_links")
    assert [bytes(r["token_hash"]) for r in rows] == [
        hashlib.sha256(link["token"].encode()).digest()
    ]
    dump = await db.fetchval("SELECT string_agg(t::text, ' ') FROM portal_links t")
    assert link["token"] not in dump

    await db.execute("UPDATE portal_links SET expires_at = now() - interval '1 second'")
    resp = await world.client.get("/webhooks/v1/registrations", headers=token)
    assert resp.status == 401


async def test_a_link_sees_only_its_own_partner(client, receiver):
    first = await make_world(client)
    second = await make_world(client)
    theirs = await second.register(receiver.url)
    link = await create_link(first)
    token = bearer(link["token"])
    resp = await client.get(f"/webhooks/v1/registrations/{theirs['id']}", headers=token)
    assert resp.status == 404
    resp = await client.get("/webhooks/v1/registrations", headers=token)
    assert (await resp.json())["data"] == []


async def test_a_read_only_link_reads_but_every_write_is_403(world, receiver, db):
    reg = await world.register(receiver.url)
    link = await create_link(world, readOnly=True, ttlSeconds=60)
    assert link["readOnly"] is True
    token = bearer(link["token"])
    for path in (
        "/webhooks/v1/registrations",
        f"/webhooks/v1/registrations/{reg['id']}",
        "/webhooks/v1/events",
        "/webhooks/v1/event-types",
    ):
        assert (await world.client.get(path, headers=token)).status == 200, path
    before = await db.fetchval("SELECT count(*) FROM registrations")
    for method, path, body in (
        ("POST", "/webhooks/v1/registrations", {"url": receiver.url, "eventTypes": ["*"]}),
        ("PATCH", f"/webhooks/v1/registrations/{reg['id']}", {"description": "changed"}),
        ("DELETE", f"/webhooks/v1/registrations/{reg['id']}", None),
        ("POST", f"/webhooks/v1/registrations/{reg['id']}/pause", None),
        ("POST", f"/webhooks/v1/registrations/{reg['id']}/rotate-secret", {}),
        ("POST", f"/webhooks/v1/registrations/{reg['id']}/test", None),
    ):
        resp = await world.client.request(method, path, json=body, headers=token)
        assert resp.status == 403, (method, path)
        assert resp.content_type == "application/problem+json"
        assert "read-only" in (await resp.json())["detail"]
    assert await db.fetchval("SELECT count(*) FROM registrations") == before
    row = await db.fetchrow("SELECT status, description FROM registrations")
    assert (row["status"], row["description"]) == ("Active", "")
    resp = await world.client.get("/webhooks/v1/session", headers=token)
    assert (await resp.json())["readOnly"] is True


async def test_revoking_ends_every_link_of_that_partner_and_only_those(client, db):
    first = await make_world(client)
    second = await make_world(client)
    links = [await create_link(first), await create_link(first, readOnly=True)]
    other = await create_link(second)
    resp = await client.delete(
        f"/admin/v1/partners/{first.partner_id}/portal-links", headers=admin_headers()
    )
    assert resp.status == 204
    for link in links:
        resp = await client.get("/webhooks/v1/registrations", headers=bearer(link["token"]))
        assert resp.status == 401
    resp = await client.get("/webhooks/v1/registrations", headers=bearer(other["token"]))
    assert resp.status == 200
    assert await db.fetchval("SELECT count(*) FROM portal_links") == 1
    # Revoking again (nothing left) is still a success; the partner's key still works.
    resp = await client.delete(
        f"/admin/v1/partners/{first.partner_id}/portal-links", headers=admin_headers()
    )
    assert resp.status == 204
    assert (await client.get("/webhooks/v1/registrations", headers=first.partner)).status == 200


async def test_an_empty_body_means_one_hour_read_write(world):
    resp = await world.client.post(
        f"/admin/v1/partners/{world.partner_id}/portal-links", headers=admin_headers()
    )
    assert resp.status == 201, await resp.text()
    link = await resp.json()
    expires = datetime.fromisoformat(link["expiresAt"].replace("Z", "+00:00"))
    assert abs((expires - datetime.now(UTC)).total_seconds() - 3600) < 30
    assert link["readOnly"] is False


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"ttlSeconds": 59}, "ttlSeconds"),
        ({"ttlSeconds": 604801}, "ttlSeconds"),
        ({"ttlSeconds": "3600"}, "ttlSeconds"),
        ({"ttlSeconds": True}, "ttlSeconds"),
        ({"ttlSeconds": 90.5}, "ttlSeconds"),
        ({"ttlSeconds": None}, "ttlSeconds"),
        ({"readOnly": "yes"}, "readOnly"),
        ({"readOnly": 1}, "readOnly"),
        ({"ttlSeconds": 600, "scope": "all"}, "scope"),
        ([], ""),
    ],
)
async def test_bad_input_is_400_naming_the_field_and_stores_nothing(world, db, body, field):
    resp = await world.client.post(
        f"/admin/v1/partners/{world.partner_id}/portal-links", json=body, headers=admin_headers()
    )
    assert resp.status == 400, await resp.text()
    assert resp.content_type == "application/problem+json"
    problem = await resp.json()
    assert field in [e["field"] for e in problem["errors"]]
    assert await db.fetchval("SELECT count(*) FROM portal_links") == 0


async def test_malformed_json_unknown_partner_and_auth(world, db):
    url = f"/admin/v1/partners/{world.partner_id}/portal-links"
    resp = await world.client.post(
        url, data=b"{not json", headers={**admin_headers(), "Content-Type": "application/json"}
    )
    assert resp.status == 400
    for partner in ("0190a000-0000-7000-8000-000000000000", "not-a-uuid"):
        for method in ("POST", "DELETE"):
            resp = await world.client.request(
                method, f"/admin/v1/partners/{partner}/portal-links", headers=admin_headers()
            )
            assert resp.status == 404, (method, partner)
    assert (await world.client.post(url, json={})).status == 401
    assert (await world.client.post(url, json={}, headers=world.partner)).status == 403
    assert await db.fetchval("SELECT count(*) FROM portal_links") == 0


async def test_a_configured_public_url_is_the_links_base(make_client):
    client = await make_client(public_url="https://broker.example.com/")
    world = await make_world(client)
    link = await create_link(world)
    assert link["url"] == f"https://broker.example.com/portal/#token={link['token']}"


async def test_the_session_of_a_partner_key_has_no_expiry(world):
    resp = await world.client.get("/webhooks/v1/session", headers=world.partner)
    assert await resp.json() == {
        "partnerId": world.partner_id,
        "readOnly": False,
        "expiresAt": None,
    }


# ------------------------------------------------------------------ portal security headers


@pytest.mark.parametrize("path", ["/portal/", "/portal/portal.js", "/portal/portal.css", "/portal"])
async def test_portal_pages_carry_the_security_headers(client, path):
    resp = await client.get(path, allow_redirects=False)
    assert resp.status in (200, 302)
    csp = resp.headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["frame-ancestors"] == "'none'"
    assert directives["script-src"] == "'self'"  # no 'unsafe-inline', no foreign origin
    assert directives["default-src"] == "'none'"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Referrer-Policy"] == "no-referrer"


async def test_frame_ancestors_come_from_the_setting(make_client):
    client = await make_client(portal_frame_ancestors="'self' https://platform.example")
    resp = await client.get("/portal/")
    assert (
        "frame-ancestors 'self' https://platform.example" in resp.headers["Content-Security-Policy"]
    )


def test_the_portal_has_no_inline_script_or_style():
    html = (PORTAL_DIR / "index.html").read_text()
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert scripts and all("src=" in tag for tag in scripts)
    assert not re.search(r"<script\b[^>]*>\s*[^<\s]", html)  # no inline code
    assert not re.search(r"\son[a-z]+\s*=", html)  # no inline event handlers
    assert not re.search(r"\sstyle\s*=", html)
    assert "<style" not in html


@pytest.mark.parametrize(
    "value", ["'none'; script-src *", "https://a.example, https://b.example", "'none'\r\nX: y"]
)
def test_bad_frame_ancestors_stop_the_process_naming_the_variable(value):
    with pytest.raises(ConfigError, match="BROKER_PORTAL_FRAME_ANCESTORS"):
        Settings.from_env({"BROKER_PORTAL_FRAME_ANCESTORS": value})


def test_bad_public_url_stops_the_process_naming_the_variable():
    with pytest.raises(ConfigError, match="BROKER_PUBLIC_URL"):
        Settings.from_env({"BROKER_PUBLIC_URL": "javascript:alert(1)"})
    assert Settings.from_env({"BROKER_PUBLIC_URL": "https://b.example"}).public_url
