"""Delivery isolation phases of ``bench.run``: ``noisy_neighbour``, ``idle_registrations`` and
``workers_scaling``. Each compares two measurements taken in the same run (with and without
the load that must not matter), so the ratio survives a busy shared machine better than either
figure alone.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from bench.httpclient import HttpConnection, percentile
from broker.store.records import SECRET

if TYPE_CHECKING:
    from bench.run import Bench

HEALTHY_EVENT = "Bench.Noisy.Healthy"
SLOW_EVENT = "Bench.Noisy.Slow"
IDLE_EVENT = "Bench.Idle.Never"
EMIT_EVERY_S = 0.5
HEALTHY_REGISTRATIONS = 4


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


async def _register(bench: Bench, partner: dict[str, Any], path: str, event: str) -> str:
    reg = await bench.call(
        "POST",
        "/webhooks/v1/registrations",
        key=partner["apiKey"],
        body={"url": f"http://127.0.0.1:{bench.receiver_port}{path}", "eventTypes": [event]},
    )
    return str(reg["id"])


async def _emit_every(
    bench: Bench, partner_id: str, event: str, prefix: str, seconds: float, sent: dict[str, float]
) -> None:
    port = bench.api_ports[0]
    conn = HttpConnection(port)
    try:
        i = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            resource = f"{prefix}/{i}"
            i += 1
            request = bench.ingest_request(
                port, [{"partnerId": partner_id, "eventName": event, "resource": resource}]
            )
            sent[resource] = time.time()
            reply = await conn.send(request)
            if reply.status != 202:
                raise RuntimeError(f"noisy ingest -> {reply.status}: {reply.body[:300]!r}")
            await asyncio.sleep(EMIT_EVERY_S)
    finally:
        await conn.close()


async def _healthy_lateness(
    bench: Bench, label: str, *, slow_partners: list[str], seconds: float, timeout_s: float
) -> dict[str, Any]:
    """One round: a worker with the default-style timeout; the healthy partner emits every
    0.5 s (and the slow partner too, when given); lateness = arrival - emit - window min."""
    from bench.run import WINDOW_MAX_SECONDS, WINDOW_MIN_SECONDS

    await bench.receiver("POST", "/_reset")
    await bench.receiver("POST", "/_config", {"parse": True})
    worker, _ = await bench.start_broker(
        "worker", f"worker-noisy-{label}", BROKER_DELIVERY_TIMEOUT_SECONDS=f"{timeout_s:g}"
    )
    sent: dict[str, float] = {}
    slow_sent: dict[str, float] = {}
    try:
        jobs = [
            _emit_every(bench, bench.partners[1]["id"], HEALTHY_EVENT, f"h-{label}", seconds, sent)
        ]
        for n, partner_id in enumerate(slow_partners):
            jobs.append(
                _emit_every(bench, partner_id, SLOW_EVENT, f"s-{label}-{n}", seconds, slow_sent)
            )
        await asyncio.gather(*jobs)
        deadline = time.monotonic() + WINDOW_MAX_SECONDS + 10
        wanted = len(sent) * HEALTHY_REGISTRATIONS
        while time.monotonic() < deadline:
            arrivals = [a for a in await bench.receiver("GET", "/_arrivals") if a[0] in sent]
            if len(arrivals) >= wanted:
                break
            await asyncio.sleep(0.2)
        stats = await bench.receiver("GET", "/_stats")
    finally:
        worker.stop(timeout=2)  # the hung requests would hold its drain for the timeout
    late = [(at - sent[r] - WINDOW_MIN_SECONDS) for r, at in arrivals]
    return {
        "healthy_windows": len(sent),
        "healthy_deliveries": len(arrivals),
        "missing": wanted - len(arrivals),
        "p50_s": round(percentile(late, 50), 3) if late else None,
        "p99_s": round(percentile(late, 99), 3) if late else None,
        "max_s": round(max(late), 3) if late else None,
        "slow_requests_hung": stats.get("hung", 0),
    }


async def phase_noisy_neighbour(bench: Bench) -> None:
    s = bench.sizes
    for name in (HEALTHY_EVENT, SLOW_EVENT):
        await bench.call("PUT", f"/admin/v1/event-types/{name}", body={"description": name})
    for k in range(HEALTHY_REGISTRATIONS):
        await _register(bench, bench.partners[1], f"/hook/nh{k}", HEALTHY_EVENT)
    say(
        f"noisy_neighbour: healthy partner every {EMIT_EVERY_S}s for {s.noisy_seconds:g}s,"
        f" without and then with {s.noisy_slow_registrations} registrations that never answer"
        f" (timeout {s.noisy_timeout_s:g}s)"
    )
    alone = await _healthy_lateness(
        bench, "alone", slow_partners=[], seconds=s.noisy_seconds, timeout_s=s.noisy_timeout_s
    )
    say(f"  without slow registrations: p99 lateness {alone['p99_s']}s")
    # Spread over partners 2-7 (a partner may have at most 100 registrations).
    slow_partners = bench.partners[2:]
    slow_regs = []
    for k in range(s.noisy_slow_registrations):
        partner = slow_partners[k % len(slow_partners)]
        slow_regs.append((partner, await _register(bench, partner, f"/hang/s{k}", SLOW_EVENT)))
    noisy = await _healthy_lateness(
        bench,
        "noisy",
        slow_partners=[p["id"] for p in slow_partners],
        seconds=s.noisy_seconds,
        timeout_s=s.noisy_timeout_s,
    )
    say(f"  with slow registrations:    p99 lateness {noisy['p99_s']}s")
    for partner, reg in slow_regs:  # quiet again for the phases after this one
        await bench.call("POST", f"/webhooks/v1/registrations/{reg}/pause", key=partner["apiKey"])
    if alone["p99_s"] is None or noisy["p99_s"] is None or noisy["missing"]:
        delta = float("inf")
    else:
        delta = noisy["p99_s"] - alone["p99_s"]
    bench.results["noisy_neighbour_p99_delta_s"] = round(delta, 3)
    bench.details["noisy_neighbour"] = {
        "without_slow": alone,
        "with_slow": noisy,
        "slow_registrations": s.noisy_slow_registrations,
        "timeout_s": s.noisy_timeout_s,
        "seconds": s.noisy_seconds,
    }
    say(f"noisy_neighbour: healthy p99 lateness +{delta:.3f}s with the slow registrations")


# ---------------------------------------------------------------------- idle registrations


async def _add_idle_registrations(bench: Bench, count: int) -> None:
    """Idle Active registrations of other partners, each with a delivery_ready row as if it
    had had work once (the claim's worst case: a row per registration, none due)."""
    assert bench.pool is not None
    partner = bench.partners[3]["id"]
    ids = [uuid.uuid4() for _ in range(count)]
    # Sealed per row, as the API would (a sealed secret is bound to its row).
    sealed = [
        bench.key_ring.seal("whsec_aWRsZWlkbGVpZGxlaWRsZWlkbGVpZGxl", row=i, column=SECRET)
        for i in ids
    ]
    await bench.pool.execute(
        """WITH r AS (
               INSERT INTO registrations (id, partner_id, url, event_types, secret_sealed)
               SELECT id, $1::uuid, 'http://127.0.0.1:9/idle', ARRAY[$2::text], sealed
               FROM unnest($3::uuid[], $4::bytea[]) AS t(id, sealed)
               RETURNING id)
           INSERT INTO delivery_ready (registration_id, next_due_at)
           SELECT id, 'infinity' FROM r""",
        partner,
        IDLE_EVENT,
        ids,
        sealed,
    )
    await bench.pool.execute("ANALYZE registrations, delivery_ready")


async def _delivery_rate(
    bench: Bench, label: str, registrations: list[str], count: int, workers: int = 1, **env: str
) -> dict[str, Any]:
    """Queue ``count`` event objects over ``registrations`` and let ``workers`` worker
    processes deliver them."""
    assert bench.pool is not None
    await bench.receiver("POST", "/_reset")
    bench.event_serial += 1
    await bench.insert_events(
        partner_id=bench.partners[0]["id"],
        registrations=registrations,
        first=40_000_000 + bench.event_serial * 1_000_000,  # apart from the other phases'
        count=count,
        base=datetime.now(UTC) - timedelta(hours=2),
    )
    regs = [uuid.UUID(r) for r in registrations]
    # Started together: one after the other, the first worker had the backlog to itself for
    # a second or more per worker, a large share of a short run.
    procs = [
        proc
        for proc, _ in await asyncio.gather(
            *(bench.start_broker("worker", f"worker-{label}-{i}", **env) for i in range(workers))
        )
    ]
    started = time.perf_counter()
    finished: float | None = None
    try:
        while time.perf_counter() - started < bench.sizes.delivery_max_seconds:
            left = await bench.pool.fetchval(
                "SELECT count(*) FROM delivery_queue WHERE registration_id = ANY($1)", regs
            )
            if not left:
                finished = time.time()
                break
            await asyncio.sleep(0.1)
        stats = await bench.receiver("GET", "/_stats")
    finally:
        for proc in procs:
            proc.stop()
    end = finished or time.time()
    span = max(end - (stats["first_at"] or end), 1e-6)
    return {
        "per_s": round(stats["count"] / span),
        "delivered": stats["count"],
        "seconds": round(span, 2),
        "complete": finished is not None,
    }


async def phase_idle_registrations(bench: Bench, registrations: list[str]) -> None:
    s = bench.sizes
    say(
        f"idle_registrations: {s.idle_events:,} event objects for {len(registrations)} busy"
        f" registrations, without and then with {s.idle_registrations:,} idle ones"
    )
    alone = await _delivery_rate(bench, "idle-none", registrations, s.idle_events)
    say(f"  without idle registrations: {alone['per_s']:,}/s")
    await _add_idle_registrations(bench, s.idle_registrations)
    crowded = await _delivery_rate(bench, "idle-many", registrations, s.idle_events)
    say(f"  with idle registrations:    {crowded['per_s']:,}/s")
    ratio = crowded["per_s"] / alone["per_s"] if alone["per_s"] else 0.0
    bench.results["idle_registrations_ratio"] = round(ratio, 3)
    bench.details["idle_registrations"] = {
        "without": alone,
        "with": crowded,
        "idle_registrations": s.idle_registrations,
    }
    say(f"idle_registrations: {ratio:.2f}x the rate with none")


# ---------------------------------------------------------------------- workers scaling


async def phase_workers_scaling(bench: Bench, registrations: list[str]) -> None:
    """One backlog to a receiver that holds each request 50 ms, delivered by 1 and by 3 worker
    processes of 32 slots each, with idle registrations present: the rate must scale."""
    assert bench.pool is not None
    s = bench.sizes
    idle = await bench.pool.fetchval(
        "SELECT count(*) FROM registrations WHERE $1 = ANY(event_types)", IDLE_EVENT
    )
    if idle < s.scaling_idle_registrations:
        await _add_idle_registrations(bench, s.scaling_idle_registrations - idle)
    regs = [uuid.UUID(r) for r in registrations]
    await bench.pool.execute(
        "UPDATE registrations SET url = replace(url, '/hook/', '/hold/'), updated_at = now()"
        " WHERE id = ANY($1)",
        regs,
    )
    say(
        f"workers_scaling: {s.scaling_events:,} event objects, receiver holds each 50 ms,"
        f" 32 slots per worker, 1 then 3 workers ({s.scaling_idle_registrations:,} idle"
        " registrations present)"
    )
    try:
        env = {"BROKER_DELIVERY_CONCURRENCY": "32"}
        one = await _delivery_rate(bench, "scale-1", registrations, s.scaling_events, 1, **env)
        say(f"  1 worker:  {one['per_s']:,}/s")
        three = await _delivery_rate(bench, "scale-3", registrations, s.scaling_events, 3, **env)
        say(f"  3 workers: {three['per_s']:,}/s")
    finally:
        await bench.pool.execute(
            "UPDATE registrations SET url = replace(url, '/hold/', '/hook/'), updated_at = now()"
            " WHERE id = ANY($1)",
            regs,
        )
    ratio = three["per_s"] / one["per_s"] if one["per_s"] else 0.0
    bench.results["workers_scaling_3_to_1"] = round(ratio, 3)
    bench.details["workers_scaling"] = {"one": one, "three": three}
    say(f"workers_scaling: 3 workers deliver {ratio:.2f}x what 1 does")
