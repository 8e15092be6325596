"""Test fixtures: a real PostgreSQL per test, the broker app, real receivers on 127.0.0.1.

The database is ``BROKER_TEST_DATABASE_URL`` when set, else an embedded server (``pgserver``)
kept in ``.pytest-pg``. The migrations run once into a template database; each test gets a fresh
``CREATE DATABASE ... TEMPLATE`` copy (milliseconds) and it is dropped afterwards, so tests are
isolated and can run in parallel under pytest-xdist.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from broker.api.app import SERVER_LIMITS, create_app
from broker.config import Settings
from broker.crypto import KeyRing
from broker.domain.ids import utcnow, uuid7_at, uuid7_time
from broker.runtime import Runtime, running
from broker.store.db import MIGRATIONS_DIR, embedded_database_url, migrate

ADMIN_TOKEN = "test-admin-token-0123456789"
# The key ring every test app and `broker` subprocess shares (a fixed key, so that a process a
# test starts opens what the test's own app sealed). Tests of the key file set their own.
TEST_ENCRYPTION_KEY = "dGVzdC1lbmNyeXB0aW9uLWtleS0zMi1ieXRlcy0hISE="
TEST_KEYS_RAW = (base64.b64decode(TEST_ENCRYPTION_KEY),)
TEST_KEYS = KeyRing(TEST_KEYS_RAW, source="BROKER_ENCRYPTION_KEYS")
ROOT = Path(__file__).resolve().parents[1]


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@pytest.fixture(scope="session")
def base_database_url() -> str:
    url = os.environ.get("BROKER_TEST_DATABASE_URL")
    if url:
        return url
    return embedded_database_url(ROOT / ".pytest-pg")


@pytest.fixture(scope="session")
def template_database(base_database_url: str) -> Iterator[str]:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    name = f"broker_tpl_{worker}_{os.getpid()}"

    async def create() -> None:
        conn = await asyncpg.connect(base_database_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        conn = await asyncpg.connect(with_database(base_database_url, name))
        try:
            await migrate(conn)
        finally:
            await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(base_database_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(create())
    yield name
    asyncio.run(drop())


@contextlib.asynccontextmanager
async def scratch_database(
    base_url: str, *, prefix: str = "broker_t", template: str | None = None
) -> AsyncIterator[str]:
    """A new database (a copy of ``template``, or empty) for one test; dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:16]}"
    clause = f' TEMPLATE "{template}"' if template else ""
    conn = await asyncpg.connect(base_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"{clause}')
    finally:
        await conn.close()
    try:
        yield with_database(base_url, name)
    finally:
        conn = await asyncpg.connect(base_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


def migrations_before(version: str, into: Path) -> Path:
    """The migrations older than ``version``, copied into ``into``: a database migrated from
    there is what the release before ``version`` made (upgrade-in-place tests)."""
    for path in MIGRATIONS_DIR.glob("*.sql"):
        if path.name[:4] < version:
            shutil.copy(path, into / path.name)
    return into


@pytest.fixture
async def migration_conn(base_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a new, empty database that an upgrade test migrates step by step."""
    async with scratch_database(base_database_url, prefix="broker_m") as url:
        connection = await asyncpg.connect(url)
        try:
            yield connection
        finally:
            await connection.close()


@pytest.fixture
async def db_url(base_database_url: str, template_database: str) -> AsyncIterator[str]:
    async with scratch_database(base_database_url, template=template_database) as url:
        yield url


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection for asserting rows in PostgreSQL."""
    conn = await asyncpg.connect(db_url)
    yield conn
    await conn.close()


def make_settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "admin_token": ADMIN_TOKEN,
        "allow_private_urls": True,  # test receivers live on 127.0.0.1
        "window_min_seconds": 0.3,
        "window_max_seconds": 2.0,
        "retry_schedule": (0.1, 0.2),
        "retry_jitter": 0.0,
        "delivery_timeout_seconds": 2.0,
        "poll_interval_seconds": 0.2,
        "gauge_refresh_seconds": 0.05,
        "lease_margin_seconds": 1.0,
        "db_pool_size": 4,
        "encryption_keys": TEST_KEYS_RAW,
    }
    base.update(overrides)
    return Settings(**base)  # constructing validates


async def stored_secrets(
    db: asyncpg.Connection, registration_id: str | uuid.UUID
) -> dict[str, Any]:
    """A registration's sealed columns as stored, opened with the test key ring."""
    rid = uuid.UUID(str(registration_id))
    row = await db.fetchrow(
        "SELECT secret_sealed, previous_secret_sealed, basic_auth_sealed FROM registrations"
        " WHERE id = $1",
        rid,
    )
    assert row is not None
    return {
        "secret": TEST_KEYS.open(row["secret_sealed"], row=rid, column="secret"),
        "previous_secret": TEST_KEYS.open_optional(
            row["previous_secret_sealed"], row=rid, column="secret"
        ),
        "basic_auth": TEST_KEYS.open_optional(
            row["basic_auth_sealed"], row=rid, column="basic_auth"
        ),
    }


MakeClient = Callable[..., Awaitable[TestClient]]


@contextlib.asynccontextmanager
async def serving_runtime(
    settings: Settings, url: str, *, role: str
) -> AsyncIterator[tuple[Runtime, TestClient]]:
    """A runtime for ``role`` and a TestClient on its HTTP app; both stopped on the way out."""
    async with running(settings, url=url, role=role) as runtime:
        server = TestServer(create_app(runtime))
        await server.start_server(**SERVER_LIMITS)  # the limits broker serve runs with
        client = TestClient(server)
        await client.start_server()
        try:
            yield runtime, client
        finally:
            await client.close()


def runtime_of(client: TestClient) -> Runtime:
    """The runtime behind a client made by ``make_client`` (its pool, workers, housekeeping)."""
    from broker.api.appkeys import RUNTIME

    return client.server.app[RUNTIME]


@pytest.fixture
async def make_client(db_url: str) -> AsyncIterator[MakeClient]:
    """``await make_client(workers=True, window_min_seconds=1)`` -> a TestClient on the app.

    ``workers=False`` is the ``api`` role (HTTP and ingest), ``workers=True`` the ``all`` role;
    ``role=`` picks one explicitly (``worker``: workers and the service routes only).
    """
    async with contextlib.AsyncExitStack() as stack:

        async def factory(
            *, workers: bool = False, role: str | None = None, **overrides: Any
        ) -> TestClient:
            chosen = role or ("all" if workers else "api")
            _, client = await stack.enter_async_context(
                serving_runtime(make_settings(**overrides), db_url, role=chosen)
            )
            return client

        yield factory


@pytest.fixture
async def client(make_client: MakeClient) -> TestClient:
    return await make_client()


def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class World:
    """A partner, its key, a producer key and an event type, created through the admin API."""

    client: TestClient
    partner_id: str
    partner_key: str
    producer_key: str
    event_name: str = "Core.Account.Opened"

    @property
    def partner(self) -> dict[str, str]:
        return bearer(self.partner_key)

    @property
    def producer(self) -> dict[str, str]:
        return bearer(self.producer_key)

    async def register(
        self, url: str, event_types: list[str] | None = None, **extra: Any
    ) -> dict[str, Any]:
        resp = await self.client.post(
            "/webhooks/v1/registrations",
            json={"url": url, "eventTypes": event_types or [self.event_name], **extra},
            headers=self.partner,
        )
        assert resp.status == 201, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body

    async def emit(
        self, resources: list[str], event_name: str | None = None, **headers: str
    ) -> Any:
        resp = await self.client.post(
            "/internal/v1/resource-events",
            json={
                "events": [
                    {
                        "partnerId": self.partner_id,
                        "eventName": event_name or self.event_name,
                        "resource": r,
                    }
                    for r in resources
                ]
            },
            headers={**self.producer, **headers},
        )
        assert resp.status == 202, await resp.text()
        return await resp.json()


async def make_world(
    client: TestClient, *, event_types: tuple[str, ...] = ("Core.Account.Opened",)
) -> World:
    resp = await client.post("/admin/v1/partners", json={"name": "Acme"}, headers=admin_headers())
    assert resp.status == 201, await resp.text()
    partner = await resp.json()
    resp = await client.post(
        "/admin/v1/producer-keys", json={"name": "core"}, headers=admin_headers()
    )
    assert resp.status == 201, await resp.text()
    producer = await resp.json()
    for name in event_types:
        resp = await client.put(
            f"/admin/v1/event-types/{name}", json={"description": name}, headers=admin_headers()
        )
        assert resp.status in (200, 201), await resp.text()
    return World(
        client=client,
        partner_id=partner["id"],
        partner_key=partner["apiKey"],
        producer_key=producer["apiKey"],
        event_name=event_types[0],
    )


@pytest.fixture
async def world(client: TestClient) -> World:
    return await make_world(client)


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        import json

        return json.loads(self.body)


@dataclass
class Receiver:
    """A real HTTP receiver on 127.0.0.1 whose answers the test scripts."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    # Called per request; returns a web.StreamResponse. Default: 200 "ok".
    behaviour: Callable[[web.Request, int], Awaitable[web.StreamResponse]] | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.received.append(
            Received(headers=dict(request.headers), body=body, at=asyncio.get_running_loop().time())
        )
        self.arrived.set()
        if self.behaviour is not None:
            return await self.behaviour(request, len(self.received))
        return web.Response(text="ok")

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        async with asyncio.timeout(timeout):
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.received


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", rec.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    rec.url = str(server.make_url("/hook"))
    yield rec
    await server.close()


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], timeout: float = 10.0, interval: float = 0.05
) -> None:
    async with asyncio.timeout(timeout):
        # Polling is the point: the predicate reads PostgreSQL or HTTP, nothing signals it.
        while not await predicate():  # noqa: ASYNC110
            await asyncio.sleep(interval)


async def scrape_metrics(client: TestClient) -> dict[str, float]:
    """GET /metrics parsed into ``{'name{label="v",...}': value}`` (labels sorted; none: bare name).

    Counters live in process-wide registries, so tests compare values before and after.
    """
    from prometheus_client.parser import text_string_to_metric_families

    resp = await client.get("/metrics")
    assert resp.status == 200, await resp.text()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(await resp.text()):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


async def insert_event_rows(
    db: asyncpg.Connection, rows: Sequence[Mapping[str, Any]], *, queued: bool = False
) -> list[uuid.UUID]:
    """Event objects made directly in SQL, as a window close would make them (migration 0011):
    each row's resources in a window of its own, its id a uuid7 at its ``created_at`` (default
    now: created_at is derived from the id), and with ``queued`` its queue row. Row keys:
    partner_id, registration_id, event_name, and optionally resources, status, created_at,
    last_attempted_at, attempt_count, id."""
    ids = [
        uuid.UUID(str(r["id"])) if "id" in r else uuid7_at(r.get("created_at") or utcnow())
        for r in rows
    ]
    await ensure_partitions_for(db, ids)
    windows = [(i, r) for i, r in zip(ids, rows, strict=True) if r.get("resources")]
    if windows:
        await db.executemany(
            "INSERT INTO windows (id, partner_id, event_name, resources)"
            " VALUES ($1, $2::uuid, $3, $4)",
            [(i, str(r["partner_id"]), r["event_name"], list(r["resources"])) for i, r in windows],
        )
    await db.executemany(
        "INSERT INTO events (id, partner_id, registration_id, event_name, window_id, status,"
        " last_attempted_at, attempt_count)"
        " VALUES ($1, $2::uuid, $3::uuid, $4, $5, $6, $7, $8)",
        [
            (
                i,
                str(r["partner_id"]),
                str(r["registration_id"]),
                r["event_name"],
                i if r.get("resources") else None,
                r.get("status", "Pending"),
                r.get("last_attempted_at"),
                r.get("attempt_count", 0),
            )
            for i, r in zip(ids, rows, strict=True)
        ],
    )
    if queued:
        await db.execute(
            "INSERT INTO delivery_queue (event_id, registration_id, created_at, next_attempt_at)"
            " SELECT id, registration_id, created_at, created_at FROM events"
            " WHERE id = ANY($1::uuid[])",
            ids,
        )
    return ids


async def ensure_partitions_for(db: asyncpg.Connection, ids: Sequence[uuid.UUID]) -> None:
    """The day partitions that hold these uuid7 ids (housekeeping makes only those near now)."""
    if ids:
        times = [uuid7_time(i) for i in ids]
        await db.execute(
            "SELECT broker_ensure_history_partitions($1::date, $2::date)",
            min(times).date(),
            max(times).date(),
        )
