"""Partner API: registration create/list/get/update/delete, URL safety and partner isolation.

Only loopback and public IP *literals* are used: registration validates literals without
connecting, and no test here makes a request to a non-loopback address.
"""

from __future__ import annotations

import base64
import os
from typing import Any

from tests.conftest import World, admin_headers, make_world, stored_secrets

REGS = "/webhooks/v1/registrations"
PUBLIC_URL = "https://93.184.216.34/hook"  # a public literal: accepted without connecting
PROBLEM = "application/problem+json"
MISSING = "00000000-0000-0000-0000-000000000000"


def secret_of(num_bytes: int) -> str:
    return "whsec_" + base64.b64encode(os.urandom(num_bytes)).decode()


async def create(world: World, **body: Any) -> Any:
    payload = {"url": PUBLIC_URL, "eventTypes": [world.event_name], **body}
    return await world.client.post(REGS, json=payload, headers=world.partner)


async def problem_fields(resp, status: int = 400) -> list[str]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == PROBLEM
    problem = await resp.json()
    assert {"title", "status", "detail"} <= set(problem)
    return [e["field"] for e in problem.get("errors", [])]


async def count_regs(db) -> int:
    return int(await db.fetchval("SELECT count(*) FROM registrations"))


async def test_create_returns_active_registration_with_generated_secret(world, db):
    resp = await create(world, description="main hook")
    assert resp.status == 201, await resp.text()
    reg = await resp.json()
    assert reg["status"] == "Active"
    assert reg["url"] == PUBLIC_URL
    assert reg["eventTypes"] == [world.event_name]
    assert reg["description"] == "main hook"
    assert reg["failureCount"] == 0
    assert reg["lastSuccessAt"] is None and reg["lastFailureAt"] is None
    assert reg["createdAt"].endswith("Z") and reg["updatedAt"].endswith("Z")
    assert resp.headers["Location"] == f"{REGS}/{reg['id']}"
    assert reg["secret"].startswith("whsec_")
    key = base64.b64decode(reg["secret"][len("whsec_") :], validate=True)
    assert 24 <= len(key) <= 64
    assert "basicAuth" not in reg
    row = await db.fetchrow("SELECT * FROM registrations WHERE id = $1::uuid", reg["id"])
    assert (await stored_secrets(db, reg["id"]))["secret"] == reg["secret"]
    assert str(row["partner_id"]) == world.partner_id
    other = await (await create(world)).json()
    assert other["secret"] != reg["secret"]


async def test_supplied_secret_is_kept_and_malformed_ones_refused(world, db):
    for size in (24, 32, 64):
        secret = secret_of(size)
        resp = await create(world, secret=secret)
        assert resp.status == 201, await resp.text()
        assert (await resp.json())["secret"] == secret
    assert await count_regs(db) == 3
    for bad in (
        "nope",
        "whsec_",
        "whsec_!!!notbase64!!!",
        secret_of(23),
        secret_of(65),
        secret_of(32)[len("whsec_") :],
        "WHSEC_" + secret_of(32)[len("whsec_") :],
        123,
        ["whsec_x"],
    ):
        resp = await create(world, secret=bad)
        assert await problem_fields(resp) == ["secret"], bad
    assert await count_regs(db) == 3


async def test_event_type_patterns(client, db):
    world = await make_world(client, event_types=("Core.Account.Opened", "Core.Account.Closed"))
    resp = await create(world, eventTypes=["Core.Account.*", "*", "Core.Account.Closed", "Core.*"])
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["eventTypes"] == [
        "Core.Account.*",
        "*",
        "Core.Account.Closed",
        "Core.*",
    ]
    # prefix wildcards need not match anything in the catalog yet
    assert (await create(world, eventTypes=["Future.Things.*"])).status == 201
    # 100 patterns is the most
    many = [f"P{i}.*" for i in range(100)]
    assert (await create(world, eventTypes=many)).status == 201
    before = await count_regs(db)
    assert await problem_fields(await create(world, eventTypes=[*many, "P100.*"])) == ["eventTypes"]
    assert await problem_fields(await create(world, eventTypes=[])) == ["eventTypes"]
    assert await problem_fields(await create(world, eventTypes="*")) == ["eventTypes"]
    for bad in ("Core.*.Opened", "*.Opened", "Core.Account.", "Core", "", "Core.**", "**", 5, None):
        resp = await create(world, eventTypes=["Core.Account.Opened", bad])
        assert await problem_fields(resp) == ["eventTypes[1]"], bad
    assert await count_regs(db) == before


async def test_exact_names_must_be_in_the_catalog(world, db):
    resp = await create(
        world, eventTypes=[world.event_name, "Core.Account.Nope", "Core.*", "Other.Thing"]
    )
    assert await problem_fields(resp) == ["eventTypes[1]", "eventTypes[3]"]
    assert await count_regs(db) == 0
    # test.event is always in the catalog
    assert (await create(world, eventTypes=["test.event"])).status == 201


async def test_catalog_errors_name_the_index_the_partner_sent(world, db):
    resp = await create(world, eventTypes=[world.event_name, world.event_name, "Core.Account.Nope"])
    assert await problem_fields(resp) == ["eventTypes[2]"]
    assert await count_regs(db) == 0


async def test_every_bad_field_is_named_at_once(world, db):
    resp = await world.client.post(
        REGS,
        json={
            "url": "ftp://93.184.216.34/x",
            "eventTypes": [],
            "secret": "bad",
            "description": 7,
            "basicAuth": "no-colon-no-base64!",
            "colour": "red",
        },
        headers=world.partner,
    )
    fields = await problem_fields(resp)
    assert set(fields) == {"url", "eventTypes", "secret", "description", "basicAuth", "colour"}
    resp = await world.client.post(REGS, json={}, headers=world.partner)
    assert set(await problem_fields(resp)) == {"url", "eventTypes"}
    for body in (b"[]", b"{", b"\xff", b"null"):
        resp = await world.client.post(
            REGS, data=body, headers={**world.partner, "Content-Type": "application/json"}
        )
        await problem_fields(resp)
    resp = await world.client.post(
        REGS, data=b"{}", headers={**world.partner, "Content-Type": "text/plain"}
    )
    await problem_fields(resp, 415)
    assert await count_regs(db) == 0


async def test_url_scheme_and_shape(world, db):
    for bad in (
        "ftp://93.184.216.34/hook",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "93.184.216.34/hook",
        "https://",
        "https://user:pass@93.184.216.34/hook",
        "https://93.184.216.34:0/hook",
        "https://93.184.216.34:99999/hook",
        "https://93.184.216.34/ho ok",
        "https://93.184.216.34/\nhook",
        "https://" + "a" * 2048 + ".com/",
        "",
        5,
        None,
    ):
        resp = await create(world, url=bad)
        assert await problem_fields(resp) == ["url"], bad
    assert await count_regs(db) == 0
    for good in ("http://93.184.216.34/hook", "https://93.184.216.34:8443/a/b?c=d"):
        resp = await create(world, url=good)
        assert resp.status == 201, (good, await resp.text())
        assert (await resp.json())["url"] == good


PRIVATE_URLS = [
    "http://127.0.0.1/hook",
    "http://127.0.0.1:8080/hook",
    "http://localhost/hook",
    "http://LOCALHOST:9000/hook",
    "http://api.localhost/hook",
    "http://10.0.0.1/hook",
    "http://10.255.255.254/hook",
    "http://172.16.0.1/hook",
    "http://192.168.1.1/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]/hook",
    "http://[::]/hook",
    "http://[fd00::1]/hook",
    "http://[fe80::1]/hook",
    "http://2130706433/hook",
    "http://0x7f.1/hook",
    "http://0177.0.0.1/hook",
    "http://127.1/hook",
    "http://127.0.0.1./hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[::ffff:7f00:1]/hook",
    "http://[64:ff9b::7f00:1]/hook",
    "http://100.64.0.1/hook",
    "http://0.0.0.0/hook",
    "http://0/hook",
    "http://224.0.0.1/hook",
    "http://255.255.255.255/hook",
    "http://１２７.０.０.１/hook",
]


async def test_private_urls_are_refused_unless_allowed(make_client, receiver, db):
    client = await make_client(allow_private_urls=False)
    world = await make_world(client)
    for url in [*PRIVATE_URLS, receiver.url]:
        resp = await create(world, url=url)
        assert await problem_fields(resp) == ["url"], url
    assert await count_regs(db) == 0
    assert receiver.received == []
    assert (await create(world, url=PUBLIC_URL)).status == 201
    assert (await create(world, url="http://[2606:2800:220:1::1]/hook")).status == 201


async def test_loopback_receiver_is_accepted_when_private_urls_are_allowed(make_client, receiver):
    client = await make_client(allow_private_urls=True)
    world = await make_world(client)
    reg = await world.register(receiver.url)
    assert reg["url"] == receiver.url
    assert reg["status"] == "Active"
    # literal spellings are stored canonically: the address that will really be dialled
    resp = await create(world, url="http://2130706433:9/hook")
    assert resp.status == 201
    assert (await resp.json())["url"] == "http://127.0.0.1:9/hook"


async def test_list_get_and_secrets_never_shown_again(world, db):
    first = await (await create(world, basicAuth="user:pw", description="one")).json()
    second = await (await create(world, eventTypes=["*"])).json()
    resp = await world.client.get(REGS, headers=world.partner)
    assert resp.status == 200
    listed = (await resp.json())["data"]
    assert [r["id"] for r in listed] == [first["id"], second["id"]]
    for r in listed:
        assert "secret" not in r and "basicAuth" not in r
    resp = await world.client.get(f"{REGS}/{first['id']}", headers=world.partner)
    assert resp.status == 200
    got = await resp.json()
    assert "secret" not in got and "basicAuth" not in got
    assert {k: got[k] for k in ("id", "url", "eventTypes", "description", "status")} == {
        k: first[k] for k in ("id", "url", "eventTypes", "description", "status")
    }
    body = str(listed) + str(got)
    assert first["secret"] not in body and "user:pw" not in body
    stored = (await stored_secrets(db, got["id"]))["basic_auth"]
    assert base64.b64decode(stored) == b"user:pw"


async def test_patch_updates_fields_and_hides_secrets(world, db):
    reg = await (await create(world, description="old")).json()
    url = f"{REGS}/{reg['id']}"
    resp = await world.client.patch(
        url,
        json={
            "url": "https://93.184.216.35/new",
            "eventTypes": ["Core.*"],
            "description": "new",
            "basicAuth": base64.b64encode(b"u:p").decode(),
        },
        headers=world.partner,
    )
    assert resp.status == 200, await resp.text()
    updated = await resp.json()
    assert updated["url"] == "https://93.184.216.35/new"
    assert updated["eventTypes"] == ["Core.*"]
    assert updated["description"] == "new"
    assert updated["status"] == "Active"
    assert "secret" not in updated and "basicAuth" not in updated
    row = await stored_secrets(db, reg["id"])
    assert base64.b64decode(row["basic_auth"]) == b"u:p"
    assert row["secret"] == reg["secret"]  # PATCH never changes the secret
    # a partial PATCH changes only what it names; basicAuth null removes the credentials
    resp = await world.client.patch(url, json={"basicAuth": None}, headers=world.partner)
    assert resp.status == 200
    assert (await resp.json())["description"] == "new"
    assert await db.fetchval("SELECT basic_auth_sealed FROM registrations") is None
    resp = await world.client.patch(url, json={"description": ""}, headers=world.partner)
    assert (await resp.json())["description"] == ""


async def test_patch_validates_like_create(make_client, db):
    client = await make_client(allow_private_urls=False)
    world = await make_world(client)
    reg = await (await create(world)).json()
    url = f"{REGS}/{reg['id']}"
    before = dict(await db.fetchrow("SELECT * FROM registrations"))
    cases: list[tuple[Any, list[str]]] = [
        ({"secret": secret_of(32)}, ["secret"]),
        ({"status": "Paused"}, ["status"]),
        ({"url": "http://127.0.0.1/hook"}, ["url"]),
        ({"url": "http://169.254.169.254/"}, ["url"]),
        ({"url": "http://[::ffff:127.0.0.1]/"}, ["url"]),
        ({"url": None}, ["url"]),
        ({"eventTypes": []}, ["eventTypes"]),
        ({"eventTypes": ["Core.Account.Nope"]}, ["eventTypes[0]"]),
        ({"eventTypes": ["Bad.*.Pattern"]}, ["eventTypes[0]"]),
        ({"description": 5}, ["description"]),
        ({"description": "x" * 1025}, ["description"]),
        ({"basicAuth": "nocolon"}, ["basicAuth"]),
        ({"url": "http://10.0.0.1/", "description": None}, ["url", "description"]),
    ]
    for body, fields in cases:
        resp = await client.patch(url, json=body, headers=world.partner)
        assert sorted(await problem_fields(resp)) == sorted(fields), body
    resp = await client.patch(
        url, data=b"[1]", headers={**world.partner, "Content-Type": "application/json"}
    )
    await problem_fields(resp)
    after = dict(await db.fetchrow("SELECT * FROM registrations"))
    assert after == before


async def test_delete_hides_the_registration(world, db):
    keep = await (await create(world)).json()
    gone = await (await create(world)).json()
    resp = await world.client.delete(f"{REGS}/{gone['id']}", headers=world.partner)
    assert resp.status == 204
    listed = (await (await world.client.get(REGS, headers=world.partner)).json())["data"]
    assert [r["id"] for r in listed] == [keep["id"]]
    resp = await world.client.get(f"{REGS}/{gone['id']}", headers=world.partner)
    assert resp.status == 404 and resp.content_type == PROBLEM
    resp = await world.client.patch(
        f"{REGS}/{gone['id']}", json={"description": "x"}, headers=world.partner
    )
    assert resp.status == 409 and resp.content_type == PROBLEM
    status = await db.fetchval("SELECT status FROM registrations WHERE id = $1::uuid", gone["id"])
    assert status == "Deleted"
    assert (
        await db.fetchval("SELECT description FROM registrations WHERE id = $1::uuid", gone["id"])
    ) == ""


async def test_another_partners_registration_does_not_exist_for_me(client, receiver, db):
    owner = await make_world(client)
    intruder = await make_world(client)
    # a loopback receiver: should /test leak across partners, it would be called, not the world
    reg = await (await create(owner, url=receiver.url, description="mine")).json()
    url = f"{REGS}/{reg['id']}"
    h = intruder.partner
    calls = [
        client.get(url, headers=h),
        client.patch(url, json={"description": "stolen"}, headers=h),
        client.delete(url, headers=h),
        client.post(f"{url}/restart", json={"resendFailed": False}, headers=h),
        client.post(f"{url}/pause", headers=h),
        client.post(f"{url}/unpause", headers=h),
        client.post(f"{url}/test", headers=h),
        client.post(f"{url}/rotate-secret", json={"graceSeconds": 60}, headers=h),
    ]
    unknown = await (await client.get(f"{REGS}/{MISSING}", headers=h)).json()
    for call in calls:
        resp = await call
        assert resp.status == 404, (resp.method, resp.url, resp.status)
        assert resp.content_type == PROBLEM
        problem = await resp.json()
        # exactly the answer an id that does not exist gets (bar the echoed path)
        assert {k: v for k, v in problem.items() if k != "instance"} == {
            k: v for k, v in unknown.items() if k != "instance"
        }
    listed = (await (await client.get(REGS, headers=h)).json())["data"]
    assert listed == []
    row = await db.fetchrow("SELECT * FROM registrations")
    assert row["status"] == "Active"
    assert row["description"] == "mine"
    assert (await stored_secrets(db, row["id"]))["secret"] == reg["secret"]
    assert await db.fetchval("SELECT count(*) FROM events") == 0
    assert receiver.received == []
    # the owner still sees it
    assert (await client.get(url, headers=owner.partner)).status == 200


async def test_unknown_and_malformed_ids_are_404(world):
    for reg_id in (MISSING, "not-a-uuid", "1", "00000000-0000-0000-0000-00000000000g"):
        url = f"{REGS}/{reg_id}"
        for resp in (
            await world.client.get(url, headers=world.partner),
            await world.client.patch(url, json={"description": "x"}, headers=world.partner),
            await world.client.delete(url, headers=world.partner),
            await world.client.post(f"{url}/pause", headers=world.partner),
            await world.client.post(f"{url}/rotate-secret", headers=world.partner),
        ):
            assert resp.status == 404, (reg_id, resp.method, resp.status)
            assert resp.content_type == PROBLEM


async def test_partner_key_required(world):
    assert (await world.client.get(REGS)).status == 401
    assert (await world.client.get(REGS, headers=world.producer)).status == 403
    assert (await world.client.get(REGS, headers=admin_headers())).status == 403
