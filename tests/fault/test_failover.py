"""Database failover: the primary's machine dies, the synchronous standby is promoted.

broker runs against ``postgresql://primary,standby/db?target_session_attrs=read-write`` (two real
``broker serve`` processes, producers and a receiver under load). The primary and every backend
get SIGKILL at once, the standby is promoted a moment later, and then: nothing that was
acknowledged (202) is lost, no event object that existed is lost, every event object is delivered
at least once, the broker answers only 202 or 503 problem+json with Retry-After during the switch
(never a 500, never a hang), and it recovers by itself, ingest and delivery both, within 10 s of
the promotion.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from tests.fault.harness import (
    Ledger,
    ScoringReceiver,
    all_events,
    make_world,
    produce,
    report,
    settle_and_verify,
)
from tests.fault.pg import ReplicatedPostgres, server_binaries

pytestmark = [pytest.mark.fault, pytest.mark.timeout(150)]

EVENT_NAMES = ["Core.Account.Opened", "Core.Card.Issued", "Core.Loan.Funded", "Core.Ach.Settled"]
# Small windows, so that the load makes many event objects (a window closes at 100 resources).
WINDOW_ENV = {"BROKER_WINDOW_MAX_RESOURCES": "100"}
PER_REQUEST_TIMEOUT = 10.0
# How long the "machine" is gone before the standby is promoted (an operator or an orchestrator
# noticing); broker must answer 503 throughout.
DETECTION_SECONDS = 2.0
RECOVERY_BUDGET = 10.0


@pytest.fixture
def replicated_pg() -> Iterator[ReplicatedPostgres]:
    if server_binaries() is None:
        pytest.skip("no PostgreSQL server binaries: neither pgserver's wheel nor Debian's")
    pair = ReplicatedPostgres()
    try:
        yield pair.start()
    finally:
        pair.destroy()


async def _first_after(predicate, since: float, budget: float) -> float | None:
    """Seconds from ``since`` until ``predicate()`` holds (polled), or None past ``budget``."""
    while time.monotonic() - since < budget + 5:
        if predicate():
            return time.monotonic() - since
        await asyncio.sleep(0.02)
    return None


async def test_failover_to_a_synchronous_standby_loses_nothing(replicated_pg, brokers, http):
    receivers = [await ScoringReceiver().start() for _ in range(3)]
    try:
        url = replicated_pg.url
        first = brokers.spawn(url, name="all-a", **WINDOW_ENV)
        second = brokers.spawn(url, name="all-b", **WINDOW_ENV)
        await first.wait_ready()
        await second.wait_ready()
        world = await make_world(
            http, first.url, event_names=EVENT_NAMES, receiver_urls=[r.url for r in receivers]
        )
        bases = [first.url, second.url]

        def delivered() -> int:
            return sum(len(r.deliveries) for r in receivers)

        turn = iter(range(10**9))
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
                    base_url=lambda: bases[next(turn) % 2],
                )
            )
            for i in range(4)
        ]
        await asyncio.sleep(3.0)
        assert len(ledger.acked) > 0 and delivered(), brokers.logs()
        before = {e["id"] for e in await all_events(http, world)}
        assert before, "no event object existed before the failover"

        replicated_pg.primary.kill()
        killed_at = time.monotonic()
        statuses_at_kill = ledger.statuses.copy()
        await asyncio.sleep(DETECTION_SECONDS)
        replicated_pg.standby.promote()
        promoted_at = time.monotonic()
        acked_at_promotion = len(ledger.acked)
        delivered_at_promotion = delivered()

        ingest_back = await _first_after(
            lambda: len(ledger.acked) > acked_at_promotion, promoted_at, RECOVERY_BUDGET
        )
        delivery_back = await _first_after(
            lambda: delivered() > delivered_at_promotion, promoted_at, RECOVERY_BUDGET
        )
        during = ledger.statuses - statuses_at_kill
        await asyncio.sleep(2.0)  # load goes on after the switch
        stop.set()
        await asyncio.wait_for(asyncio.gather(*producers), timeout=PER_REQUEST_TIMEOUT + 5)

        assert first.running and second.running, brokers.logs()
        assert ledger.bad == [], ledger.bad[:5]  # only 202 and 503 + Retry-After, no hang
        assert not ledger.errors, ledger.errors  # the broker never dropped a connection
        assert during[503] >= 1, f"expected 503s during the switch, got {during}"
        assert ingest_back is not None and ingest_back <= RECOVERY_BUDGET, (
            f"ingest not back within {RECOVERY_BUDGET}s of the promotion:\n{brokers.logs()}"
        )
        assert delivery_back is not None and delivery_back <= RECOVERY_BUDGET, (
            f"delivery not back within {RECOVERY_BUDGET}s of the promotion:\n{brokers.logs()}"
        )

        verdict = await settle_and_verify(http, world, receivers, ledger, timeout=60)
        assert verdict.lost == 0
        after = {e["id"] for e in await all_events(http, world)}
        assert before <= after, f"event objects lost: {sorted(before - after)[:5]}"
        received = set().union(*(r.ids().keys() for r in receivers))
        assert after <= received, "an event object was never delivered"
        report(
            verdict.line("database-failover")
            + f" events_before_kill={len(before)} answered_503={during[503]}"
            + f" outage={promoted_at - killed_at:.2f}s+"
            + f" ingest_back_after_promotion={ingest_back:.2f}s"
            + f" delivery_back_after_promotion={delivery_back:.2f}s"
        )
    finally:
        for receiver in receivers:
            await receiver.close()
