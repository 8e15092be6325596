"""The receivers of docs/receiving.md, run as written, accept real deliveries and refuse forgeries.

Each ``docs/receivers/*.py`` is imported from its file, its ``make_app`` served on 127.0.0.1, and
the broker delivers to it with the registration settings the page shows. A forged request (wrong
secret, wrong token) gets the receiver's refusal. If a receiver stops working with what broker
sends, or with the libraries we ship, this test says so.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib.util
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import ModuleType
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from broker.domain.signing import generate_secret
from tests.conftest import ROOT, make_world, wait_until

RECEIVERS = ROOT / "docs" / "receivers"
RESOURCES = ["core/v1/dda/accounts/2001231231", "core/v1/dda/accounts/2001231232"]


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"docs_receiver_{name}", RECEIVERS / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/hook"))
    finally:
        await server.close()


async def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as r,
    ):
        return r.status


def delivered(world: Any, registration_id: str | None = None) -> Callable[[], Any]:
    query = f"&registrationId={registration_id}" if registration_id else ""

    async def check() -> bool:
        resp = await world.client.get(
            f"/webhooks/v1/events?status=Success{query}", headers=world.partner
        )
        return len((await resp.json())["data"]) == 1

    return check


def printed_event(capsys: Any, seen: list[str]) -> Callable[[], Any]:
    async def check() -> bool:
        seen.append(capsys.readouterr().out)
        return f"Core.Account.Opened {RESOURCES!r}" in "".join(seen)

    return check


def test_the_page_shows_every_receiver_and_each_exists():
    page = (ROOT / "docs" / "receiving.md").read_text()
    linked = set(re.findall(r"\(receivers/([a-z_]+\.py)\)", page))
    assert linked == {p.name for p in RECEIVERS.glob("*.py")}
    assert linked == {"standard_webhooks.py", "hmac_hex.py", "basic_auth.py"}


async def test_standard_webhooks_receiver(make_client, capsys):
    client = await make_client(workers=True)
    world = await make_world(client)
    secret = generate_secret()
    async with serving(load("standard_webhooks").make_app(secret)) as url:
        await world.register(url, secret=secret)
        await world.emit(RESOURCES)
        await wait_until(printed_event(capsys, []))
        await wait_until(delivered(world))
        forged = {
            "webhook-id": "msg_forged",
            "webhook-timestamp": str(int(time.time())),
            "webhook-signature": "v1,bm90IGEgcmVhbCBzaWduYXR1cmU=",
        }
        assert await post(url, b'{"id": "x"}', forged) == 400


async def test_basic_auth_receiver(make_client, capsys):
    client = await make_client(workers=True)
    world = await make_world(client)
    credentials = "broker:a-long-random-password"
    async with serving(load("basic_auth").make_app(credentials)) as url:
        # as on the page: no signature, the Basic token, one attempt within 5 s
        await world.register(
            url,
            basicAuth=credentials,
            signature={"scheme": "none"},
            delivery={"timeoutSeconds": 5, "retrySchedule": []},
        )
        await world.emit(RESOURCES)
        await wait_until(printed_event(capsys, []))
        await wait_until(delivered(world))
        wrong = base64.b64encode(b"broker:guessed").decode()
        assert await post(url, b'{"id": "x"}', {"Authorization": f"Basic {wrong}"}) == 401
        assert await post(url, b'{"id": "x"}', {}) == 401


async def test_hmac_hex_receiver(make_client, capsys):
    client = await make_client(workers=True)
    world = await make_world(client)
    secret = "the-secret-your-receiver-already-holds"
    module = load("hmac_hex")
    hmac_scheme = {"scheme": "hmac-sha256-hex"}
    for signature, app in (
        # the messaging vendor's header, as on the page
        (
            {**hmac_scheme, "header": "X-Aerostic-Signature"},
            module.make_app(secret, header="X-Aerostic-Signature"),
        ),
        # the default header with a signed timestamp
        (
            {**hmac_scheme, "timestampHeader": "Request-Timestamp"},
            module.make_app(secret, timestamp_header="Request-Timestamp"),
        ),
    ):
        async with serving(app) as url:
            reg = await world.register(url, secret=secret, signature=signature)
            await world.emit(RESOURCES)
            await wait_until(printed_event(capsys, []))
            await wait_until(delivered(world, reg["id"]))
            # a rotation's grace period: two signatures in the header, the receiver still accepts
            resp = await client.post(
                f"/webhooks/v1/registrations/{reg['id']}/rotate-secret",
                json={"secret": "a-newer-secret-0123456789", "graceSeconds": 600},
                headers=world.partner,
            )
            assert resp.status == 200
            test = await client.post(
                f"/webhooks/v1/registrations/{reg['id']}/test", headers=world.partner
            )
            assert (await test.json())["success"] is True
            # forgeries: another secret, a changed body, an old timestamp
            header = signature.get("header", "X-Webhook-Signature")
            body = b'{"id": "x"}'
            now = int(time.time())
            wrong = {header: "sha256=" + hashlib.sha256(body).hexdigest()}
            if "timestampHeader" in signature:
                wrong["Request-Timestamp"] = str(now)
            assert await post(url, body, wrong) == 401
            if "timestampHeader" in signature:
                signed = hmac.new(secret.encode(), f"{now - 3600}.".encode() + body, hashlib.sha256)
                stale = {
                    header: "sha256=" + signed.hexdigest(),
                    "Request-Timestamp": str(now - 3600),
                }
                assert await post(url, body, stale) == 401
