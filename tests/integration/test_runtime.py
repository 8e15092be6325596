"""The composition root: what each role runs, the housekeeping leader lease, the admin token,
and the pool's acquire timeout (a starved pool answers 503 at once instead of hanging)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Awaitable, Callable

import asyncpg

from broker.runtime import Runtime, running
from broker.workers.housekeeping import LEASE_NAME
from tests.conftest import (
    admin_headers,
    bearer,
    make_settings,
    make_world,
    runtime_of,
    serving_runtime,
    wait_until,
)


async def test_worker_role_runs_the_workers_and_serves_only_the_service_routes(make_client):
    client = await make_client(role="worker")
    runtime = runtime_of(client)
    assert runtime.ingest is None  # no ingest group commit in a worker
    assert runtime.delivery is not None and runtime.aggregator is not None
    assert runtime.housekeeping is not None
    assert (await client.get("/readyz")).status == 200
    assert (await client.get("/metrics")).status == 200
    for method, path in (
        ("POST", "/internal/v1/resource-events"),
        ("GET", "/admin/v1/partners"),
        ("GET", "/webhooks/v1/registrations"),
    ):
        resp = await client.request(method, path, headers=admin_headers(), json={"events": []})
        assert resp.status == 404, (method, path)
        assert resp.content_type == "application/problem+json"


async def test_api_role_runs_no_worker_and_takes_no_lease(make_client, db):
    client = await make_client(role="api")
    runtime = runtime_of(client)
    assert runtime.ingest is not None
    assert runtime.delivery is None and runtime.aggregator is None
    assert runtime.housekeeping is None
    world = await make_world(client)
    await world.emit(["core/v1/a/1"])  # ingest works without any worker in this process
    assert await db.fetchval("SELECT count(*) FROM resource_events") == 1
    await asyncio.sleep(0.3)
    assert await db.fetchval("SELECT count(*) FROM leader_leases") == 0


async def leader_holder(db: asyncpg.Connection) -> str | None:
    holder: str | None = await db.fetchval(
        "SELECT holder FROM leader_leases WHERE name = $1 AND expires_at > now()", LEASE_NAME
    )
    return holder


def leading(runtime: Runtime) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return runtime.housekeeping is not None and runtime.housekeeping.is_leader

    return check


async def test_housekeeping_runs_in_one_process_and_moves_when_it_stops(db_url, db):
    settings = make_settings(leader_lease_seconds=1.0)
    first_stack = contextlib.AsyncExitStack()
    first = await first_stack.enter_async_context(running(settings, url=db_url, role="worker"))
    try:
        assert first.housekeeping is not None
        await wait_until(leading(first), timeout=5)
        async with running(settings, url=db_url, role="all") as second:
            assert second.housekeeping is not None
            # Several renewals later the first still holds it, and only it runs the jobs.
            await asyncio.sleep(1.5)
            assert first.housekeeping.is_leader
            assert not second.housekeeping.is_leader
            assert await leader_holder(db) == first.name
            # A clean stop releases the lease: the other process takes over at its next try
            # (a third of the lease), not after the lease would have expired.
            await first_stack.aclose()
            stopped = time.monotonic()
            await wait_until(leading(second), timeout=5)
            assert time.monotonic() - stopped < 1.0
            assert await leader_holder(db) == second.name
            assert second.housekeeping.jobs is not None and second.housekeeping.jobs.running
        # Stopping releases it.
        assert await db.fetchval("SELECT count(*) FROM leader_leases") == 0
    finally:
        await first_stack.aclose()


async def test_a_dead_leaders_lease_is_taken_over_once_it_expires(db_url, db):
    # A holder that died without releasing: its row stays until expires_at passes.
    await db.execute(
        "INSERT INTO leader_leases (name, holder, expires_at)"
        " VALUES ($1, 'dead-host:4242:abcdef', now() + interval '1.5 seconds')",
        LEASE_NAME,
    )
    settings = make_settings(leader_lease_seconds=1.0)
    async with running(settings, url=db_url, role="worker") as survivor:
        assert survivor.housekeeping is not None
        await asyncio.sleep(0.8)
        assert not survivor.housekeeping.is_leader  # not while the dead holder's lease runs
        assert await leader_holder(db) == "dead-host:4242:abcdef"
        await wait_until(leading(survivor), timeout=5)
        assert await leader_holder(db) == survivor.name


async def test_renewing_keeps_the_lease_and_its_start_time(db_url, db):
    settings = make_settings(leader_lease_seconds=1.0)
    async with running(settings, url=db_url, role="worker") as runtime:
        await wait_until(leading(runtime), timeout=5)
        first = await db.fetchrow("SELECT acquired_at, expires_at FROM leader_leases")
        await asyncio.sleep(0.8)  # at least one renewal (every third of a second)
        later = await db.fetchrow("SELECT acquired_at, expires_at FROM leader_leases")
        assert later["acquired_at"] == first["acquired_at"]
        assert later["expires_at"] > first["expires_at"]
        # Someone else may not take a live lease.
        assert not await runtime.store.take_lease(LEASE_NAME, "intruder", 1.0)


async def test_a_generated_admin_token_is_made_once_per_database_and_accepted_by_every_process(
    db_url, db
):
    settings = make_settings(admin_token=None)
    async with (
        serving_runtime(settings, db_url, role="api") as (first, first_client),
        serving_runtime(settings, db_url, role="all") as (second, second_client),
    ):
        token = first.generated_admin_token
        assert token is not None and token.startswith("bk_admin_")
        assert second.generated_admin_token is None  # the second process sees no secret
        stored = await db.fetch("SELECT token_hash FROM admin_token")
        assert [bytes(r["token_hash"]) for r in stored] == [hashlib.sha256(token.encode()).digest()]
        for client in (first_client, second_client):
            resp = await client.get("/admin/v1/partners", headers=bearer(token))
            assert resp.status == 200, await resp.text()
            resp = await client.get("/admin/v1/partners", headers=bearer(token + "x"))
            assert resp.status == 401
    # A restart generates nothing new either.
    async with running(settings, url=db_url, role="api") as third:
        assert third.generated_admin_token is None
        assert third.admin_token_hash == hashlib.sha256(token.encode()).digest()
    assert await db.fetchval("SELECT count(*) FROM admin_token") == 1


async def test_a_configured_admin_token_is_neither_stored_nor_replaced(make_client, db):
    client = await make_client()
    assert runtime_of(client).generated_admin_token is None
    assert await db.fetchval("SELECT count(*) FROM admin_token") == 0
    assert (await client.get("/admin/v1/partners", headers=admin_headers())).status == 200


async def test_a_starved_pool_answers_503_with_retry_after_promptly(make_client, db):
    client = await make_client(db_pool_size=2, db_acquire_timeout_seconds=0.3)
    world = await make_world(client)
    pool = runtime_of(client).store.pool
    held = [await pool.acquire(timeout=5) for _ in range(2)]  # every connection the pool has
    try:
        for method, path, headers, body in (
            ("GET", "/webhooks/v1/registrations", world.partner, None),
            (
                "POST",
                "/internal/v1/resource-events",
                world.producer,
                {
                    "events": [
                        {
                            "partnerId": world.partner_id,
                            "eventName": world.event_name,
                            "resource": "core/v1/a/1",
                        }
                    ]
                },
            ),
            ("GET", "/readyz", {}, None),
        ):
            started = time.monotonic()
            resp = await client.request(method, path, headers=headers, json=body)
            elapsed = time.monotonic() - started
            assert resp.status == 503, (path, await resp.text())
            assert resp.headers["Retry-After"].isdigit()
            assert resp.content_type == "application/problem+json"
            problem = await resp.json()
            assert problem["status"] == 503 and problem["detail"]
            assert elapsed < 3, f"{path} took {elapsed:.1f}s"
    finally:
        for conn in held:
            await pool.release(conn)
    # Nothing of the refused ingest was stored, and the pool serves again once released.
    assert await db.fetchval("SELECT count(*) FROM resource_events") == 0
    resp = await client.get("/webhooks/v1/registrations", headers=world.partner)
    assert resp.status == 200
