"""Several processes on one database: one API process and three worker processes.

Every window is closed once, every event delivered, and no event is ever in the hands of two live
workers at once. SIGTERM drains a worker: it stops claiming and finishes (or releases) what it has
in flight within the grace period, so nothing it held is delivered twice.
"""

from __future__ import annotations

import asyncio
import re
import time

import asyncpg
import pytest

from tests.fault.harness import (
    Ledger,
    ScoringReceiver,
    make_world,
    produce,
    report,
    settle_and_verify,
)

pytestmark = [pytest.mark.fault, pytest.mark.timeout(120)]

EVENT_NAMES = ["Core.Account.Opened", "Core.Account.Closed", "Core.Card.Issued", "job.transaction"]


def attempts_metric(text: str) -> int:
    match = re.search(r'^broker_delivery_attempts_total\{outcome="success"\} (\S+)$', text, re.M)
    return int(float(match[1])) if match else 0


async def test_one_api_and_three_workers_share_the_work(brokers, db_url, http):
    receivers = [await ScoringReceiver(delay=0.1).start() for _ in range(2)]
    try:
        api = brokers.spawn(db_url, role="api", name="api")
        # A small per-registration cap makes the three workers compete for every registration.
        workers = [
            brokers.spawn(
                db_url, role="worker", name=f"worker{i}", BROKER_DELIVERY_PER_REGISTRATION="2"
            )
            for i in range(3)
        ]
        for process in (api, *workers):
            await process.wait_ready()
        world = await make_world(
            http,
            api.url,
            event_names=EVENT_NAMES,
            receiver_urls=[r.url for r in receivers for _ in range(3)],
        )
        ledger = Ledger()
        stop = asyncio.Event()
        producers = [
            asyncio.create_task(produce(http, world, ledger, stop, tag=f"p{i}", pause=0.05))
            for i in range(6)
        ]
        await asyncio.sleep(4.0)
        stop.set()
        await asyncio.gather(*producers)
        assert ledger.bad == [] and not ledger.errors

        verdict = await settle_and_verify(http, world, receivers, ledger)
        assert verdict.lost == 0
        # Every closed window became exactly one event object per registration.
        assert verdict.events == verdict.windows * len(world.registrations)
        # No event was ever sent by two workers at the same time, and none twice at all.
        assert [o for r in receivers for o in r.overlaps] == []
        assert verdict.duplicate_deliveries == 0
        per_worker = []
        for worker in workers:
            async with http.get(worker.url + "/metrics") as resp:
                per_worker.append(attempts_metric(await resp.text()))
        assert sum(per_worker) == verdict.deliveries
        for process in (api, *workers):
            assert process.running
        peak = max(r.max_per_registration for r in receivers)
        assert peak <= 2, "the per-registration cap is shared by all workers"
        report(
            verdict.line("three-workers")
            + f" attempts_per_worker={per_worker} peak_in_flight_per_registration={peak}"
        )
    finally:
        for receiver in receivers:
            await receiver.close()


async def test_sigterm_drains_a_worker_without_losing_or_repeating(brokers, db_url, db, http):
    # Deliveries take 1.5 s: inside the 2 s timeout and the 3 s drain grace period.
    receiver = await ScoringReceiver(delay=1.5).start()
    try:
        api = brokers.spawn(db_url, role="api", name="api")
        workers = [brokers.spawn(db_url, role="worker", name=f"worker{i}") for i in range(2)]
        for process in (api, *workers):
            await process.wait_ready()
        world = await make_world(
            http, api.url, event_names=EVENT_NAMES[:3], receiver_urls=[receiver.url] * 4
        )
        ledger = Ledger()
        stop = asyncio.Event()
        producers = [
            asyncio.create_task(produce(http, world, ledger, stop, tag=f"r1/{i}", pause=0.05))
            for i in range(2)
        ]
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*producers)

        # Wait for work in flight, then pick the worker holding the most leases.
        leases: list[asyncpg.Record] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            leases = await db.fetch(
                "SELECT event_id AS id, locked_by FROM delivery_queue WHERE locked_until > now()"
            )
            if len(leases) >= 4 and len(receiver.unanswered()) >= 2:
                break
            await asyncio.sleep(0.05)
        by_pid: dict[int, set[str]] = {}
        for row in leases:
            by_pid.setdefault(int(row["locked_by"].split(":")[1]), set()).add(str(row["id"]))
        assert by_pid, "nothing in flight"
        victim = max(workers, key=lambda w: len(by_pid.get(w.pid, ())))
        held = by_pid[victim.pid]
        survivor = next(w for w in workers if w is not victim)

        victim.terminate()
        sigterm_at = await db.fetchval("SELECT now()")
        started = time.monotonic()
        # New work arriving during the drain must go to the survivor only.
        stop = asyncio.Event()
        producers = [
            asyncio.create_task(produce(http, world, ledger, stop, tag=f"r2/{i}", pause=0.05))
            for i in range(2)
        ]
        claimed_late: set[str] = set()
        while victim.running and time.monotonic() - started < 20:
            rows = await db.fetch(
                "SELECT event_id AS id FROM delivery_queue WHERE locked_by LIKE $1"
                " AND created_at > $2",
                f"%:{victim.pid}:%",
                sigterm_at,
            )
            claimed_late |= {str(r["id"]) for r in rows}
            await asyncio.sleep(0.05)
        code = await victim.wait_exit(timeout=1)
        drained_in = time.monotonic() - started
        stop.set()
        await asyncio.gather(*producers)

        assert code == 0, victim.log_tail()
        assert claimed_late == set(), "a draining worker claimed new work"
        # What it held was finished and recorded by it: one attempt each, no redelivery.
        attempts = await db.fetch(
            "SELECT event_id::text, count(*) AS n FROM attempts WHERE event_id = ANY($1::uuid[])"
            " GROUP BY event_id",
            list(held),
        )
        assert {r["event_id"]: r["n"] for r in attempts} == dict.fromkeys(held, 1)

        verdict = await settle_and_verify(http, world, [receiver], ledger)
        assert verdict.lost == 0
        assert verdict.duplicate_deliveries == 0
        assert survivor.running
        report(
            verdict.line("sigterm-drain")
            + f" held_at_sigterm={len(held)} drained_in={drained_in:.2f}s exit_code={code}"
        )
    finally:
        await receiver.close()
