"""The pgqueuer side of ``bench.peers``: one round of 20,000 jobs into a running consumer."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bench.peers.broker_side import PEERS_EVENT
from bench.peers.measure import (
    begin_metering,
    db_counters,
    end_metering,
    sample_waits,
    stop_sampler,
)
from bench.procs import base_env
from broker.domain.ids import uuid7
from broker.domain.payload import event_body

if TYPE_CHECKING:
    from bench.peers.run import PeersBench


async def pgqueuer_round(bench: PeersBench, n: int) -> dict[str, Any]:
    """One pgqueuer round: a fresh consumer process, ready before the clock starts; the runner
    enqueues every job in one batch; done when the queue table is empty."""
    # Imported here: pgqueuer is the optional extra `peers`, and `--help` works without it.
    from pgqueuer import AsyncpgDriver, Queries

    o = bench.options
    assert bench.pgq_conn is not None
    conn = bench.pgq_conn
    queries = Queries(AsyncpgDriver(conn))
    await queries.clear_queue()
    await queries.clear_queue_log()
    await queries.clear_statistics_log()
    created = datetime.now(UTC)
    partner = uuid.UUID(bench.partners[0]["id"])
    bodies: list[bytes | None] = []
    headers: list[dict[str, str] | None] = []
    for i in range(o.deliveries):
        k = i % o.registrations
        event_id = uuid7()
        bodies.append(
            event_body(
                event_id=event_id,
                event_name=PEERS_EVENT,
                partner_id=partner,
                registration_id=uuid.UUID(bench.registrations[k]["id"]),
                created_at=created,
                previous_attempted_at=None,
                resources=[f"core/v1/dda/peers/{n}/{i // o.registrations}"],
            )
        )
        headers.append({"target": f"q{k}", "id": str(event_id)})
    await bench.receiver("POST", "/_reset")
    consumer = bench.spawn(
        "pgqueuer-consumer",
        [
            sys.executable,
            "-m",
            "bench.peers.consumer",
            "--dsn",
            bench.pgq_url,
            "--targets",
            str(bench.targets_file),
            "--batch-size",
            str(o.batch_size),
            "--concurrency",
            str(o.concurrency),
        ],
        base_env(),
    )
    ready_by = time.monotonic() + 60
    while "consumer ready" not in consumer.tail(5):
        if not consumer.alive() or time.monotonic() > ready_by:
            raise RuntimeError(f"pgqueuer consumer did not start:\n{consumer.tail()}")
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    metered = await begin_metering(
        bench, conn, bench.pgq_db_name, f"pgqueuer-consumer-round{n}", consumer.pid
    )
    started = metered.started
    await queries.enqueue(
        ["webhook"] * o.deliveries, bodies, [0] * o.deliveries, None, None, headers
    )
    enqueue_s = time.perf_counter() - started

    async def done() -> bool:
        return bool(await conn.fetchval("SELECT count(*) FROM pgqueuer") == 0)

    sampler = asyncio.create_task(sample_waits(bench.pool, bench.pgq_db_name)) if o.waits else None
    try:
        finished_at, stats = await bench.until_done("pgqueuer", done, started, consumer)
    finally:
        waits = await stop_sampler(sampler)
    wall, used = await end_metering(bench, metered)
    consumer.stop()
    bench.procs.remove(consumer)
    after = await db_counters(conn, bench.pgq_db_name)
    result = bench.outcome(
        "pgqueuer", ["pgqueuer-consumer", "postgres"], used, finished_at, stats, wall
    )
    result["enqueue_seconds"] = round(enqueue_s, 3)
    if waits:
        result["backend_states"] = waits
    result["log_statuses"] = {
        row["status"]: row["count"]
        for row in await conn.fetch(
            "SELECT status::text AS status, count(*) FROM pgqueuer_log GROUP BY 1"
        )
    }
    result["db_per_delivery"] = {
        k: round((after.get(k, 0) - metered.counters.get(k, 0)) / o.deliveries, 2) for k in after
    }
    return result
