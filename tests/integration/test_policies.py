"""Per-registration delivery policy over HTTP: create, GET, PATCH, refusals and the test delivery.

Every refusal is checked to store nothing (the registration row is unchanged); every accepted
policy is checked in PostgreSQL as well as in the answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac

import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from tests.conftest import Receiver, make_world

AEROSTIC = {
    "delivery": {
        "timeoutSeconds": 5,
        "retrySchedule": [30, 300, 1800, 7200],
        "suspendAfterConsecutiveFailures": 5,
        "rateLimitPerSecond": 50,
        "ordering": "fifo",
    },
    "signature": {
        "scheme": "hmac-sha256-hex",
        "header": "X-Aerostic-Signature",
        "prefix": "sha256=",
        "timestampHeader": None,
    },
    "headers": {"X-Tenant": "acme"},
}
DEFAULTS = {
    "delivery": {
        "timeoutSeconds": None,
        "retrySchedule": None,
        "suspendAfterConsecutiveFailures": None,
        "rateLimitPerSecond": None,
        "ordering": None,
    },
    "signature": {"scheme": None, "header": None, "prefix": None, "timestampHeader": None},
    "headers": {},
}
SHARED_SECRET = "optional-shared-secret"


def policy_of(body: dict) -> dict:
    return {k: body[k] for k in ("delivery", "signature", "headers")}


async def get(world, reg_id: str) -> dict:
    resp = await world.client.get(f"/webhooks/v1/registrations/{reg_id}", headers=world.partner)
    assert resp.status == 200
    return await resp.json()


async def patch(world, reg_id: str, body: dict) -> tuple[int, dict]:
    resp = await world.client.patch(
        f"/webhooks/v1/registrations/{reg_id}", json=body, headers=world.partner
    )
    return resp.status, await resp.json()


async def test_a_registration_without_a_policy_answers_null_defaults(world):
    reg = await world.register("https://example.com/hook")
    assert policy_of(reg) == DEFAULTS
    assert policy_of(await get(world, reg["id"])) == DEFAULTS


async def test_create_stores_every_field_and_get_returns_it(world, db):
    reg = await world.register("https://example.com/hook", secret=SHARED_SECRET, **AEROSTIC)
    assert policy_of(reg) == AEROSTIC
    assert reg["secret"] == SHARED_SECRET
    assert policy_of(await get(world, reg["id"])) == AEROSTIC
    row = await db.fetchrow("SELECT * FROM registrations WHERE id = $1::uuid", reg["id"])
    assert row["delivery_timeout_seconds"] == 5
    assert row["retry_schedule"] == [30, 300, 1800, 7200]
    assert row["delivery_ordering"] == "fifo"
    assert row["signature_scheme"] == "hmac-sha256-hex"
    assert row["signature_header"] == "X-Aerostic-Signature"


async def test_an_empty_retry_schedule_is_kept_apart_from_the_default(world):
    reg = await world.register("https://example.com/hook", delivery={"retrySchedule": []})
    assert reg["delivery"]["retrySchedule"] == []
    assert (await get(world, reg["id"]))["delivery"]["retrySchedule"] == []


async def test_patch_merges_and_null_returns_a_field_to_its_default(world):
    reg = await world.register("https://example.com/hook", secret=SHARED_SECRET, **AEROSTIC)
    status, body = await patch(
        world,
        reg["id"],
        {"delivery": {"timeoutSeconds": None, "ordering": "unordered"}, "headers": {"X-B": "2"}},
    )
    assert status == 200, body
    assert body["delivery"] == {
        **AEROSTIC["delivery"],
        "timeoutSeconds": None,
        "ordering": "unordered",
    }
    assert body["signature"] == AEROSTIC["signature"]
    assert body["headers"] == {"X-Tenant": "acme", "X-B": "2"}
    status, body = await patch(world, reg["id"], {"headers": {"X-Tenant": None}, "delivery": None})
    assert status == 200, body
    assert body["headers"] == {"X-B": "2"}
    assert body["delivery"] == DEFAULTS["delivery"]
    status, body = await patch(world, reg["id"], {"signature": None, "headers": None})
    # hmac -> standard-webhooks needs a whsec_ secret: refused, naming the field
    assert status == 400
    assert [e["field"] for e in body["errors"]] == ["signature.scheme"]
    status, body = await patch(world, reg["id"], {"description": "other fields alone"})
    assert status == 200
    assert body["signature"] == AEROSTIC["signature"]
    assert policy_of(await get(world, reg["id"]))["headers"] == {"X-B": "2"}


@pytest.mark.parametrize(
    ("policy", "fields"),
    [
        ({"delivery": {"timeoutSeconds": 0}}, ["delivery.timeoutSeconds"]),
        ({"delivery": {"timeoutSeconds": 31}}, ["delivery.timeoutSeconds"]),
        ({"delivery": {"timeoutSeconds": "5"}}, ["delivery.timeoutSeconds"]),
        ({"delivery": {"retrySchedule": [1, 2, 86401]}}, ["delivery.retrySchedule[2]"]),
        ({"delivery": {"retrySchedule": [0] * 21}}, ["delivery.retrySchedule"]),
        (
            {"delivery": {"suspendAfterConsecutiveFailures": 0}},
            ["delivery.suspendAfterConsecutiveFailures"],
        ),
        (
            {"delivery": {"suspendAfterConsecutiveFailures": 1.5}},
            ["delivery.suspendAfterConsecutiveFailures"],
        ),
        ({"delivery": {"rateLimitPerSecond": 0.01}}, ["delivery.rateLimitPerSecond"]),
        ({"delivery": {"ordering": "lifo"}}, ["delivery.ordering"]),
        ({"delivery": {"speed": 1}}, ["delivery.speed"]),
        ({"delivery": [5]}, ["delivery"]),
        ({"signature": {"scheme": "md5"}}, ["signature.scheme"]),
        ({"signature": {"header": "X-Sig"}}, ["signature.header"]),
        (
            {"signature": {"scheme": "hmac-sha256-hex", "header": "Content-Type"}},
            ["signature.header"],
        ),
        (
            {"signature": {"scheme": "hmac-sha256-hex", "timestampHeader": "webhook-timestamp"}},
            ["signature.timestampHeader"],
        ),
        ({"headers": {"Cookie": "a=b"}}, ["headers.Cookie"]),
        ({"headers": {"webhook-id": "x"}}, ["headers.webhook-id"]),
        ({"headers": {"X-A": "line\r\nX-Injected: 1"}}, ["headers.X-A"]),
        ({"headers": {"Bad Name": "v"}}, ["headers.Bad Name"]),
        ({"headers": {"X-A": 5}}, ["headers.X-A"]),
        (
            {
                "signature": {"scheme": "hmac-sha256-hex"},
                "headers": {"X-Webhook-Signature": "forged"},
            },
            ["headers.X-Webhook-Signature"],
        ),
        ({"headers": {f"X-H{i}": "v" for i in range(21)}}, ["headers"]),
    ],
)
async def test_bad_policies_are_refused_naming_the_field_and_store_nothing(
    world, db, policy, fields
):
    before = await db.fetchval("SELECT count(*) FROM registrations")
    resp = await world.client.post(
        "/webhooks/v1/registrations",
        json={"url": "https://example.com/hook", "eventTypes": ["*"], **policy},
        headers=world.partner,
    )
    assert resp.status == 400
    assert resp.content_type == "application/problem+json"
    assert [e["field"] for e in (await resp.json())["errors"]] == fields
    assert await db.fetchval("SELECT count(*) FROM registrations") == before

    reg = await world.register("https://example.com/hook")
    row_before = dict(
        await db.fetchrow("SELECT * FROM registrations WHERE id = $1::uuid", reg["id"])
    )
    status, body = await patch(world, reg["id"], {"description": "changed", **policy})
    assert status == 400
    assert [e["field"] for e in body["errors"]] == fields
    row_after = dict(
        await db.fetchrow("SELECT * FROM registrations WHERE id = $1::uuid", reg["id"])
    )
    assert row_after == row_before


async def test_secret_rules_follow_the_scheme(world):
    hmac_scheme = {"signature": {"scheme": "hmac-sha256-hex"}}
    for body, ok in (
        ({"secret": SHARED_SECRET, **hmac_scheme}, True),
        ({"secret": SHARED_SECRET}, False),  # standard-webhooks keeps requiring whsec_
        ({"secret": "too-short", **hmac_scheme}, False),
        ({"secret": "x" * 257, **hmac_scheme}, False),
        ({"secret": "x" * 256, "signature": {"scheme": "none"}}, True),
    ):
        resp = await world.client.post(
            "/webhooks/v1/registrations",
            json={"url": "https://example.com/hook", "eventTypes": ["*"], **body},
            headers=world.partner,
        )
        assert (resp.status == 201) is ok, (body, await resp.text())
        if not ok:
            assert [e["field"] for e in (await resp.json())["errors"]] == ["secret"]
    reg = await world.register("https://example.com/hook", **hmac_scheme)
    assert reg["secret"].startswith("whsec_")  # generated secrets suit every scheme
    rotate = f"/webhooks/v1/registrations/{reg['id']}/rotate-secret"
    resp = await world.client.post(rotate, json={"secret": SHARED_SECRET}, headers=world.partner)
    assert resp.status == 200
    assert (await resp.json())["secret"] == SHARED_SECRET
    plain = await world.register("https://example.com/hook")
    resp = await world.client.post(
        f"/webhooks/v1/registrations/{plain['id']}/rotate-secret",
        json={"secret": SHARED_SECRET},
        headers=world.partner,
    )
    assert resp.status == 400
    assert [e["field"] for e in (await resp.json())["errors"]] == ["secret"]


async def test_the_openapi_document_describes_the_policy(client):
    doc = await (await client.get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    assert set(schemas["DeliveryPolicy"]["properties"]) == set(DEFAULTS["delivery"])
    delivery = schemas["DeliveryPolicyUpdate"]["properties"]
    assert set(delivery) == set(DEFAULTS["delivery"])
    assert {"type": "number", "minimum": 1, "maximum": 30} in delivery["timeoutSeconds"]["anyOf"]
    assert set(schemas["SignaturePolicy"]["properties"]) == set(DEFAULTS["signature"])
    assert set(schemas["SignaturePolicyUpdate"]["properties"]) == set(DEFAULTS["signature"])
    for name in ("RegistrationCreate", "RegistrationUpdate", "Registration"):
        assert {"delivery", "signature", "headers"} <= set(schemas[name]["properties"])


# ---------------------------------------------------------------------- the test delivery


async def test_the_test_button_uses_the_registrations_scheme_headers_and_timeout(
    make_client, receiver: Receiver
):
    client = await make_client()
    world = await make_world(client)
    reg = await world.register(receiver.url, secret=SHARED_SECRET, **AEROSTIC)
    resp = await client.post(f"/webhooks/v1/registrations/{reg['id']}/test", headers=world.partner)
    assert resp.status == 200
    assert (await resp.json())["success"] is True
    (got,) = await receiver.wait_for(1)
    expected = hmac.new(SHARED_SECRET.encode(), got.body, hashlib.sha256).hexdigest()
    assert got.headers["X-Aerostic-Signature"] == f"sha256={expected}"
    assert got.headers["X-Tenant"] == "acme"
    assert not [h for h in got.headers if h.lower().startswith("webhook-")]

    plain = await world.register(receiver.url, headers={"X-Tenant": "beta"})
    await client.post(f"/webhooks/v1/registrations/{plain['id']}/test", headers=world.partner)
    second = (await receiver.wait_for(2))[1]
    Webhook(plain["secret"]).verify(second.body, second.headers)
    assert second.headers["X-Tenant"] == "beta"

    none = await world.register(
        receiver.url, signature={"scheme": "none"}, basicAuth="broker:password-1234"
    )
    await client.post(f"/webhooks/v1/registrations/{none['id']}/test", headers=world.partner)
    third = (await receiver.wait_for(3))[2]
    assert not [h for h in third.headers if "signature" in h.lower() or h.startswith("webhook-")]
    assert third.headers["Authorization"].startswith("Basic ")


async def test_the_test_delivery_waits_only_the_registrations_timeout(make_client, receiver):
    async def slow(request: web.Request, n: int) -> web.StreamResponse:
        await asyncio.sleep(1.6)
        return web.Response(text="late")

    receiver.behaviour = slow
    client = await make_client(delivery_timeout_seconds=5.0)
    world = await make_world(client)
    quick = await world.register(receiver.url, delivery={"timeoutSeconds": 1})
    resp = await client.post(
        f"/webhooks/v1/registrations/{quick['id']}/test", headers=world.partner
    )
    answer = await resp.json()
    assert answer["success"] is False
    assert "timeout after 1s" in answer["attempt"]["error"]
    patient = await world.register(receiver.url)
    resp = await client.post(
        f"/webhooks/v1/registrations/{patient['id']}/test", headers=world.partner
    )
    assert (await resp.json())["success"] is True


async def test_failing_test_deliveries_count_towards_suspension(make_client, receiver, db):
    async def broken(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=500)

    receiver.behaviour = broken
    client = await make_client()
    world = await make_world(client)
    reg = await world.register(receiver.url, delivery={"suspendAfterConsecutiveFailures": 2})
    plain = await world.register(receiver.url)
    test = f"/webhooks/v1/registrations/{reg['id']}/test"
    await client.post(test, headers=world.partner)
    assert (await get(world, reg["id"]))["status"] == "Active"
    await client.post(test, headers=world.partner)
    after = await get(world, reg["id"])
    assert after["status"] == "Suspended"
    assert after["failureCount"] == 0  # failureCount counts delivery attempts only
    # without a threshold, failing tests change nothing
    for _ in range(3):
        await client.post(f"/webhooks/v1/registrations/{plain['id']}/test", headers=world.partner)
    assert (await get(world, plain["id"]))["status"] == "Active"
    # a success resets the count
    other = await world.register(receiver.url, delivery={"suspendAfterConsecutiveFailures": 2})
    await client.post(f"/webhooks/v1/registrations/{other['id']}/test", headers=world.partner)
    receiver.behaviour = None
    await client.post(f"/webhooks/v1/registrations/{other['id']}/test", headers=world.partner)
    receiver.behaviour = broken
    await client.post(f"/webhooks/v1/registrations/{other['id']}/test", headers=world.partner)
    assert (await get(world, other["id"]))["status"] == "Active"
    assert (
        await db.fetchval(
            "SELECT consecutive_failures FROM registrations WHERE id = $1::uuid", other["id"]
        )
        == 1
    )
