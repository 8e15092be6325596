"""Database restart under load, on a private PostgreSQL (the shared server is never touched).

While PostgreSQL is down, ingest answers 503 problem+json with Retry-After promptly (never a 500,
never a hang); when it is back the same broker process recovers by itself (pool, LISTEN
connection, aggregator and delivery loops), and nothing that was acknowledged is lost.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from tests.fault.harness import (
    Ledger,
    ScoringReceiver,
    make_world,
    produce,
    report,
    settle_and_verify,
)

pytestmark = [pytest.mark.fault, pytest.mark.timeout(150)]

EVENT_NAMES = ["Core.Account.Opened", "Core.Card.Issued"]
PER_REQUEST_TIMEOUT = 10.0


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_postgres_restart_under_load(private_pg, brokers, http, mode):
    """``fast``: a clean restart (open sessions are terminated). ``immediate``: PostgreSQL
    crashes and replays its WAL on start."""
    receiver = await ScoringReceiver().start()
    try:
        broker = brokers.spawn(private_pg.url, name="all")
        await broker.wait_ready()
        world = await make_world(
            http, broker.url, event_names=EVENT_NAMES, receiver_urls=[receiver.url]
        )
        ledger = Ledger()
        stop = asyncio.Event()
        producers = [
            asyncio.create_task(
                produce(
                    http,
                    world,
                    ledger,
                    stop,
                    tag=f"p{i}",
                    per_request=10,
                    pause=0.02,
                    stop_on_error=False,
                    timeout=PER_REQUEST_TIMEOUT,
                )
            )
            for i in range(4)
        ]
        await asyncio.sleep(1.5)
        acked_before = len(ledger.acked)
        assert acked_before > 0, brokers.logs()

        private_pg.stop(mode)
        down_since = time.monotonic()
        statuses_before = ledger.statuses.copy()
        readyz: list[int] = []
        while time.monotonic() - down_since < 4.0:
            async with http.get(broker.url + "/readyz") as resp:
                readyz.append(resp.status)
            await asyncio.sleep(0.5)
        during = ledger.statuses - statuses_before
        private_pg.start()
        up_again = time.monotonic()
        acked_at_restart = len(ledger.acked)

        # Recovery without restarting the broker: new 202s within a bounded time.
        while len(ledger.acked) <= acked_at_restart + 200:
            assert time.monotonic() - up_again < 30, f"ingest did not recover:\n{brokers.logs()}"
            await asyncio.sleep(0.1)
        recovered_after = time.monotonic() - up_again
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*producers), timeout=PER_REQUEST_TIMEOUT + 5)

        assert broker.running, "the broker process must survive the database restart"
        assert during[503] >= 1, f"expected 503s while the database was down, got {during}"
        assert 503 in readyz
        assert ledger.bad == [], ledger.bad[:5]  # no 500, no other status, no hang
        assert ledger.slowest < PER_REQUEST_TIMEOUT
        assert not ledger.errors, ledger.errors  # never a dropped connection either

        verdict = await settle_and_verify(http, world, [receiver], ledger, timeout=60)
        assert verdict.lost == 0
        log = broker.log_text()
        report(
            verdict.line(f"postgres-restart-{mode}")
            + f" answered_503={ledger.statuses[503]} slowest_answer={ledger.slowest:.2f}s"
            + f" recovered_in={recovered_after:.2f}s"
            + f" worker_backoff_logged={'retrying' in log}"
        )
        # Workers noticed the outage and backed off instead of crashing.
        assert "retrying" in log or "reconnecting" in log

        async with http.get(broker.url + "/readyz") as resp:
            assert resp.status == 200
    finally:
        await receiver.close()


async def test_503_is_problem_json_with_retry_after(private_pg, brokers, http):
    """Every kind of request answers a clean 503 while the database is down."""
    broker = brokers.spawn(private_pg.url, name="all")
    await broker.wait_ready()
    receiver = await ScoringReceiver().start()
    try:
        world = await make_world(
            http, broker.url, event_names=EVENT_NAMES, receiver_urls=[receiver.url]
        )
        private_pg.stop("fast")
        probes = [
            (
                "POST",
                "/internal/v1/resource-events",
                world.producer_key,
                {
                    "events": [
                        {
                            "partnerId": world.partner_id,
                            "eventName": EVENT_NAMES[0],
                            "resource": "a/1",
                        }
                    ]
                },
            ),
            ("GET", "/webhooks/v1/registrations", world.partner_key, None),
            ("GET", "/webhooks/v1/events", world.partner_key, None),
            ("POST", "/admin/v1/partners", None, {"name": "x"}),
        ]
        from tests.fault.harness import ADMIN_TOKEN

        for method, path, key, body in probes:
            headers = {"Authorization": f"Bearer {key or ADMIN_TOKEN}"}
            started = time.monotonic()
            async with http.request(
                method,
                broker.url + path,
                json=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=PER_REQUEST_TIMEOUT),
            ) as resp:
                problem = await resp.json(content_type=None)
                assert resp.status == 503, (path, resp.status, problem)
                assert resp.content_type == "application/problem+json"
                assert int(resp.headers["Retry-After"]) >= 1
                assert {"title", "status", "detail"} <= problem.keys()
            assert time.monotonic() - started < PER_REQUEST_TIMEOUT
        private_pg.start()
        await broker.wait_ready(timeout=30)
    finally:
        await receiver.close()
