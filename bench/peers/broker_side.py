"""The broker side of ``bench.peers``: one round of 625 one-resource windows x 32 registrations."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING, Any

from bench.peers.measure import (
    begin_metering,
    cpu_used,
    db_counters,
    end_metering,
    sample_waits,
    stop_sampler,
)
from bench.procs import Proc

if TYPE_CHECKING:
    from bench.peers.run import PeersBench

PEERS_EVENT = "Bench.Peers.Done"


async def ingest_windows(bench: PeersBench, n: int) -> None:
    items = [
        {
            "partnerId": bench.partners[0]["id"],
            "eventName": PEERS_EVENT,
            "resource": f"core/v1/dda/peers/{n}/{i}",
        }
        for i in range(bench.windows)
    ]
    await bench.call(
        "POST",
        "/internal/v1/resource-events",
        key=bench.producer_key,
        body={"events": items},
        expect=(202,),
    )


async def set_paused(bench: PeersBench, paused: bool) -> None:
    key = bench.partners[0]["apiKey"]
    verb = "pause" if paused else "unpause"
    for reg in bench.registrations:
        await bench.call("POST", f"/webhooks/v1/registrations/{reg['id']}/{verb}", key=key)


async def broker_round(bench: PeersBench, n: int, *, preclosed: bool = False) -> dict[str, Any]:
    """One broker round. ``preclosed`` (a diagnostic): the registrations are paused while the
    worker closes every window, and the clock starts when they are unpaused, so the round
    times delivery alone, of the same 20,000 event objects."""
    o = bench.options
    assert bench.pool is not None
    pool = bench.pool
    regs = [uuid.UUID(r["id"]) for r in bench.registrations]
    queued_sql = "SELECT count(*) FROM delivery_queue WHERE registration_id = ANY($1)"
    windows_sql = "SELECT coalesce(sum(queued_count), 0) FROM window_groups WHERE event_name = $1"
    await bench.receiver("POST", "/_reset")
    if preclosed:
        await set_paused(bench, True)
    worker, _ = await bench.start_broker("worker", "broker-worker")
    closer: Proc | None = None
    if o.closer:
        # Diagnostic: a second worker process with one delivery slot, so most window closes
        # run on a loop that is not also running 256 HTTP requests (the advisory lock gives
        # each close to one of the two processes).
        closer, _ = await bench.start_broker(
            "worker", "broker-closer", BROKER_DELIVERY_CONCURRENCY="1"
        )
    await asyncio.sleep(0.5)
    aggregate: dict[str, float] = {}
    if preclosed:
        # The closes alone, timed and metered apart: what aggregation costs when nothing
        # is being delivered meanwhile.
        bench.meter.db_name = bench.db_name
        await bench.meter.sample()
        closing = bench.meter.snapshot()
        closing_started = time.perf_counter()
        await ingest_windows(bench, n)
        closed_by = time.monotonic() + o.max_seconds
        while (
            await pool.fetchval(windows_sql, PEERS_EVENT)
            or await pool.fetchval(queued_sql, regs) < o.deliveries
        ):
            if time.monotonic() > closed_by:
                raise RuntimeError("preclosed: the windows did not close in time")
            await asyncio.sleep(0.05)
        await bench.meter.sample()
        aggregate = cpu_used(closing, bench.meter.snapshot())
        aggregate["seconds"] = time.perf_counter() - closing_started
    metered = await begin_metering(
        bench, pool, bench.db_name, f"broker-worker-round{n}", worker.pid
    )
    started = metered.started
    if preclosed:
        await set_paused(bench, False)
    else:
        await ingest_windows(bench, n)

    async def done() -> bool:
        return bool(await pool.fetchval(queued_sql, regs) == 0)

    async def progress() -> str:
        # Where the work waits: resources not yet folded, event objects not yet delivered.
        windows = await pool.fetchval(windows_sql, PEERS_EVENT)
        queued = await pool.fetchval(queued_sql, regs)
        return f", {windows} windows to close, {queued:,} event objects queued"

    sampler = asyncio.create_task(sample_waits(pool, bench.db_name)) if o.waits else None
    try:
        finished_at, stats = await bench.until_done("broker", done, started, worker, progress)
    finally:
        waits = await stop_sampler(sampler)
    wall, used = await end_metering(bench, metered)
    for proc in (worker, closer):
        if proc is not None:
            proc.stop()
            bench.procs.remove(proc)
    after = await db_counters(pool, bench.db_name)
    side = "broker_preclosed" if preclosed else "broker"
    result = bench.outcome(
        side,
        ["broker-worker", "api0", "postgres", *(["broker-closer"] if o.closer else [])],
        used,
        finished_at,
        stats,
        wall,
    )
    if waits:
        result["backend_states"] = waits
    if aggregate:
        result["closing"] = {
            "seconds": round(aggregate["seconds"], 2),
            "windows_per_s": round(bench.windows / aggregate["seconds"], 1),
            "cpu_us_per_event_object": {
                k: round(aggregate.get(k, 0.0) * 1e6 / o.deliveries, 1)
                for k in (
                    "broker-worker",
                    "api0",
                    "postgres",
                    *(["broker-closer"] if o.closer else []),
                )
            },
        }
    result["attempts_recorded"] = await pool.fetchval(
        "SELECT count(*) FROM attempts a JOIN event_objects e ON e.id = a.event_id"
        " WHERE e.registration_id = ANY($1) AND e.resources[1] LIKE $2",
        regs,
        f"core/v1/dda/peers/{n}/%",
    )
    result["db_per_delivery"] = {
        k: round((after.get(k, 0) - metered.counters.get(k, 0)) / o.deliveries, 2) for k in after
    }
    return result
