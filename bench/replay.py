"""Replay under load: ``python -m bench.replay [--events 100000] [--out PATH]``.

One registration has ``--events`` Failed event objects in its history (inserted by SQL, each
with its failed attempt); another registration of another partner receives a steady stream (one
resource event every 0.25 s, so each is its own window). With a worker process running, the
stream is measured alone, then ``POST .../replay`` requeues the whole history, then the stream is
measured while the worker delivers the replayed events (up to ``--drain-seconds``).

Lateness of the stream = arrival at the receiver - ingest - window min (as ``noisy_neighbour``
measures it). The replay holds the replayed registration's locks one batch at a time
(``broker/store/replay.py``); what this measures is whether the other registration's
deliveries stall meanwhile. The last line printed is the JSON result, also written to --out:

- ``replay_events``, ``replay_seconds`` (the API call), ``replay_events_per_s``;
- ``other_p99_lateness_s_before`` / ``_during_replay`` / ``_during_drain``, the same ``max``
  (the longest stall of the other registration's deliveries), and ``other_missing``;
- ``replay_drain_seconds``: until every replayed event was received (null past the limit).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from bench.httpclient import HttpConnection, build_request, percentile
from bench.procs import ROOT
from bench.run import TINY, WINDOW_MIN_SECONDS, Bench, Sizes, iso_ms, say

REPLAYED_EVENT = "Bench.Replay.Old"
LIVE_EVENT = "Bench.Replay.Live"
EMIT_EVERY_S = 0.25
BEFORE_SECONDS = 5.0


class Stream:
    """The other registration's steady traffic: resource ``name/i`` ingested every 0.25 s."""

    def __init__(self, bench: Bench, partner_id: str) -> None:
        self._bench = bench
        self._partner_id = partner_id
        self.sent: dict[str, float] = {}
        self.stop = asyncio.Event()

    async def run(self) -> None:
        port = self._bench.api_ports[0]
        conn = HttpConnection(port)
        try:
            i = 0
            while not self.stop.is_set():
                resource = f"live/{i}"
                i += 1
                request = self._bench.ingest_request(
                    port,
                    [
                        {
                            "partnerId": self._partner_id,
                            "eventName": LIVE_EVENT,
                            "resource": resource,
                        }
                    ],
                )
                self.sent[resource] = time.time()
                reply = await conn.send(request)
                if reply.status != 202:
                    raise RuntimeError(f"live ingest -> {reply.status}: {reply.body[:300]!r}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), EMIT_EVERY_S)
        finally:
            await conn.close()


def lateness(
    sent: dict[str, float], arrivals: dict[str, float], start: float, end: float
) -> dict[str, Any]:
    """Of the resources ingested in [start, end): p50, p99 and max lateness, and how many
    never arrived."""
    late = []
    missing = 0
    for resource, at in sent.items():
        if not start <= at < end:
            continue
        if resource in arrivals:
            late.append(arrivals[resource] - at - WINDOW_MIN_SECONDS)
        else:
            missing += 1
    return {
        "windows": len(late) + missing,
        "missing": missing,
        "p50_s": round(percentile(late, 50), 3) if late else None,
        "p99_s": round(percentile(late, 99), 3) if late else None,
        "max_s": round(max(late), 3) if late else None,
    }


async def insert_history(bench: Bench, registration_id: str, partner_id: str, n: int) -> None:
    """``n`` Failed event objects created over the last hour, each with its failed attempt."""
    assert bench.pool is not None
    since = datetime.now(UTC) - timedelta(hours=1)
    await bench.pool.execute(
        """WITH ev AS (
               INSERT INTO events (id, partner_id, registration_id, event_name, status,
                                   last_attempted_at, attempt_count)
               SELECT broker_uuid7(at), $1::uuid, $2::uuid, $3, 'Failed', at, 1
               FROM generate_series(1, $4::int) AS i
               CROSS JOIN LATERAL (SELECT $5::timestamptz
                                          + make_interval(secs => i * 3000.0 / $4)) AS t(at)
               RETURNING id, created_at)
           INSERT INTO attempts (event_id, attempt_number, attempted_at, duration_ms,
                                 response_status, response_body)
           SELECT id, 1, created_at, 12, 503, 'down for maintenance' FROM ev""",
        partner_id,
        registration_id,
        REPLAYED_EVENT,
        n,
        since,
    )
    await bench.pool.execute("ANALYZE events, attempts")


async def replayed_count(bench: Bench) -> int:
    names = await bench.receiver("GET", "/_names")
    return int(names.get("replayed", {}).get("count", 0))


async def run(events: int, drain_seconds: float) -> dict[str, Any]:
    sizes = Sizes(**{**TINY.__dict__, "mode": "replay", "api_processes": 1})
    bench = Bench(sizes, None)
    result: dict[str, Any] = {"replay_events": events}
    try:
        await bench.setup()
        for name in (REPLAYED_EVENT, LIVE_EVENT):
            await bench.call("PUT", f"/admin/v1/event-types/{name}", body={"description": name})
        owner, other = bench.partners[0], bench.partners[1]
        replayed = await bench.call(
            "POST",
            "/webhooks/v1/registrations",
            key=owner["apiKey"],
            body={
                "url": f"http://127.0.0.1:{bench.receiver_port}/hook/replayed",
                "eventTypes": [REPLAYED_EVENT],
            },
        )
        await bench.call(
            "POST",
            "/webhooks/v1/registrations",
            key=other["apiKey"],
            body={
                "url": f"http://127.0.0.1:{bench.receiver_port}/hook/live",
                "eventTypes": [LIVE_EVENT],
            },
        )
        started = time.perf_counter()
        await insert_history(bench, replayed["id"], owner["id"], events)
        say(f"{events:,} Failed event objects inserted in {time.perf_counter() - started:.1f}s")
        await bench.receiver("POST", "/_reset")
        await bench.receiver("POST", "/_config", {"parse": True})
        bench.worker, _ = await bench.start_broker("worker", "worker")

        stream = Stream(bench, other["id"])
        emitting = asyncio.create_task(stream.run())
        await asyncio.sleep(BEFORE_SECONDS)

        say(f"replaying {events:,} event objects while the other registration receives")
        port = bench.api_ports[0]
        conn = HttpConnection(port)
        body = orjson.dumps({"since": iso_ms(datetime.now(UTC) - timedelta(hours=2))})
        replay_start = time.time()
        try:
            reply = await conn.send(
                build_request(
                    "POST",
                    f"/webhooks/v1/registrations/{replayed['id']}/replay",
                    port,
                    body=body,
                    headers={"Authorization": f"Bearer {owner['apiKey']}"},
                ),
                timeout=600,
            )
        finally:
            await conn.close()
        replay_end = time.time()
        if reply.status != 202:
            raise RuntimeError(f"replay -> {reply.status}: {reply.body[:500]!r}")
        requeued = orjson.loads(reply.body)["requeued"]
        seconds = replay_end - replay_start
        say(f"replay: {requeued:,} requeued in {seconds:.2f}s")

        drained_at = None
        deadline = time.monotonic() + drain_seconds
        while time.monotonic() < deadline:
            if await replayed_count(bench) >= requeued:
                drained_at = time.time()
                break
            await asyncio.sleep(0.5)
        drain_end = drained_at or time.time()
        delivered = await replayed_count(bench)
        say(f"drain: {delivered:,} of {requeued:,} replayed events received")
        stream.stop.set()
        await emitting
        await asyncio.sleep(WINDOW_MIN_SECONDS + 2)  # the last windows close and arrive
        arrivals = {
            resource: at
            for resource, at in await bench.receiver("GET", "/_arrivals")
            if resource.startswith("live/")
        }
        first_sent = min(stream.sent.values())
        before = lateness(stream.sent, arrivals, first_sent, replay_start)
        during = lateness(stream.sent, arrivals, replay_start, replay_end)
        drain = lateness(stream.sent, arrivals, replay_end, drain_end)
        result.update(
            {
                "replay_requeued": requeued,
                "replay_seconds": round(seconds, 3),
                "replay_events_per_s": round(requeued / seconds) if seconds else None,
                "replay_drain_seconds": (
                    round(drained_at - replay_end, 1) if drained_at is not None else None
                ),
                "replay_drain_delivered": delivered,
                "other_p99_lateness_s_before": before["p99_s"],
                "other_p99_lateness_s_during_replay": during["p99_s"],
                "other_max_lateness_s_during_replay": during["max_s"],
                "other_p99_lateness_s_during_drain": drain["p99_s"],
                "other_max_lateness_s_during_drain": drain["max_s"],
                "other_missing": before["missing"] + during["missing"] + drain["missing"],
                "details": {"before": before, "during_replay": during, "during_drain": drain},
            }
        )
    finally:
        await bench.teardown()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--drain-seconds", type=float, default=120.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "replay.json")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.events, args.drain_seconds))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    print(orjson.dumps(result).decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
