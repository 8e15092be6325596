"""Crash safety: SIGKILL a ``broker serve`` process mid-ingest and mid-delivery, restart it, and
check that every acknowledged (202) resource is delivered at least once and that the events API
agrees with what the receivers got. Duplicates are counted and reported, never hidden."""

from __future__ import annotations

import asyncio
import random

import pytest

from tests.fault.harness import (
    Ledger,
    ScoringReceiver,
    eventually,
    make_world,
    produce,
    report,
    settle_and_verify,
)

pytestmark = [pytest.mark.fault, pytest.mark.timeout(120)]

EVENT_NAMES = ["Core.Account.Opened", "Core.Account.Closed", "Core.Card.Issued"]


async def test_sigkill_mid_ingest_loses_no_acknowledged_resource(brokers, db_url, http):
    receiver = await ScoringReceiver().start()
    try:
        broker = brokers.spawn(db_url, name="all")
        await broker.wait_ready()
        world = await make_world(
            http, broker.url, event_names=EVENT_NAMES, receiver_urls=[receiver.url]
        )
        ledger = Ledger()
        stop = asyncio.Event()
        producers = [
            asyncio.create_task(produce(http, world, ledger, stop, tag=f"before/{i}"))
            for i in range(8)
        ]
        # Kill while requests are in flight: wait until the load is really flowing first.
        assert await eventually(lambda: ledger.statuses[202] >= 40, 20), brokers.logs()
        broker.kill()
        acked_before_kill = len(ledger.acked)
        await asyncio.wait_for(asyncio.gather(*producers), timeout=15)
        assert ledger.errors, "the producers should have seen the connection break"

        broker.start()
        await broker.wait_ready()
        stop = asyncio.Event()
        producers = [
            asyncio.create_task(produce(http, world, ledger, stop, tag=f"after/{i}"))
            for i in range(4)
        ]
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*producers), timeout=15)

        verdict = await settle_and_verify(http, world, [receiver], ledger)
        assert verdict.lost == 0
        assert ledger.bad == []
        report(
            verdict.line("sigkill-mid-ingest")
            + f" acked_before_kill={acked_before_kill} in_flight_at_kill={len(ledger.unknown)}"
        )
    finally:
        await receiver.close()


async def test_sigkill_mid_delivery_redelivers_what_was_in_flight(brokers, db_url, http):
    # Slow but healthy: each delivery takes 1 s, well inside the 2 s delivery timeout.
    receiver = await ScoringReceiver(delay=1.0).start()
    other = await ScoringReceiver(delay=1.0).start()
    try:
        broker = brokers.spawn(db_url, name="all")
        await broker.wait_ready()
        world = await make_world(
            http,
            broker.url,
            event_names=EVENT_NAMES,
            receiver_urls=[receiver.url, receiver.url, other.url, other.url],
        )
        ledger = Ledger()
        stop = asyncio.Event()
        producers = [
            asyncio.create_task(produce(http, world, ledger, stop, tag=f"round1/{i}", pause=0.05))
            for i in range(3)
        ]
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*producers)
        # Wait until several deliveries are in the receivers' hands, unanswered; then kill.
        await eventually(lambda: len(receiver.unanswered() | other.unanswered()) >= 4, 20, 0.02)
        broker.kill()
        # The receivers run on this loop, so nothing was answered between the check and here.
        in_flight = receiver.unanswered() | other.unanswered()
        assert len(in_flight) >= 4, brokers.logs()

        broker.start()
        await broker.wait_ready()
        stop = asyncio.Event()
        producers = [
            asyncio.create_task(produce(http, world, ledger, stop, tag=f"round2/{i}", pause=0.05))
            for i in range(2)
        ]
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*producers)

        verdict = await settle_and_verify(http, world, [receiver, other], ledger, timeout=60)
        assert verdict.lost == 0
        assert ledger.bad == [] and ledger.unknown == set()
        received = receiver.ids() + other.ids()
        # At-least-once: what the dead process had in flight was delivered again.
        redelivered = [event_id for event_id in in_flight if received[event_id] >= 2]
        assert sorted(redelivered) == sorted(in_flight)
        report(verdict.line("sigkill-mid-delivery") + f" in_flight_at_kill={len(in_flight)}")
    finally:
        await receiver.close()
        await other.close()


async def test_repeated_sigkills_at_random_moments(brokers, db_url, http):
    """Four kills at random moments: mid group-commit, mid window close, mid delivery, mid
    recording of results. After the last restart everything acknowledged is delivered."""
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    receiver = await ScoringReceiver(delay=0.3).start()
    try:
        broker = brokers.spawn(db_url, name="all")
        await broker.wait_ready()
        world = await make_world(
            http, broker.url, event_names=EVENT_NAMES, receiver_urls=[receiver.url] * 2
        )
        ledger = Ledger()
        kills = 4
        for cycle in range(kills):
            if cycle:
                broker.start()
                await broker.wait_ready()
            never = asyncio.Event()  # the producers stop when the broker dies under them
            producers = [
                asyncio.create_task(
                    produce(http, world, ledger, never, tag=f"c{cycle}/{i}", pause=0.02)
                )
                for i in range(4)
            ]
            await asyncio.sleep(rng.uniform(0.6, 2.5))
            broker.kill()
            await asyncio.wait_for(asyncio.gather(*producers), timeout=15)
        broker.start()
        await broker.wait_ready()
        verdict = await settle_and_verify(http, world, [receiver], ledger, timeout=60)
        assert verdict.lost == 0
        assert ledger.bad == []
        report(verdict.line("repeated-sigkill") + f" kills={kills} seed={seed}")
    finally:
        await receiver.close()
