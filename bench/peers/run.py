"""Broker beside a pgqueuer job queue: ``python -m bench.peers [--deliveries N] [--rounds R]``.

The same number of signed POSTs to the same receiver, in alternating rounds (broker, pgqueuer,
broker, ...), on the same PostgreSQL server (the database ``bench.run`` picks:
``BROKER_BENCH_DATABASE_URL``, ``BROKER_TEST_DATABASE_URL``, else the embedded pgserver), each
side in its own database, both dropped at the end:

- **broker**: one partner with ``--registrations`` (32) registrations of one event type, each
  to its own ``/hook/q{k}`` with its own secret. ``BROKER_WINDOW_MAX_RESOURCES=1``, so each
  resource is a window of its own: a round ingests ``deliveries / registrations`` (625)
  resources in one POST to the API, and a fresh worker process (started and ready before the
  round begins) aggregates them into 625 windows x 32 registrations = 20,000 event objects,
  delivers them, records every attempt and runs the state machine.
- **pgqueuer**: a fresh ``bench/peers/consumer.py`` process (ready before the round begins);
  the runner enqueues 20,000 jobs in one batch (bodies of the same shape, to the same 32 hook
  names with the same secrets); the consumer POSTs each through broker's own ``send``.
  pgqueuer as its performance guide recommends for short jobs: a dedicated connection for the
  ``QueueManager``, ``batch_size`` 64, ``max_concurrent_tasks`` 256 (broker's default delivery
  concurrency), its autovacuum settings (``pgq autovac``), default (durable) tables, as
  broker's are.

A round's rate is deliveries / (the moment everything is recorded - the first arrival at the
receiver): for broker, no queue row left for the registrations; for pgqueuer, no job left in
its queue table (a finished job is deleted and logged). Both are checked every 50 ms, and only
once the receiver has counted every POST. CPU per delivery (``CpuMeter``, sampled from
``/proc``) counts, from the round's start to its end: broker's worker, its API process (the
ingest) and PostgreSQL; pgqueuer's consumer and PostgreSQL (including the enqueue). The last
line is one JSON object, also written to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from bench.procs import ROOT, Proc, base_env
from bench.run import QUICK, Bench, Sizes, _with_database, say
from broker.domain.ids import uuid7
from broker.domain.payload import event_body

PEERS_EVENT = "Bench.Peers.Done"
TARGET_RATIO = 1.5


@dataclass(frozen=True)
class Options:
    deliveries: int
    registrations: int
    rounds: int
    batch_size: int
    concurrency: int
    max_seconds: float
    ceiling: bool
    preclosed: bool
    closer: bool
    waits: bool


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


class PeersBench(Bench):
    """``bench.run``'s machinery (database, receiver, API, CPU meter) for the two sides."""

    def __init__(self, options: Options, profile_dir: Path | None) -> None:
        sizes = Sizes(**{**asdict(QUICK), "mode": "peers", "api_processes": 1})
        super().__init__(sizes, profile_dir)
        self.options = options
        self.windows = options.deliveries // options.registrations
        self.registrations: list[dict[str, Any]] = []
        self.pgq_db_name = ""
        self.pgq_url = ""
        self.pgq_conn: asyncpg.Connection | None = None
        self.targets_file = self.log_dir / "targets.json"
        # py-spy records for a fixed time: about one round (idle samples are reported apart).
        self.profile_seconds = min(options.max_seconds, max(2.0, options.deliveries / 2000))

    def env(self, port: int, **extra: str) -> dict[str, str]:
        # One resource per window, in the API (which computes due times) and the aggregator.
        return super().env(port, **{"BROKER_WINDOW_MAX_RESOURCES": "1", **extra})

    # ------------------------------------------------------------------ setup

    async def setup_peers(self) -> None:
        await self.setup()
        o = self.options
        await self.call(
            "PUT", f"/admin/v1/event-types/{PEERS_EVENT}", body={"description": PEERS_EVENT}
        )
        partner = self.partners[0]
        targets: dict[str, dict[str, str]] = {}
        for k in range(o.registrations):
            url = f"http://127.0.0.1:{self.receiver_port}/hook/q{k}"
            reg = await self.call(
                "POST",
                "/webhooks/v1/registrations",
                key=partner["apiKey"],
                body={"url": url, "eventTypes": [PEERS_EVENT]},
            )
            self.registrations.append(reg)
            targets[f"q{k}"] = {"url": url, "secret": reg["secret"]}
        self.targets_file.write_bytes(orjson.dumps(targets))
        await self.receiver(
            "POST", "/_config", {"secrets": {n: t["secret"] for n, t in targets.items()}}
        )

        from pgqueuer import AsyncpgDriver, Queries

        self.pgq_db_name = f"{self.db_name}_pgq"
        conn = await asyncpg.connect(self._base_url)
        try:
            await conn.execute(f'CREATE DATABASE "{self.pgq_db_name}"')
        finally:
            await conn.close()
        self.pgq_url = _with_database(self._base_url, self.pgq_db_name)
        self.pgq_conn = await asyncpg.connect(self.pgq_url)
        queries = Queries(AsyncpgDriver(self.pgq_conn))
        await queries.install()
        await queries.optimize_autovacuum()
        say(f"pgqueuer installed in {self.pgq_db_name} (autovacuum settings applied)")

    async def teardown(self) -> None:
        if self.pgq_conn is not None:
            with contextlib.suppress(Exception):
                await self.pgq_conn.close()
        await super().teardown()
        if self.pgq_db_name and not self.keep:
            with contextlib.suppress(Exception):
                conn = await asyncpg.connect(self._base_url)
                try:
                    await conn.execute(f'DROP DATABASE IF EXISTS "{self.pgq_db_name}" WITH (FORCE)')
                finally:
                    await conn.close()

    # ------------------------------------------------------------------ measuring

    async def db_counters(self, conn: Any, name: str) -> dict[str, int]:
        """Transactions and rows written in one database (pg_stat_database, flushed first)."""
        with contextlib.suppress(asyncpg.PostgresError):
            await conn.execute("SELECT pg_stat_force_next_flush()")
        await asyncio.sleep(1.1)  # other backends flush their counters at most once a second
        row = await conn.fetchrow(
            "SELECT xact_commit, tup_inserted, tup_updated, tup_deleted, tup_fetched"
            " FROM pg_stat_database WHERE datname = $1",
            name,
        )
        return dict(row) if row else {}

    async def until_done(
        self,
        label: str,
        done: Callable[[], Awaitable[bool]],
        started: float,
        proc: Proc,
        progress: Callable[[], Awaitable[str]] | None = None,
    ) -> tuple[float | None, dict[str, Any]]:
        """Poll the receiver (and ``done()`` once it has every POST) every 50 ms."""
        o = self.options
        deadline = started + o.max_seconds
        last_print = started
        while time.perf_counter() < deadline:
            stats = await self.receiver("GET", "/_stats")
            now = time.perf_counter()
            if now - last_print >= 2:
                last_print = now
                more = await progress() if progress else ""
                say(f"  {label} {now - started:5.1f}s  {stats['count']:,} received{more}")
            if stats["count"] >= o.deliveries and await done():
                return time.time(), stats
            if not proc.alive():
                raise RuntimeError(f"{proc.name} died:\n{proc.tail()}")
            await asyncio.sleep(0.05)
        return None, await self.receiver("GET", "/_stats")

    async def sample_waits(self, db_name: str) -> dict[str, float]:
        """Until cancelled, every 100 ms: what each busy backend of ``db_name`` is doing (state,
        wait event, the statement's first words). Returns backends per sample, by kind."""
        assert self.pool is not None
        counts: dict[str, int] = {}
        samples = 0
        try:
            while True:
                rows = await self.pool.fetch(
                    "SELECT state, wait_event_type, wait_event,"
                    " left(regexp_replace(query, '\\s+', ' ', 'g'), 70) AS q"
                    " FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()"
                    " AND state <> 'idle'",
                    db_name,
                )
                samples += 1
                for r in rows:
                    key = f"{r['state']} | {r['wait_event_type']}:{r['wait_event']} | {r['q']}"
                    counts[key] = counts.get(key, 0) + 1
                await asyncio.sleep(0.1)
        except asyncio.CancelledError:
            top = sorted(counts.items(), key=lambda kv: -kv[1])[:15]
            return {k: round(v / max(samples, 1), 3) for k, v in top}

    async def stop_sampler(
        self, sampler: asyncio.Task[dict[str, float]] | None
    ) -> dict[str, float]:
        if sampler is None:
            return {}
        sampler.cancel()
        return await sampler

    def cpu_used(self, before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        used = {k: after[k] - before.get(k, 0.0) for k in after}
        ours = sum(v for k, v in used.items() if k != "machine")
        used["other"] = max(0.0, used.get("machine", 0.0) - ours)
        return used

    def outcome(
        self,
        side: str,
        own: list[str],
        used: dict[str, float],
        finished_at: float | None,
        stats: dict[str, Any],
        wall: float,
    ) -> dict[str, Any]:
        n = self.options.deliveries
        span = max((finished_at or time.time()) - (stats["first_at"] or time.time()), 1e-6)
        per = {k: round(used.get(k, 0.0) * 1e6 / n, 1) for k in own}
        return {
            "side": side,
            "per_s": round(n / span, 1),
            "seconds": round(span, 3),
            "complete": finished_at is not None,
            "received": stats["count"],
            "duplicates": stats["duplicates"],
            "bad_signatures": stats["bad_signatures"],
            "cpu_us_per_delivery": round(sum(per.values()), 1),
            "cpu_us_per_delivery_by": per,
            # Cores busy over the round: whatever else ran on the machine is "other".
            "cores": {k: round(v / max(wall, 1e-6), 2) for k, v in used.items() if v > 0.005},
        }

    async def ingest_windows(self, n: int) -> None:
        items = [
            {
                "partnerId": self.partners[0]["id"],
                "eventName": PEERS_EVENT,
                "resource": f"core/v1/dda/peers/{n}/{i}",
            }
            for i in range(self.windows)
        ]
        await self.call(
            "POST",
            "/internal/v1/resource-events",
            key=self.producer_key,
            body={"events": items},
            expect=(202,),
        )

    async def set_paused(self, paused: bool) -> None:
        key = self.partners[0]["apiKey"]
        verb = "pause" if paused else "unpause"
        for reg in self.registrations:
            await self.call("POST", f"/webhooks/v1/registrations/{reg['id']}/{verb}", key=key)

    async def broker_round(self, n: int, *, preclosed: bool = False) -> dict[str, Any]:
        """One broker round. ``preclosed`` (a diagnostic): the registrations are paused while the
        worker closes every window, and the clock starts when they are unpaused, so the round
        times delivery alone, of the same 20,000 event objects."""
        o = self.options
        assert self.pool is not None
        pool = self.pool
        regs = [uuid.UUID(r["id"]) for r in self.registrations]
        queued_sql = "SELECT count(*) FROM delivery_queue WHERE registration_id = ANY($1)"
        windows_sql = (
            "SELECT coalesce(sum(queued_count), 0) FROM window_groups WHERE event_name = $1"
        )
        await self.receiver("POST", "/_reset")
        if preclosed:
            await self.set_paused(True)
        worker, _ = await self.start_broker("worker", "broker-worker")
        closer: Proc | None = None
        if o.closer:
            # Diagnostic: a second worker process with one delivery slot, so most window closes
            # run on a loop that is not also running 256 HTTP requests (the advisory lock gives
            # each close to one of the two processes).
            closer, _ = await self.start_broker(
                "worker", "broker-closer", BROKER_DELIVERY_CONCURRENCY="1"
            )
        await asyncio.sleep(0.5)
        aggregate: dict[str, float] = {}
        if preclosed:
            # The closes alone, timed and metered apart: what aggregation costs when nothing
            # is being delivered meanwhile.
            self.meter.db_name = self.db_name
            await self.meter.sample()
            closing = self.meter.snapshot()
            closing_started = time.perf_counter()
            await self.ingest_windows(n)
            closed_by = time.monotonic() + o.max_seconds
            while (
                await pool.fetchval(windows_sql, PEERS_EVENT)
                or await pool.fetchval(queued_sql, regs) < o.deliveries
            ):
                if time.monotonic() > closed_by:
                    raise RuntimeError("preclosed: the windows did not close in time")
                await asyncio.sleep(0.05)
            await self.meter.sample()
            aggregate = self.cpu_used(closing, self.meter.snapshot())
            aggregate["seconds"] = time.perf_counter() - closing_started
        counters = await self.db_counters(pool, self.db_name)
        self.meter.db_name = self.db_name
        await self.meter.sample()
        before = self.meter.snapshot()
        started = time.perf_counter()
        self.profiler.start(f"broker-worker-round{n}", worker.pid, self.profile_seconds)
        if preclosed:
            await self.set_paused(False)
        else:
            await self.ingest_windows(n)

        async def done() -> bool:
            return bool(await pool.fetchval(queued_sql, regs) == 0)

        async def progress() -> str:
            # Where the work waits: resources not yet folded, event objects not yet delivered.
            windows = await pool.fetchval(windows_sql, PEERS_EVENT)
            queued = await pool.fetchval(queued_sql, regs)
            return f", {windows} windows to close, {queued:,} event objects queued"

        sampler = asyncio.create_task(self.sample_waits(self.db_name)) if o.waits else None
        try:
            finished_at, stats = await self.until_done("broker", done, started, worker, progress)
        finally:
            waits = await self.stop_sampler(sampler)
        await self.meter.sample()
        wall = time.perf_counter() - started
        used = self.cpu_used(before, self.meter.snapshot())
        self.profiler.wait()
        for proc in (worker, closer):
            if proc is not None:
                proc.stop()
                self.procs.remove(proc)
        after = await self.db_counters(pool, self.db_name)
        side = "broker_preclosed" if preclosed else "broker"
        result = self.outcome(
            side,
            ["broker-worker", "broker-closer", "api0", "postgres"],
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
                "windows_per_s": round(self.windows / aggregate["seconds"], 1),
                "cpu_us_per_event_object": {
                    k: round(aggregate.get(k, 0.0) * 1e6 / o.deliveries, 1)
                    for k in ("broker-worker", "broker-closer", "api0", "postgres")
                },
            }
        result["attempts_recorded"] = await pool.fetchval(
            "SELECT count(*) FROM attempts a JOIN events e ON e.id = a.event_id"
            " WHERE e.registration_id = ANY($1) AND e.resources[1] LIKE $2",
            regs,
            f"core/v1/dda/peers/{n}/%",
        )
        result["db_per_delivery"] = {
            k: round((after.get(k, 0) - counters.get(k, 0)) / o.deliveries, 2) for k in after
        }
        return result

    async def pgqueuer_round(self, n: int) -> dict[str, Any]:
        from pgqueuer import AsyncpgDriver, Queries

        o = self.options
        assert self.pgq_conn is not None
        conn = self.pgq_conn
        queries = Queries(AsyncpgDriver(conn))
        await queries.clear_queue()
        await queries.clear_queue_log()
        await queries.clear_statistics_log()
        created = datetime.now(UTC)
        partner = uuid.UUID(self.partners[0]["id"])
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
                    registration_id=uuid.UUID(self.registrations[k]["id"]),
                    created_at=created,
                    previous_attempted_at=None,
                    resources=[f"core/v1/dda/peers/{n}/{i // o.registrations}"],
                )
            )
            headers.append({"target": f"q{k}", "id": str(event_id)})
        await self.receiver("POST", "/_reset")
        consumer = self.spawn(
            "pgqueuer-consumer",
            [
                sys.executable,
                "-m",
                "bench.peers.consumer",
                "--dsn",
                self.pgq_url,
                "--targets",
                str(self.targets_file),
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
        counters = await self.db_counters(conn, self.pgq_db_name)
        self.meter.db_name = self.pgq_db_name
        await self.meter.sample()
        before = self.meter.snapshot()
        started = time.perf_counter()
        self.profiler.start(f"pgqueuer-consumer-round{n}", consumer.pid, self.profile_seconds)
        await queries.enqueue(
            ["webhook"] * o.deliveries, bodies, [0] * o.deliveries, None, None, headers
        )
        enqueue_s = time.perf_counter() - started

        async def done() -> bool:
            return bool(await conn.fetchval("SELECT count(*) FROM pgqueuer") == 0)

        sampler = asyncio.create_task(self.sample_waits(self.pgq_db_name)) if o.waits else None
        try:
            finished_at, stats = await self.until_done("pgqueuer", done, started, consumer)
        finally:
            waits = await self.stop_sampler(sampler)
        await self.meter.sample()
        wall = time.perf_counter() - started
        used = self.cpu_used(before, self.meter.snapshot())
        self.profiler.wait()
        consumer.stop()
        self.procs.remove(consumer)
        after = await self.db_counters(conn, self.pgq_db_name)
        result = self.outcome(
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
            k: round((after.get(k, 0) - counters.get(k, 0)) / o.deliveries, 2) for k in after
        }
        return result

    async def ceiling_round(self) -> dict[str, Any]:
        """bench.ceiling (a bare aiohttp client, no database) for the same count."""
        o = self.options
        await self.receiver("POST", "/_reset")
        secret = self.registrations[0]["secret"]
        proc = self.spawn(
            "ceiling",
            [
                sys.executable,
                "-m",
                "bench.ceiling",
                "--port",
                str(self.receiver_port),
                "--count",
                str(o.deliveries),
                "--concurrency",
                str(o.concurrency),
                "--seconds",
                str(o.max_seconds),
                "--secret",
                secret,
                "--url-path",
                "/hook/q0",
            ],
            base_env(),
        )
        await asyncio.to_thread(proc.popen.wait, o.max_seconds + 60)
        proc.stop()
        lines = [ln for ln in proc.tail(5).splitlines() if ln.startswith("{")]
        if not lines:
            raise RuntimeError(f"ceiling client failed:\n{proc.tail()}")
        outcome: dict[str, Any] = orjson.loads(lines[-1])
        stats = await self.receiver("GET", "/_stats")
        outcome["cpu_us_per_post"] = round(outcome["cpu_s"] * 1e6 / max(outcome["ok"], 1), 1)
        outcome["bad_signatures"] = stats["bad_signatures"]
        return outcome

    # ------------------------------------------------------------------ the run

    async def run_peers(self) -> dict[str, Any]:
        o = self.options
        load_start = [round(x, 2) for x in os.getloadavg()]
        self.meter.start()
        rounds: list[dict[str, Any]] = []
        ceiling: dict[str, Any] | None = None
        try:
            await self.setup_peers()
            sides = ("broker", "pgqueuer", "broker_preclosed")[: 3 if o.preclosed else 2]
            for n in range(o.rounds):
                for side in sides:
                    say(f"round {n + 1}/{o.rounds}: {side}, {o.deliveries:,} deliveries")
                    if side == "pgqueuer":
                        result = await self.pgqueuer_round(n)
                    else:
                        # Resources of the pre-closed round apart from the plain round's.
                        preclosed = side == "broker_preclosed"
                        result = await self.broker_round(
                            n + o.rounds if preclosed else n, preclosed=preclosed
                        )
                    result["round"] = n + 1
                    result["loadavg_1m"] = round(os.getloadavg()[0], 2)
                    rounds.append(result)
                    say(
                        f"  {side}: {result['per_s']:,.0f}/s, {result['cpu_us_per_delivery']:.0f} us"
                        f" CPU per delivery, other {result['cores'].get('other', 0):.2f} cores"
                    )
            if o.ceiling:
                ceiling = await self.ceiling_round()
                say(f"ceiling: {ceiling['per_s']:,.0f}/s, {ceiling['cpu_us_per_post']:.0f} us")
        finally:
            await self.meter.stop()
            await self.teardown()
        return self.summarize(rounds, ceiling, load_start)

    def summarize(
        self, rounds: list[dict[str, Any]], ceiling: dict[str, Any] | None, load_start: list[float]
    ) -> dict[str, Any]:
        broker = [r for r in rounds if r["side"] == "broker"]
        peer = [r for r in rounds if r["side"] == "pgqueuer"]
        ratios = [b["per_s"] / p["per_s"] for b, p in zip(broker, peer, strict=True) if p["per_s"]]
        ratio = round(median(ratios), 3)
        pre = [r for r in rounds if r["side"] == "broker_preclosed"]
        pre_ratios = [
            b["per_s"] / p["per_s"] for b, p in zip(pre, peer, strict=False) if p["per_s"]
        ]
        preclosed = {
            "broker_preclosed_per_s": round(median([r["per_s"] for r in pre])),
            "ratio_preclosed_over_pgqueuer": round(median(pre_ratios), 3),
            "broker_preclosed_cpu_us_per_delivery": round(
                median([r["cpu_us_per_delivery"] for r in pre]), 1
            ),
        }
        return {
            "broker_per_s": round(median([r["per_s"] for r in broker])),
            "pgqueuer_per_s": round(median([r["per_s"] for r in peer])),
            "ratio_broker_over_pgqueuer": ratio,
            "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)] if ratios else [],
            "broker_cpu_us_per_delivery": round(
                median([r["cpu_us_per_delivery"] for r in broker]), 1
            ),
            "pgqueuer_cpu_us_per_delivery": round(
                median([r["cpu_us_per_delivery"] for r in peer]), 1
            ),
            **(preclosed if pre else {}),
            "ceiling_per_s": round(ceiling["per_s"]) if ceiling else None,
            "ceiling_cpu_us_per_post": ceiling["cpu_us_per_post"] if ceiling else None,
            # Median per component, per side (rounds have the detail).
            "cpu_us_per_delivery_by": {
                side: {
                    k: round(median([r["cpu_us_per_delivery_by"][k] for r in rs]), 1)
                    for k in rs[0]["cpu_us_per_delivery_by"]
                }
                for side, rs in (("broker", broker), ("pgqueuer", peer), ("broker_preclosed", pre))
                if rs
            },
            "target": f"ratio_broker_over_pgqueuer >= {TARGET_RATIO:g}",
            "met": ratio >= TARGET_RATIO,
            "options": asdict(self.options),
            "loadavg": {"start": load_start, "end": [round(x, 2) for x in os.getloadavg()]},
            "rounds": rounds,
            "ceiling": ceiling,
            "database": self.details.get("database"),
            "postgres": self.details.get("postgres"),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__)
    parser.add_argument("--deliveries", type=int, default=20_000)
    parser.add_argument("--registrations", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=4, help="rounds of each side, alternating")
    parser.add_argument("--batch-size", type=int, default=64, help="pgqueuer's batch_size")
    parser.add_argument(
        "--concurrency", type=int, default=256, help="pgqueuer's max_concurrent_tasks"
    )
    parser.add_argument("--max-seconds", type=float, default=120, help="per round")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the bare-client round")
    parser.add_argument(
        "--preclosed",
        action="store_true",
        help="a third side per round (diagnostic): broker delivering the same event objects with"
        " every window already closed (registrations paused meanwhile)",
    )
    parser.add_argument(
        "--closer",
        action="store_true",
        help="diagnostic: broker rounds add a second worker process with one delivery slot,"
        " which takes most window closes off the delivering worker's event loop",
    )
    parser.add_argument(
        "--waits",
        action="store_true",
        help="diagnostic: sample pg_stat_activity every 100 ms during each round"
        " (rounds[].backend_states: busy backends per sample, by state, wait and statement)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "peers_results.json")
    parser.add_argument("--profile", type=Path, default=None, help="py-spy each round's worker")
    parser.add_argument("--keep", action="store_true", help="keep both databases")
    args = parser.parse_args(argv)
    if args.deliveries % args.registrations:
        parser.error("--deliveries must be a multiple of --registrations")
    if args.deliveries // args.registrations > 1000:
        parser.error("at most 1000 windows (one ingest request) per round")
    options = Options(
        deliveries=args.deliveries,
        registrations=args.registrations,
        rounds=args.rounds,
        batch_size=args.batch_size,
        concurrency=args.concurrency,
        max_seconds=args.max_seconds,
        ceiling=not args.no_ceiling,
        preclosed=args.preclosed,
        closer=args.closer,
        waits=args.waits,
    )
    bench = PeersBench(options, args.profile)
    bench.keep = args.keep
    say(f"bench.peers: {options}; logs in {bench.log_dir}")
    result = asyncio.run(bench.run_peers())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    print(orjson.dumps(result).decode(), flush=True)
    return 0
