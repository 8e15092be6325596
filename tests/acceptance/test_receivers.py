"""The receivers of docs/receiving.md, run as written, accept real deliveries and refuse forgeries.

Each ``docs/receivers/*.py`` is imported from its file, its ``make_app`` served on 127.0.0.1, and
the broker delivers to it with the registration settings the page shows. A forged request (wrong
secret, wrong token) gets the receiver's refusal. If a receiver stops working with what broker
sends, or with the libraries we ship, this test says so.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import ModuleType
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from broker.domain.policy import SignaturePolicy, SignatureScheme, signature_spec
from broker.domain.signatures import signature_headers
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


def delivered(world: Any) -> Callable[[], Any]:
    async def check() -> bool:
        resp = await world.client.get("/webhooks/v1/events?status=Success", headers=world.partner)
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
        await world.register(url, basicAuth=credentials)
        await world.emit(RESOURCES)
        await wait_until(printed_event(capsys, []))
        await wait_until(delivered(world))
        wrong = base64.b64encode(b"broker:guessed").decode()
        assert await post(url, b'{"id": "x"}', {"Authorization": f"Basic {wrong}"}) == 401
        assert await post(url, b'{"id": "x"}', {}) == 401


async def test_hmac_hex_receiver(capsys):
    secret = "the-secret-your-receiver-already-holds"
    module = load("hmac_hex")
    body = (
        b'{"id":"0190a1b2-0000-7000-8000-000000000001","eventName":"Core.Account.Opened",'
        b'"resources":' + json.dumps(RESOURCES).encode() + b"}"
    )
    for policy, app in (
        (
            SignaturePolicy(scheme=SignatureScheme.HMAC_SHA256_HEX, header="X-Aerostic-Signature"),
            module.make_app(secret, header="X-Aerostic-Signature"),
        ),
        (
            SignaturePolicy(
                scheme=SignatureScheme.HMAC_SHA256_HEX, timestamp_header="Request-Timestamp"
            ),
            module.make_app(secret, timestamp_header="Request-Timestamp"),
        ),
    ):
        spec = signature_spec(policy)
        async with serving(app) as url:
            now = int(time.time())

            def signed(secrets: list[str], at: int = now, spec: Any = spec) -> dict[str, str]:
                return signature_headers(spec, msg_id="m", body=body, secrets=secrets, timestamp=at)

            assert await post(url, body, signed([secret])) == 200
            await wait_until(printed_event(capsys, []))
            # during a rotation the header holds two signatures; either secret is accepted
            assert await post(url, body, signed(["a-newer-secret-0123456789", secret])) == 200
            assert await post(url, body, signed(["not-the-secret-0123456789"])) == 401
            assert await post(url, body + b" ", signed([secret])) == 401
            if spec.timestamp_header:
                assert await post(url, body, signed([secret], at=now - 3600)) == 401
