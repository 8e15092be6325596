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
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from bench.peers.broker_side import PEERS_EVENT, broker_round
from bench.peers.measure import median
from bench.peers.pgqueuer_side import pgqueuer_round
from bench.procs import ROOT, Proc, base_env
from bench.run import QUICK, Bench, Sizes, _with_database, say

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
            await self.drop_database(self.pgq_db_name)

    # ------------------------------------------------------------------ measuring

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
                        result = await pgqueuer_round(self, n)
                    else:
                        # Resources of the pre-closed round apart from the plain round's.
                        preclosed = side == "broker_preclosed"
                        result = await broker_round(
                            self, n + o.rounds if preclosed else n, preclosed=preclosed
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
