"""Hostile receivers: each ends as a recorded failed attempt and never blocks other registrations.

Hangs, slow drips (of the body and of the status line), a 50 MB body, redirects towards private
addresses, DNS names that resolve to private addresses at connect time, and TLS failures. Every
receiver is a real server on 127.0.0.1; a healthy registration of another partner keeps receiving
while the hostile ones are still holding their connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.conftest import TEST_KEYS, World, make_world, wait_until

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
HUGE = 50 * 1024 * 1024


@dataclass
class Hostile:
    """Scoreboard of one hostile endpoint."""

    url: str = ""
    requests: int = 0
    open: int = 0  # requests whose connection the broker still holds
    bytes_sent: int = 0
    notes: list[str] = field(default_factory=list)


class Servers:
    def __init__(self) -> None:
        self._servers: list[TestServer] = []
        self._raw: list[asyncio.Server] = []

    async def http(self, handler: Handler, **kwargs: Any) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        server = TestServer(app, host="127.0.0.1", **kwargs)
        await server.start_server(**({"ssl": kwargs["ssl"]} if "ssl" in kwargs else {}))
        self._servers.append(server)
        return f"127.0.0.1:{server.port}"

    async def raw(
        self, handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
    ) -> str:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        self._raw.append(server)
        return f"127.0.0.1:{server.sockets[0].getsockname()[1]}"

    async def close(self) -> None:
        for raw in self._raw:
            raw.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.close(), timeout=5)


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    made = Servers()
    yield made
    await made.close()


async def _until_disconnected(request: web.Request, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        await asyncio.sleep(0.05)


def hang(board: Hostile, seconds: float = 30) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        board.requests += 1
        board.open += 1
        try:
            await request.read()
            await _until_disconnected(request, seconds)
        finally:
            board.open -= 1
        return web.Response(text="too late")

    return handle


def drip_body(board: Hostile) -> Handler:
    """200 headers at once, then one byte of body every 0.5 s."""

    async def handle(request: web.Request) -> web.StreamResponse:
        board.requests += 1
        board.open += 1
        await request.read()
        response = web.StreamResponse(status=200)
        response.content_length = 10_000
        try:
            await response.prepare(request)
            for _ in range(120):
                transport = request.transport
                if transport is None or transport.is_closing():
                    break
                await response.write(b"x")
                board.bytes_sent += 1
                await asyncio.sleep(0.5)
        except (ConnectionError, RuntimeError):
            pass
        finally:
            board.open -= 1
        return response

    return handle


def huge_body(board: Hostile) -> Handler:
    """A 500 with a 50 MB body, streamed as fast as the broker reads it."""

    async def handle(request: web.Request) -> web.StreamResponse:
        board.requests += 1
        await request.read()
        response = web.StreamResponse(status=500)
        response.content_length = HUGE
        chunk = b"A" * 65536
        try:
            await response.prepare(request)
            while board.bytes_sent < HUGE:
                transport = request.transport
                if transport is None or transport.is_closing():
                    break
                await response.write(chunk)
                board.bytes_sent += len(chunk)
        except (ConnectionError, RuntimeError):
            pass
        return response

    return handle


def redirect(board: Hostile, location: str) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        board.requests += 1
        await request.read()
        return web.Response(status=302, headers={"Location": location})

    return handle


def record(board: Hostile) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        board.requests += 1
        board.notes.append(str(time.monotonic()))
        await request.read()
        return web.Response(text="ok")

    return handle


def drip_status_line(
    board: Hostile,
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """A raw server that answers 'HTTP/1.1 200 OK' one byte every 0.5 s, headers never end."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        board.requests += 1
        board.open += 1
        try:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reader.read(65536), timeout=5)
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"y" * 100:
                if writer.is_closing():
                    break
                writer.write(bytes([byte]))
                await writer.drain()
                board.bytes_sent += 1
                if reader.at_eof():
                    break
                await asyncio.sleep(0.5)
        except (ConnectionError, OSError):
            pass
        finally:
            board.open -= 1
            writer.close()

    return handle


def raw_reply(
    board: Hostile, reply: bytes
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """A raw server that answers with ``reply`` whatever was asked, then closes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        board.requests += 1
        try:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reader.read(65536), timeout=5)
            writer.write(reply)
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    return handle


def self_signed(tmp_path: Path) -> ssl.SSLContext:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def first_attempt(client: TestClient, world: World, registration_id: str) -> dict[str, Any]:
    """The first recorded attempt of the registration's (only) event, once it exists."""
    found: dict[str, Any] = {}

    async def recorded() -> bool:
        resp = await client.get(
            "/webhooks/v1/events", params={"registrationId": registration_id}, headers=world.partner
        )
        events = (await resp.json())["data"]
        if not events:
            return False
        resp = await client.get(
            f"/webhooks/v1/events/{events[0]['id']}/attempts", headers=world.partner
        )
        attempts = (await resp.json())["data"]
        if attempts:
            found.update(attempts[0], eventStatus=events[0]["status"])
        return bool(attempts)

    await wait_until(recorded, timeout=15, interval=0.1)
    return found


async def test_hostile_receivers_fail_cleanly_and_block_no_one(make_client, servers, tmp_path):
    # One attempt each within the test: the first retry is far away.
    client = await make_client(workers=True, delivery_timeout_seconds=4.0, retry_schedule=(60.0,))
    acme = await make_world(client)
    other = await make_world(client)

    boards = {
        name: Hostile()
        for name in (
            "hang",
            "drip_body",
            "drip_status",
            "huge",
            "redirect_canary",
            "redirect_metadata",
            "tls_plain",
            "tls_self_signed",
            "huge_headers",
            "garbage",
            "canary",
            "healthy",
        )
    }
    canary = await servers.http(record(boards["canary"]))
    urls = {
        "hang": "http://" + await servers.http(hang(boards["hang"])) + "/hook",
        "drip_body": "http://" + await servers.http(drip_body(boards["drip_body"])) + "/hook",
        "drip_status": "http://"
        + await servers.raw(drip_status_line(boards["drip_status"]))
        + "/hook",
        "huge": "http://" + await servers.http(huge_body(boards["huge"])) + "/hook",
        "redirect_canary": "http://"
        + await servers.http(redirect(boards["redirect_canary"], f"http://{canary}/stolen"))
        + "/hook",
        "redirect_metadata": "http://"
        + await servers.http(
            redirect(boards["redirect_metadata"], "http://169.254.169.254/latest/meta-data/")
        )
        + "/hook",
        # TLS spoken to a plain-HTTP server, and to a server with a self-signed certificate.
        "tls_plain": "https://" + await servers.http(record(boards["tls_plain"])) + "/hook",
        "tls_self_signed": "https://"
        + await servers.http(record(boards["tls_self_signed"]), ssl=self_signed(tmp_path))
        + "/hook",
        # A 1 MB header line, and bytes that are not HTTP at all.
        "huge_headers": "http://"
        + await servers.raw(
            raw_reply(
                boards["huge_headers"],
                b"HTTP/1.1 200 OK\r\nX-Big: " + b"b" * 1_000_000 + b"\r\n\r\n",
            )
        )
        + "/hook",
        "garbage": "http://"
        + await servers.raw(raw_reply(boards["garbage"], b"\x00\xff SSH-2.0-nonsense\r\n\r\n"))
        + "/hook",
    }
    healthy_url = "http://" + await servers.http(record(boards["healthy"])) + "/hook"
    regs = {name: (await acme.register(url))["id"] for name, url in urls.items()}
    healthy = await other.register(healthy_url)

    await acme.emit(["core/v1/dda/accounts/1", "core/v1/dda/accounts/2"])
    await wait_until(
        lambda: _true(
            boards["hang"].open and boards["drip_body"].open and boards["drip_status"].open
        ),
        timeout=10,
    )

    # While three hostile receivers hold their connections, another partner is served at once.
    await other.emit(["core/v1/dda/accounts/9"])
    await wait_until(lambda: _true(boards["healthy"].requests >= 1), timeout=10)
    assert boards["hang"].open and boards["drip_body"].open and boards["drip_status"].open

    attempts = {name: await first_attempt(client, acme, reg_id) for name, reg_id in regs.items()}
    for name, attempt in attempts.items():
        assert attempt["error"], (name, attempt)
        assert attempt["durationMs"] < 4000 + 1500, (name, attempt)  # bounded by the timeout
        assert attempt["responseBody"] is None or len(attempt["responseBody"].encode()) <= 1024
    assert "timeout" in attempts["hang"]["error"]
    assert (
        "timeout" in attempts["drip_body"]["error"]
        and attempts["drip_body"]["responseStatus"] == 200
    )
    assert "timeout" in attempts["drip_status"]["error"]
    # The 50 MB body: a 1 KiB excerpt read, the connection dropped, no waiting for the rest.
    huge = attempts["huge"]
    assert huge["responseStatus"] == 500 and huge["responseBody"] == "A" * 1024
    assert huge["durationMs"] < 2000
    # Redirects are failures and are never followed.
    for name in ("redirect_canary", "redirect_metadata"):
        assert attempts[name]["responseStatus"] == 302
        assert "redirect" in attempts[name]["error"]
    assert boards["redirect_canary"].requests == 1 and boards["redirect_metadata"].requests == 1
    assert boards["canary"].requests == 0
    for name in ("tls_plain", "tls_self_signed"):
        assert attempts[name]["responseStatus"] is None
        assert "TLS" in attempts[name]["error"] or "SSL" in attempts[name]["error"], attempts[name]
    assert "certificate" in attempts["tls_self_signed"]["error"].lower()
    assert boards["tls_plain"].requests == 0 and boards["tls_self_signed"].requests == 0
    for name in ("huge_headers", "garbage"):
        assert attempts[name]["responseStatus"] is None and "timeout" not in attempts[name]["error"]

    # Once the hostile connections are dropped, the broker has stopped talking to them.
    await wait_until(lambda: _true(not any(b.open for b in boards.values())), timeout=10)
    assert boards["huge"].bytes_sent < HUGE // 2
    # The healthy registration's event is a Success with a single attempt.
    resp = await client.get(
        "/webhooks/v1/events", params={"registrationId": healthy["id"]}, headers=other.partner
    )
    [event] = (await resp.json())["data"]
    assert event["status"] == "Success"


async def _true(value: object) -> bool:
    return bool(value)


async def test_private_addresses_are_refused_at_connect_time(make_client, receiver):
    """Registered while private URLs were allowed, delivered by a worker that does not allow them:
    the connector itself refuses, whatever name led to the address."""
    registrar = await make_client(workers=False, allow_private_urls=True)
    await make_client(workers=True, allow_private_urls=False)
    deliverer = await make_client(workers=False, allow_private_urls=False)
    world = await make_world(registrar)
    port = receiver.url.split(":")[2].split("/")[0]
    urls = [
        f"http://localhost:{port}/hook",  # a DNS name (via /etc/hosts) that resolves to 127.0.0.1
        f"http://127.0.0.1:{port}/hook",
        f"http://2130706433:{port}/hook",  # 127.0.0.1 spelled as one number
    ]
    regs = [await world.register(url) for url in urls]
    await world.emit(["core/v1/dda/accounts/1"])
    for reg in regs:
        attempt = await first_attempt(registrar, world, reg["id"])
        assert attempt["responseStatus"] is None
        assert "non-public" in attempt["error"], attempt
    # The synchronous test delivery goes through the same connector.
    for reg in regs:
        resp = await deliverer.post(
            f"/webhooks/v1/registrations/{reg['id']}/test", headers=world.partner
        )
        body = await resp.json()
        assert resp.status == 200 and body["success"] is False
        assert "non-public" in body["attempt"]["error"]
    assert receiver.received == []


async def test_per_registration_in_flight_cap(make_client, servers):
    """A slow registration gets at most ``delivery_per_registration`` requests at once; the others
    are not held back by its queue."""
    names = [f"Core.Kind{i}.Changed" for i in range(8)]
    client = await make_client(workers=True, delivery_per_registration=2)
    slow_world = await make_world(client, event_types=tuple(names))
    fast_world = await make_world(client, event_types=tuple(names[:1]))
    in_flight = 0
    peak = 0
    arrivals = 0

    async def slow(request: web.Request) -> web.StreamResponse:
        nonlocal in_flight, peak, arrivals
        arrivals += 1
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await asyncio.sleep(0.6)
        finally:
            in_flight -= 1
        return web.Response(text="ok")

    fast_board = Hostile()
    slow_url = "http://" + await servers.http(slow) + "/hook"
    fast_url = "http://" + await servers.http(record(fast_board)) + "/hook"
    await slow_world.register(slow_url, ["Core.*"])
    await fast_world.register(fast_url)
    for name in names:
        await slow_world.emit([f"core/v1/{name}/1"], event_name=name)
    await wait_until(lambda: _true(in_flight >= 2), timeout=10)
    await fast_world.emit(["core/v1/fast/1"])
    await wait_until(lambda: _true(fast_board.requests >= 1), timeout=5)
    assert arrivals < len(names)  # the slow queue was still draining
    await wait_until(lambda: _true(arrivals >= len(names)), timeout=20)
    assert peak == 2


async def test_per_registration_cap_holds_across_concurrent_claimers(db_url, db):
    """Three workers (three pools) claiming at the same moment never put more than the cap of
    one registration in flight between them."""
    from broker.store.db import create_pool
    from broker.store.store import Store

    partner, registration = uuid.uuid4(), uuid.uuid4()
    await db.execute("INSERT INTO partners (id, name) VALUES ($1, 'p')", partner)
    await db.execute(
        "INSERT INTO registrations (id, partner_id, url, event_types, secret_sealed)"
        " VALUES ($1, $2, 'http://127.0.0.1:9/', '{*}', $3)",
        registration,
        partner,
        TEST_KEYS.seal("whsec_eA==", row=registration, column="secret"),
    )
    stores = [Store(await create_pool(db_url, size=2), keys=TEST_KEYS) for _ in range(3)]
    try:
        for _ in range(40):
            await db.execute("DELETE FROM delivery_queue")
            await db.execute("DELETE FROM events")
            await db.execute(
                "INSERT INTO events (id, partner_id, registration_id, event_name)"
                " SELECT broker_uuid7(now()), $1, $2, 'Core.Account.Opened'"
                " FROM generate_series(1, 20)",
                partner,
                registration,
            )
            await db.execute(  # queued: what the window close does with them
                "INSERT INTO delivery_queue (event_id, registration_id, created_at,"
                " next_attempt_at) SELECT id, registration_id, created_at, created_at FROM events"
            )
            await db.execute(
                "INSERT INTO delivery_ready (registration_id, next_due_at) VALUES ($1, now())"
                " ON CONFLICT (registration_id) DO UPDATE SET next_due_at = now(), in_flight = 0",
                registration,
            )
            claims = await asyncio.gather(
                *(
                    store.claim_deliveries(
                        limit=10, per_registration=2, lease_seconds=30, worker_id=f"w{i}"
                    )
                    for i, store in enumerate(stores)
                )
            )
            assert sum(len(c) for c in claims) == 2
    finally:
        for store in stores:
            await store.pool.close()
