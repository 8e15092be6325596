"""Benchmark phases of the per-registration delivery policy (run by ``bench.run``).

- ``fifo_delivery``: one registration with ``delivery.ordering: "fifo"`` and a queue of event
  objects (10,000 in the full run), delivered by one worker process: event objects per second
  and arrivals out of ``createdAt`` order (target 0; the receiver counts an arrival older than
  one it has already seen, redeliveries aside).
- ``rate_limited``: one registration at ``rateLimitPerSecond: 200`` with a backlog far larger
  than the measuring window, and four unlimited registrations with backlogs of their own, all
  delivered by three worker processes. The limited registration's rate is measured over 30 s
  from its arrival times (after a 2 s warm-up; target within ±10 % of 200/s); the others'
  delivery rate is compared with a run of the same backlogs without the limited registration
  (target: at least 0.9 of it).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.run import Bench

RESULT_KEYS = (
    "fifo_delivery_events_per_s",
    "fifo_out_of_order",
    "rate_limited_per_s",
    "rate_limited_error",
    "rate_limited_others_ratio",
)
RATE = 200.0
WARM_UP_SECONDS = 2.0
OTHER_REGISTRATIONS = 4


@dataclass(frozen=True)
class PolicySizes:
    fifo_events: int
    fifo_max_seconds: float
    rate_window_seconds: float
    other_events: int  # per unlimited registration
    workers: int


SIZES = {
    "full": PolicySizes(
        fifo_events=10_000,
        fifo_max_seconds=300,
        rate_window_seconds=30,
        other_events=5_000,
        workers=3,
    ),
    "quick": PolicySizes(
        fifo_events=2_000,
        fifo_max_seconds=90,
        rate_window_seconds=10,
        other_events=2_000,
        workers=3,
    ),
    "tiny": PolicySizes(
        fifo_events=100,
        fifo_max_seconds=20,
        rate_window_seconds=2,
        other_events=200,
        workers=2,
    ),
}


def _say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


async def _register(bench: Bench, name: str, **policy: Any) -> str:
    from bench.run import DELIVERY_EVENT

    partner = bench.partners[1 % len(bench.partners)]
    reg = await bench.call(
        "POST",
        "/webhooks/v1/registrations",
        key=partner["apiKey"],
        body={
            "url": f"http://127.0.0.1:{bench.receiver_port}/hook/{name}",
            "eventTypes": [DELIVERY_EVENT],
            **policy,
        },
    )
    return str(reg["id"])


async def _queue(bench: Bench, registrations: list[str], count: int, first: int) -> None:
    partner = bench.partners[1 % len(bench.partners)]
    base = datetime.now(UTC) - timedelta(hours=1)
    await bench.insert_events(
        partner_id=partner["id"], registrations=registrations, first=first, count=count, base=base
    )
    # Registrations whose earlier queue drained sleep at 'infinity': due now, as a window close
    # makes them.
    assert bench.pool is not None
    await bench.pool.execute(
        "UPDATE delivery_ready SET next_due_at = now() WHERE registration_id = ANY($1::uuid[])",
        [uuid.UUID(r) for r in registrations],
    )


async def _names(bench: Bench, times: str | None = None) -> dict[str, Any]:
    path = "/_names" + (f"?times={times}" if times else "")
    result: dict[str, Any] = await bench.receiver("GET", path)
    return result


async def _queued(bench: Bench, registrations: list[str]) -> int:
    assert bench.pool is not None
    count: int = await bench.pool.fetchval(
        "SELECT count(*) FROM events WHERE status = 'Pending' AND registration_id = ANY($1)",
        [uuid.UUID(r) for r in registrations],
    )
    return count


async def fifo_delivery(bench: Bench, first_event: int) -> None:
    sizes = SIZES[bench.sizes.mode]
    reg = await _register(bench, "fifo", delivery={"ordering": "fifo"})
    await _queue(bench, [reg], sizes.fifo_events, first_event)
    await bench.receiver("POST", "/_config", {"parse": True})
    await bench.receiver("POST", "/_reset")
    _say(f"fifo_delivery: one FIFO registration, {sizes.fifo_events:,} queued event objects")
    worker, _ = await bench.start_broker("worker", "worker-fifo")
    try:
        started = time.perf_counter()
        deadline = started + sizes.fifo_max_seconds
        last_print = started
        stats: dict[str, Any] = {}
        while time.perf_counter() < deadline:
            stats = (await _names(bench)).get("fifo", {})
            if stats.get("count", 0) >= sizes.fifo_events and await _queued(bench, [reg]) == 0:
                break
            if time.perf_counter() - last_print >= 2:
                last_print = time.perf_counter()
                _say(f"  fifo {last_print - started:5.1f}s  {stats.get('count', 0):,} received")
            await asyncio.sleep(0.2)
    finally:
        worker.stop()
    received = stats.get("count", 0)
    span = max((stats.get("last_at") or 0) - (stats.get("first_at") or 0), 1e-6)
    complete = received >= sizes.fifo_events
    rate = (received - 1) / span if complete and received > 1 else 0.0
    bench.results["fifo_delivery_events_per_s"] = round(rate)
    bench.results["fifo_out_of_order"] = stats.get("out_of_order") if complete else None
    bench.phase_items["fifo_delivery"] = received
    bench.details["fifo_delivery"] = {
        "event_objects": sizes.fifo_events,
        "received": received,
        "duplicates": stats.get("duplicates"),
        "out_of_order": stats.get("out_of_order"),
        "seconds": round(span, 3),
        "complete": complete,
    }
    _say(
        f"fifo_delivery: {rate:,.0f} event objects/s, {stats.get('out_of_order')} out of order"
        f" ({received:,}/{sizes.fifo_events:,})"
    )


async def _deliver_backlogs(
    bench: Bench, label: str, registrations: list[str], total: int, max_seconds: float
) -> dict[str, Any]:
    """Start the workers, wait until ``total`` arrivals at the ``others`` hooks (or the
    deadline), stop them; returns the receiver's per-name figures."""
    sizes = SIZES[bench.sizes.mode]
    workers = [
        (await bench.start_broker("worker", f"worker-{label}-{i}"))[0] for i in range(sizes.workers)
    ]
    try:
        started = time.perf_counter()
        names: dict[str, Any] = {}
        while time.perf_counter() - started < max_seconds:
            names = await _names(bench)
            others = sum(v["count"] for k, v in names.items() if k.startswith("other"))
            if others >= total:
                break
            await asyncio.sleep(0.2)
        return names
    finally:
        for worker in workers:
            worker.stop()


def _others_rate(names: dict[str, Any]) -> tuple[float, int]:
    others = [v for k, v in names.items() if k.startswith("other") and v["count"]]
    if not others:
        return 0.0, 0
    count = sum(v["count"] for v in others)
    span = max(v["last_at"] for v in others) - min(v["first_at"] for v in others)
    return count / max(span, 1e-6), count


async def rate_limited(bench: Bench, first_event: int) -> None:
    sizes = SIZES[bench.sizes.mode]
    window = sizes.rate_window_seconds
    backlog = int(RATE * (window + WARM_UP_SECONDS) * 2)  # never drained inside the window
    await bench.receiver("POST", "/_config", {"parse": True})
    others = [await _register(bench, f"other{i}") for i in range(OTHER_REGISTRATIONS)]
    total_others = sizes.other_events * OTHER_REGISTRATIONS
    _say(
        f"rate_limited: {sizes.workers} workers; baseline: {OTHER_REGISTRATIONS} unlimited"
        f" registrations x {sizes.other_events:,} event objects"
    )
    await _queue(bench, others, total_others, first_event)
    await bench.receiver("POST", "/_reset")
    alone = await _deliver_backlogs(bench, "alone", others, total_others, 120)
    alone_rate, alone_count = _others_rate(alone)

    limited = await _register(bench, "limited", delivery={"rateLimitPerSecond": RATE})
    _say(
        f"rate_limited: + one registration at {RATE:g}/s with {backlog:,} queued; the same"
        " backlogs again for the others"
    )
    await _queue(bench, [limited], backlog, first_event + total_others)
    await _queue(bench, others, total_others, first_event + total_others + backlog)
    await bench.receiver("POST", "/_reset")
    started = time.time()
    workers = [
        (await bench.start_broker("worker", f"worker-rate-{i}"))[0] for i in range(sizes.workers)
    ]
    try:
        deadline = time.time() + window + WARM_UP_SECONDS + 30
        while time.time() < deadline:
            names = await _names(bench, times="limited")
            got = names.get("limited", {}).get("times", [])
            others_done = sum(v["count"] for k, v in names.items() if k.startswith("other"))
            # Until a delivery lands past the measured window (a slow stretch near its end must
            # not leave the window unmeasured) and the others' backlogs are done.
            if got and got[-1] >= got[0] + WARM_UP_SECONDS + window and others_done >= total_others:
                break
            await asyncio.sleep(0.25)
    finally:
        for worker in workers:
            worker.stop()
    names = await _names(bench, times="limited")
    times = names.get("limited", {}).get("times", [])
    observed = None
    if times:
        begin = times[0] + WARM_UP_SECONDS
        end = begin + window
        in_window = [t for t in times if begin <= t < end]
        if times[-1] >= end:
            observed = len(in_window) / window
    with_rate, with_count = _others_rate(names)
    ratio = with_rate / alone_rate if alone_rate else None
    error = None if observed is None else abs(observed - RATE) / RATE
    bench.results["rate_limited_per_s"] = None if observed is None else round(observed, 1)
    bench.results["rate_limited_error"] = None if error is None else round(error, 4)
    bench.results["rate_limited_others_ratio"] = None if ratio is None else round(ratio, 3)
    bench.phase_items["rate_limited"] = len(times) + with_count
    bench.details["rate_limited"] = {
        "limit_per_s": RATE,
        "window_seconds": window,
        "observed_per_s": observed,
        "limited_backlog": backlog,
        "limited_received": len(times),
        "limited_out_of_window_first_at": round(times[0] - started, 3) if times else None,
        "others_alone_per_s": round(alone_rate, 1),
        "others_alone_received": alone_count,
        "others_with_limited_per_s": round(with_rate, 1),
        "others_with_limited_received": with_count,
        "workers": sizes.workers,
    }
    _say(
        f"rate_limited: {observed if observed is None else round(observed, 1)}/s observed"
        f" (limit {RATE:g}/s); others {with_rate:,.0f}/s vs {alone_rate:,.0f}/s alone"
    )
