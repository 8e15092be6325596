"""The benchmark runner: ``python -m bench.run [--quick | --tiny] [--out PATH] [--profile DIR]``.

One run, in order (each phase bounded in count and time, all traffic on 127.0.0.1):

1. a fresh database ``bench_<random>`` on ``BROKER_BENCH_DATABASE_URL``, else
   ``BROKER_TEST_DATABASE_URL``, else the embedded pgserver in ``.bench-pg`` (dropped at the end);
   the receiver subprocess; the API process(es) (``broker serve --role api``);
2. ``ingest_batch``: several clients POST 1000-item batches; then ``copy_ceiling``: asyncpg
   ``copy_records_to_table`` of the same rows, same batch size, same concurrency;
3. ``ingest_single``: one-item requests at concurrency 64;
4. a worker process (``--role worker``) joins; ``close_to_receipt`` on the idle system, then
   ``end_to_end``: resources ingested until every one of them arrived signed at the receiver;
5. the worker stops; SQL inserts the backlog (1,000,000 Pending event objects of a Suspended
   registration in the full run) and the delivery set (Pending, for Active registrations);
   ``events_list`` on that history; a fresh worker delivers the set while its RSS is sampled
   (``delivery``, ``backlog_rss``); the bare aiohttp ``delivery_ceiling`` runs last.

Progress goes to stdout; the last line is the JSON result, also written to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import asyncpg
import orjson

from bench import policies
from bench import retention as bench_retention
from bench import stats as bench_stats
from bench.httpclient import HttpConnection, build_request, percentile
from bench.isolation import (
    phase_idle_registrations,
    phase_noisy_neighbour,
    phase_workers_scaling,
)
from bench.procs import (
    ROOT,
    CpuMeter,
    Proc,
    Profiler,
    base_env,
    broker_command,
    cpu_delta,
    free_port,
    wait_http,
)
from broker.crypto import KeyRing, new_key_text, parse_key

ADMIN_TOKEN = "bench-admin-token-" + secrets.token_hex(8)
WINDOW_MIN_SECONDS = 0.2
WINDOW_MAX_SECONDS = 1.0
WINDOW_MAX_RESOURCES = 1000
BATCH_ITEMS = 1000
PARTNERS = 8
DELIVERY_EVENT = "Bench.Delivery.Done"

TARGETS: dict[str, tuple[str, float]] = {
    "ingest_batch_resources_per_s": (">=", 100_000),
    "ingest_single_requests_per_s": (">=", 3000),
    "delivery_per_s": (">=", 5000),
    "delivery_to_ceiling": (">=", 0.75),
    "delivery_pg_cpu_us": ("<=", 60),
    "delivery_worker_cpu_to_client": ("<=", 1.3),
    "close_to_receipt_p99_ms": ("<=", 500),
    "events_list_p99_ms": ("<=", 20),
    "backlog_rss_mb": ("<=", 300),
    "fifo_out_of_order": ("<=", 0),
    "rate_limited_error": ("<=", 0.10),
    "rate_limited_others_ratio": (">=", 0.9),
    "history_filters_p99_ms": ("<=", 20),
    "window_drain_resources_per_s": (">=", 50_000),
    "window_drain_other_ingest_p99_ms": ("<=", 100),
    "metrics_scrape_p99_ms": ("<=", 10),
    "history_retention_drop_max_ms": ("<=", 1000),
    "history_retention_size_ratio": ("<=", 1.1),
    "noisy_neighbour_p99_delta_s": ("<=", 0.5),
    "idle_registrations_ratio": (">=", 0.9),
    "workers_scaling_3_to_1": (">=", 2.5),
    "stats_7d_p99_ms": ("<=", 50),
}
PHASES = (
    "ingest_batch",
    "copy_ceiling",
    "ingest_single",
    "close_to_receipt",
    "end_to_end",
    "events_list",
    "noisy_neighbour",
    "delivery",
    "delivery_ceiling",
    "fifo_delivery",
    "rate_limited",
    "idle_registrations",
    "workers_scaling",
    "stats",
)
# make bench-history: apart from make bench, because history_filters loads a large table.
# --tiny runs them too (at tiny sizes), so CI checks that they work.
HISTORY_PHASES = ("history_filters", "history_retention", "window_drain", "metrics_scrape")
RESULT_KEYS = (
    "ingest_batch_resources_per_s",
    "ingest_single_requests_per_s",
    "copy_ceiling_rows_per_s",
    "delivery_per_s",
    "delivery_ceiling_per_s",
    "delivery_to_ceiling",
    "delivery_pg_cpu_us",
    "delivery_worker_cpu_to_client",
    "end_to_end_resources_per_s",
    "close_to_receipt_p99_ms",
    "events_list_p99_ms",
    "backlog_rss_mb",
    *policies.RESULT_KEYS,
    "noisy_neighbour_p99_delta_s",
    "idle_registrations_ratio",
    "workers_scaling_3_to_1",
    *bench_stats.RESULT_KEYS,
)
HISTORY_KEYS = (
    "history_filters_p99_ms",
    "window_drain_resources_per_s",
    "window_drain_other_ingest_p99_ms",
    "metrics_scrape_p99_ms",
    *bench_retention.RESULT_KEYS,
)
HISTORY_EVENT_NAMES = tuple(f"Bench.History.H{i}" for i in range(5))
DRAIN_EVENT = "Bench.Drain.Hot"
DRAIN_OTHER_EVENT = "Bench.Drain.Other"


@dataclass(frozen=True)
class Sizes:
    mode: str
    api_processes: int
    ingest_seconds: float
    ingest_clients: int
    single_seconds: float
    single_concurrency: int
    latency_samples: int
    latency_spacing_s: float
    e2e_resources: int
    e2e_clients: int
    backlog_events: int
    delivery_events: int
    delivery_registrations: int
    delivery_max_seconds: float
    list_requests: int
    # make bench-history (see HISTORY_PHASES)
    history_events: int = 10_000_000
    history_partners: int = 50
    history_days: int = 30
    history_requests: int = 200
    drain_resources: int = 500_000
    drain_clients: int = 4
    scrape_pending: int = 1_000_000
    scrape_requests: int = 200
    # delivery isolation phases (bench/isolation.py)
    noisy_seconds: float = 40
    noisy_timeout_s: float = 15
    noisy_slow_registrations: int = 100
    idle_registrations: int = 100_000
    idle_events: int = 20_000
    scaling_idle_registrations: int = 20_000
    scaling_events: int = 30_000


FULL = Sizes(
    mode="full",
    api_processes=2,
    ingest_seconds=20,
    ingest_clients=8,
    single_seconds=15,
    single_concurrency=64,
    latency_samples=100,
    latency_spacing_s=0.1,
    e2e_resources=300_000,
    e2e_clients=4,
    backlog_events=1_000_000,
    delivery_events=100_000,
    delivery_registrations=32,
    delivery_max_seconds=120,
    list_requests=200,
    noisy_seconds=40,
    noisy_timeout_s=15,
    noisy_slow_registrations=100,
    idle_registrations=100_000,
    idle_events=20_000,
    scaling_idle_registrations=20_000,
    scaling_events=30_000,
)
QUICK = Sizes(
    mode="quick",
    api_processes=2,
    ingest_seconds=5,
    ingest_clients=8,
    single_seconds=5,
    single_concurrency=64,
    latency_samples=30,
    latency_spacing_s=0.1,
    e2e_resources=50_000,
    e2e_clients=4,
    backlog_events=100_000,
    delivery_events=20_000,
    delivery_registrations=32,
    delivery_max_seconds=30,
    list_requests=200,
    history_events=300_000,
    history_requests=100,
    drain_resources=100_000,
    scrape_pending=200_000,
    scrape_requests=200,
    noisy_seconds=20,
    noisy_timeout_s=15,
    noisy_slow_registrations=100,
    idle_registrations=20_000,
    idle_events=10_000,
    scaling_idle_registrations=20_000,
    scaling_events=5_000,
)
TINY = Sizes(
    mode="tiny",
    api_processes=1,
    ingest_seconds=1.5,
    ingest_clients=4,
    single_seconds=1.5,
    single_concurrency=64,
    latency_samples=5,
    latency_spacing_s=0.1,
    e2e_resources=5_000,
    e2e_clients=2,
    backlog_events=5_000,
    delivery_events=1_000,
    delivery_registrations=4,
    delivery_max_seconds=15,
    list_requests=30,
    history_events=20_000,
    history_partners=3,
    history_days=2,
    history_requests=5,
    drain_resources=5_000,
    drain_clients=2,
    scrape_pending=5_000,
    scrape_requests=20,
    noisy_seconds=2,
    noisy_timeout_s=1,
    noisy_slow_registrations=10,
    idle_registrations=500,
    idle_events=300,
    scaling_idle_registrations=500,
    scaling_events=300,
)


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def base_database_url() -> tuple[str, str]:
    for var in ("BROKER_BENCH_DATABASE_URL", "BROKER_TEST_DATABASE_URL"):
        url = os.environ.get(var)
        if url:
            return url, var
    from broker.store.db import embedded_database_url

    return embedded_database_url(ROOT / ".bench-pg"), "embedded pgserver (.bench-pg)"


def iso_ms(moment: datetime) -> str:
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


class Bench:
    def __init__(self, sizes: Sizes, profile_dir: Path | None) -> None:
        self.sizes = sizes
        self.procs: list[Proc] = []
        self.log_dir = Path(tempfile.mkdtemp(prefix="broker-bench-"))
        self.profiler = Profiler(profile_dir)
        self.results: dict[str, Any] = {}
        self.details: dict[str, Any] = {}
        self.admin_url = ""
        self.db_url = ""
        self.db_name = ""
        self.api_ports: list[int] = []
        self.api_procs: list[Proc] = []
        self.worker: Proc | None = None
        self.receiver_port = 0
        self.partners: list[dict[str, Any]] = []
        self.partner_regs: list[dict[str, Any]] = []
        self.producer_key = ""
        self.pool: asyncpg.Pool | None = None
        self.meter = CpuMeter(self.procs)
        # Items each phase handled (resource events, requests, deliveries): CPU per item.
        self.phase_items: dict[str, int] = {}
        self.keep = False
        self.event_serial = 0  # keeps event ids of successive insert_events calls apart
        # One key for every process of the run (not the checkout's key file), so phases that
        # write registrations by SQL can seal their secrets the way the broker would.
        self.key_text = new_key_text()
        self.key_ring = KeyRing([parse_key(self.key_text, position=1)], source="bench key")

    # ------------------------------------------------------------------ plumbing

    def env(self, port: int, **extra: str) -> dict[str, str]:
        env = base_env()
        env.update(
            BROKER_DATABASE_URL=self.db_url,
            BROKER_HOST="127.0.0.1",
            BROKER_PORT=str(port),
            BROKER_ADMIN_TOKEN=ADMIN_TOKEN,
            BROKER_ENCRYPTION_KEYS=self.key_text,
            BROKER_ALLOW_PRIVATE_URLS="true",
            BROKER_WINDOW_MIN_SECONDS=str(WINDOW_MIN_SECONDS),
            BROKER_WINDOW_MAX_SECONDS=str(WINDOW_MAX_SECONDS),
            BROKER_WINDOW_MAX_RESOURCES=str(WINDOW_MAX_RESOURCES),
            BROKER_LOG_LEVEL="WARNING",
        )
        env.update(extra)
        return env

    def spawn(self, name: str, cmd: list[str], env: dict[str, str]) -> Proc:
        proc = Proc(name, cmd, env, self.log_dir)
        self.procs.append(proc)
        return proc

    async def start_broker(self, role: str, name: str, **env: str) -> tuple[Proc, int]:
        port = free_port()
        proc = self.spawn(name, [*broker_command(), "serve", "--role", role], self.env(port, **env))
        await wait_http(proc, port, "/readyz")
        return proc, port

    def stop(self, proc: Proc | None) -> None:
        if proc is not None:
            proc.stop()

    async def call(
        self,
        method: str,
        path: str,
        *,
        key: str = ADMIN_TOKEN,
        body: Any = None,
        port: int | None = None,
        expect: tuple[int, ...] = (200, 201, 202, 204),
    ) -> Any:
        port = port or self.api_ports[0]
        raw = b"" if body is None else orjson.dumps(body)
        conn = HttpConnection(port)
        try:
            reply = await conn.send(
                build_request(
                    method, path, port, body=raw, headers={"Authorization": f"Bearer {key}"}
                )
            )
        finally:
            await conn.close()
        if reply.status not in expect:
            raise RuntimeError(f"{method} {path} -> {reply.status}: {reply.body[:500]!r}")
        return orjson.loads(reply.body) if reply.body else None

    async def receiver(self, method: str, path: str, body: Any = None) -> Any:
        conn = HttpConnection(self.receiver_port)
        try:
            reply = await conn.send(
                build_request(
                    method, path, self.receiver_port, body=orjson.dumps(body) if body else b""
                )
            )
        finally:
            await conn.close()
        return orjson.loads(reply.body)

    async def progress(
        self, label: str, sample: Callable[[], Awaitable[tuple[float, str]]], every: float = 1.0
    ) -> None:
        """Print ``label: value`` every ``every`` seconds until cancelled."""
        started = time.perf_counter()
        while True:
            await asyncio.sleep(every)
            _, text = await sample()
            say(f"  {label} {time.perf_counter() - started:5.1f}s  {text}")

    # ------------------------------------------------------------------ setup

    async def setup(self) -> None:
        base, where = base_database_url()
        self.details["database"] = where
        self.db_name = f"bench_{secrets.token_hex(6)}"
        conn = await asyncpg.connect(base)
        try:
            await conn.execute(f'CREATE DATABASE "{self.db_name}"')
            self.details["postgres"] = await conn.fetchval("SHOW server_version")
            self.details["postgres_settings"] = {
                name: await conn.fetchval(f"SHOW {name}")
                for name in ("fsync", "synchronous_commit", "shared_buffers")
            }
        finally:
            await conn.close()
        self._base_url = base
        self.db_url = _with_database(base, self.db_name)
        say(f"database {self.db_name} on {where}")
        from broker.store.db import migrate

        conn = await asyncpg.connect(self.db_url)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        self.pool = await asyncpg.create_pool(self.db_url, min_size=1, max_size=8)
        self.meter.pool, self.meter.db_name = self.pool, self.db_name

        self.receiver_port = free_port()
        rec = self.spawn(
            "receiver",
            [sys.executable, "-m", "bench.receiver", "--port", str(self.receiver_port)],
            base_env(),
        )
        await wait_http(rec, self.receiver_port, "/_stats")
        for i in range(self.sizes.api_processes):
            proc, port = await self.start_broker("api", f"api{i}")
            self.api_procs.append(proc)
            self.api_ports.append(port)
        say(f"receiver on :{self.receiver_port}, api on {self.api_ports}")

        names = [f"Bench.Ingest.E{i}" for i in range(4)]
        names += [f"Bench.Latency.L{i}" for i in range(10)]
        names += [f"Bench.E2e.F{i}" for i in range(4)]
        names += [DELIVERY_EVENT]
        for name in names:
            await self.call("PUT", f"/admin/v1/event-types/{name}", body={"description": name})
        self.producer_key = (
            await self.call("POST", "/admin/v1/producer-keys", body={"name": "bench"})
        )["apiKey"]
        secrets_by_name: dict[str, str] = {}
        for i in range(PARTNERS):
            partner = await self.call("POST", "/admin/v1/partners", body={"name": f"bench-{i}"})
            self.partners.append(partner)
            reg = await self.call(
                "POST",
                "/webhooks/v1/registrations",
                key=partner["apiKey"],
                body={
                    "url": f"http://127.0.0.1:{self.receiver_port}/hook/p{i}",
                    "eventTypes": ["Bench.Latency.*", "Bench.E2e.*"],
                },
            )
            self.partner_regs.append(reg)
            secrets_by_name[f"p{i}"] = reg["secret"]
        await self.receiver("POST", "/_config", {"parse": True, "secrets": secrets_by_name})

    async def teardown(self) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                proc.stop()
        if self.pool is not None:
            with contextlib.suppress(Exception):
                await self.pool.close()
        if self.keep and self.db_name:
            say(f"kept database {self.db_url}")
        elif self.db_name:
            await self.drop_database(self.db_name)

    async def drop_database(self, name: str) -> None:
        """Best effort: a teardown goes on whatever this meets."""
        with contextlib.suppress(Exception):
            conn = await asyncpg.connect(self._base_url)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await conn.close()

    async def reset_ingest_tables(self) -> None:
        assert self.pool is not None
        await self.pool.execute("TRUNCATE resource_events, window_groups")

    # ------------------------------------------------------------------ ingest

    def ingest_request(self, port: int, items: list[dict[str, Any]]) -> bytes:
        return build_request(
            "POST",
            "/internal/v1/resource-events",
            port,
            body=orjson.dumps({"events": items}),
            headers={"Authorization": f"Bearer {self.producer_key}"},
        )

    def batch_items(
        self, n: int, *, prefix: str, names: list[str], size: int
    ) -> list[dict[str, Any]]:
        occurred = iso_ms(datetime.now(UTC))
        partner = self.partners[n % PARTNERS]["id"]
        name = names[(n // PARTNERS) % len(names)]
        return [
            {
                "partnerId": partner,
                "eventName": name,
                "resource": f"{prefix}/{n * size + j}",
                "occurredAt": occurred,
            }
            for j in range(size)
        ]

    async def drive(
        self,
        label: str,
        requests: list[list[bytes]],
        *,
        clients: int,
        seconds: float,
        items_per_request: int,
        cycle: bool,
    ) -> dict[str, Any]:
        """``clients`` connections, each sending its list of prebuilt requests (cycling when
        ``cycle``) until ``seconds`` pass; counts 202s."""
        accepted = 0
        failed = 0
        last_error = ""
        deadline = time.perf_counter() + seconds
        done_at = time.perf_counter()

        async def client(i: int) -> None:
            nonlocal accepted, failed, last_error, done_at
            own = requests[i]
            port = self.api_ports[i % len(self.api_ports)]
            conn = HttpConnection(port)
            n = 0
            try:
                while time.perf_counter() < deadline and (cycle or n < len(own)):
                    reply = await conn.send(own[n % len(own)])
                    n += 1
                    if reply.status == 202:
                        accepted += 1
                    else:
                        failed += 1
                        last_error = f"{reply.status} {reply.body[:200]!r}"
                    done_at = max(done_at, time.perf_counter())
            finally:
                await conn.close()

        async def sample() -> tuple[float, str]:
            return accepted, f"{accepted * items_per_request:,} accepted, {failed} failed"

        started = time.perf_counter()
        ticker = asyncio.create_task(self.progress(label, sample))
        try:
            await asyncio.gather(*(client(i) for i in range(clients)))
        finally:
            ticker.cancel()
        elapsed = max(done_at - started, 1e-6)
        if failed:
            say(f"  {label}: {failed} requests failed, last: {last_error}")
        return {
            "requests": accepted,
            "failed": failed,
            "items": accepted * items_per_request,
            "seconds": round(elapsed, 3),
        }

    async def phase_ingest_batch(self) -> list[list[tuple[Any, ...]]]:
        s = self.sizes
        names = [f"Bench.Ingest.E{i}" for i in range(4)]
        per_client = 24
        batches = [
            self.batch_items(n, prefix="core/v1/dda/accounts", names=names, size=BATCH_ITEMS)
            for n in range(s.ingest_clients * per_client)
        ]
        requests = [
            [
                self.ingest_request(
                    self.api_ports[c % len(self.api_ports)], batches[c * per_client + k]
                )
                for k in range(per_client)
            ]
            for c in range(s.ingest_clients)
        ]
        say(
            f"ingest_batch: {s.ingest_clients} clients x 1000-item batches for {s.ingest_seconds:g}s"
        )
        for proc in self.api_procs:
            self.profiler.start(f"{proc.name}-ingest-batch", proc.pid, s.ingest_seconds)
        run = await self.drive(
            "ingest_batch",
            requests,
            clients=s.ingest_clients,
            seconds=s.ingest_seconds,
            items_per_request=BATCH_ITEMS,
            cycle=True,
        )
        self.profiler.wait()
        rate = run["items"] / run["seconds"]
        self.results["ingest_batch_resources_per_s"] = round(rate)
        self.phase_items["ingest_batch"] = run["items"]
        self.details["ingest_batch"] = {**run, "clients": s.ingest_clients, "batch": BATCH_ITEMS}
        say(f"ingest_batch: {rate:,.0f} resource events/s")
        assert self.pool is not None
        stored = await self.pool.fetchval("SELECT count(*) FROM resource_events")
        if stored != run["items"]:
            raise RuntimeError(f"ingest_batch: {run['items']} accepted but {stored} stored")
        await self.reset_ingest_tables()
        return [
            [
                (uuid.UUID(i["partnerId"]), i["eventName"], i["resource"], datetime.now(UTC))
                for i in batch
            ]
            for batch in batches
        ]

    async def phase_copy_ceiling(self, batches: list[list[tuple[Any, ...]]]) -> None:
        s = self.sizes
        say(f"copy_ceiling: {s.ingest_clients} connections x COPY of the same 1000-row batches")
        rows = 0
        deadline = time.perf_counter() + s.ingest_seconds
        conns = [await asyncpg.connect(self.db_url) for _ in range(s.ingest_clients)]

        async def copier(i: int) -> None:
            nonlocal rows
            conn = conns[i]
            n = i
            while time.perf_counter() < deadline:
                async with conn.transaction():
                    await conn.copy_records_to_table(
                        "resource_events",
                        records=batches[n % len(batches)],
                        columns=("partner_id", "event_name", "resource", "occurred_at"),
                    )
                rows += BATCH_ITEMS
                n += s.ingest_clients

        started = time.perf_counter()
        try:
            await asyncio.gather(*(copier(i) for i in range(s.ingest_clients)))
        finally:
            for conn in conns:
                await conn.close()
        elapsed = time.perf_counter() - started
        rate = rows / elapsed
        self.results["copy_ceiling_rows_per_s"] = round(rate)
        self.phase_items["copy_ceiling"] = rows
        self.details["copy_ceiling"] = {"rows": rows, "seconds": round(elapsed, 3)}
        say(f"copy_ceiling: {rate:,.0f} rows/s")
        await self.reset_ingest_tables()

    async def phase_ingest_single(self) -> None:
        s = self.sizes
        names = [f"Bench.Ingest.E{i}" for i in range(4)]
        per_client = 200
        requests = [
            [
                self.ingest_request(
                    self.api_ports[c % len(self.api_ports)],
                    self.batch_items(
                        c * per_client + k, prefix="core/v1/dda/single", names=names, size=1
                    ),
                )
                for k in range(per_client)
            ]
            for c in range(s.single_concurrency)
        ]
        say(
            f"ingest_single: one-item requests at concurrency {s.single_concurrency} for {s.single_seconds:g}s"
        )
        for proc in self.api_procs:
            self.profiler.start(f"{proc.name}-ingest-single", proc.pid, s.single_seconds)
        run = await self.drive(
            "ingest_single",
            requests,
            clients=s.single_concurrency,
            seconds=s.single_seconds,
            items_per_request=1,
            cycle=True,
        )
        self.profiler.wait()
        rate = run["requests"] / run["seconds"]
        self.results["ingest_single_requests_per_s"] = round(rate)
        self.phase_items["ingest_single"] = run["requests"]
        self.details["ingest_single"] = {**run, "concurrency": s.single_concurrency}
        say(f"ingest_single: {rate:,.0f} requests/s")
        await self.reset_ingest_tables()

    # ------------------------------------------------------------------ pipeline

    async def phase_close_to_receipt(self) -> None:
        s = self.sizes
        say(f"close_to_receipt: {s.latency_samples} windows on an idle system")
        await self.receiver("POST", "/_reset")
        sent: dict[str, float] = {}
        port = self.api_ports[0]
        conn = HttpConnection(port)
        try:
            for i in range(s.latency_samples):
                resource = f"lat/{i}"
                partner = self.partners[i % PARTNERS]["id"]
                name = f"Bench.Latency.L{(i // PARTNERS) % 10}"
                request = self.ingest_request(
                    port, [{"partnerId": partner, "eventName": name, "resource": resource}]
                )
                sent[resource] = time.time()
                reply = await conn.send(request)
                if reply.status != 202:
                    raise RuntimeError(f"latency ingest -> {reply.status}: {reply.body[:300]!r}")
                await asyncio.sleep(s.latency_spacing_s)
        finally:
            await conn.close()
        deadline = time.monotonic() + 15 + WINDOW_MAX_SECONDS
        while time.monotonic() < deadline:
            stats = await self.receiver("GET", "/_stats")
            if stats["count"] >= s.latency_samples:
                break
            await asyncio.sleep(0.1)
        arrivals = {r: t for r, t in await self.receiver("GET", "/_arrivals")}
        missing = [r for r in sent if r not in arrivals]
        latencies = [
            (arrivals[r] - (t + WINDOW_MIN_SECONDS)) * 1000
            for r, t in sent.items()
            if r in arrivals
        ]
        stats = await self.receiver("GET", "/_stats")
        p99 = percentile(latencies, 99) if not missing else float("inf")
        self.results["close_to_receipt_p99_ms"] = round(p99, 1)
        self.details["close_to_receipt"] = {
            "samples": len(sent),
            "missing": len(missing),
            "p50_ms": round(percentile(latencies, 50), 1),
            "max_ms": round(max(latencies), 1) if latencies else None,
            "window_min_seconds": WINDOW_MIN_SECONDS,
            "bad_signatures": stats["bad_signatures"],
            "verified": stats["verified"],
        }
        say(f"close_to_receipt: p99 {p99:.1f} ms ({len(missing)} missing)")

    async def phase_end_to_end(self) -> None:
        s = self.sizes
        names = [f"Bench.E2e.F{i}" for i in range(4)]
        n_batches = max(1, s.e2e_resources // BATCH_ITEMS)
        size = min(BATCH_ITEMS, s.e2e_resources)
        total = n_batches * size
        await self.receiver("POST", "/_reset")
        batches = [
            self.batch_items(n, prefix="e2e", names=names, size=size) for n in range(n_batches)
        ]
        requests: list[list[bytes]] = [[] for _ in range(s.e2e_clients)]
        for n, batch in enumerate(batches):
            c = n % s.e2e_clients
            requests[c].append(self.ingest_request(self.api_ports[c % len(self.api_ports)], batch))
        say(f"end_to_end: {total:,} resources ingested, waiting until all arrive signed")
        assert self.worker is not None
        self.profiler.start("worker-end-to-end", self.worker.pid, 10)
        started_wall = time.time()
        run = await self.drive(
            "end_to_end ingest",
            requests,
            clients=s.e2e_clients,
            seconds=120,
            items_per_request=size,
            cycle=False,
        )
        deadline = time.monotonic() + 120
        last = -1
        stalled_since = time.monotonic()
        while time.monotonic() < deadline:
            stats = await self.receiver("GET", "/_stats")
            if stats["resources"] >= total:
                break
            if stats["resources"] != last:
                last, stalled_since = stats["resources"], time.monotonic()
            elif time.monotonic() - stalled_since > 20:
                break
            await asyncio.sleep(0.2)
        self.profiler.wait()
        stats = await self.receiver("GET", "/_stats")
        delivered = stats["resources"]
        finished = stats["last_at"] or time.time()
        elapsed = max(finished - started_wall, 1e-6)
        rate = delivered / elapsed if delivered >= total else 0.0
        self.results["end_to_end_resources_per_s"] = round(rate)
        self.phase_items["end_to_end"] = delivered
        self.details["end_to_end"] = {
            "resources": total,
            "delivered_resources": delivered,
            "event_objects": stats["count"],
            "duplicates": stats["duplicates"],
            "seconds": round(elapsed, 3),
            "ingest_seconds": run["seconds"],
            "bad_signatures": stats["bad_signatures"],
            "verified": stats["verified"],
        }
        say(
            f"end_to_end: {rate:,.0f} resource events/s ({delivered:,}/{total:,} in {elapsed:.1f}s)"
        )

    # ------------------------------------------------------------------ history, delivery

    async def insert_events(
        self,
        *,
        partner_id: str,
        registrations: list[str],
        first: int,
        count: int,
        base: datetime,
    ) -> None:
        assert self.pool is not None
        resources = ", ".join(f"'core/v1/dda/accounts/' || (g * 10 + {j})" for j in range(10))
        # Pending event objects as a window close makes them: history rows plus queue rows.
        # (Each its own window; ids are uuid7 at 2 ms steps from base, created_at follows; the
        # low bits hold g, which keeps the ids of successive calls apart.)
        sql = f"""
            WITH s AS MATERIALIZED (
                SELECT g, (lpad(to_hex((extract(epoch FROM ts) * 1000)::bigint), 12, '0')
                           || '70008' || lpad(to_hex(g), 15, '0'))::uuid AS id
                FROM (SELECT g, $4::timestamptz + (g - $7::bigint) * interval '2 ms' AS ts
                      FROM generate_series($5::bigint, $6::bigint) AS g) AS t
            ), win AS (
                INSERT INTO windows (id, partner_id, event_name, resources)
                SELECT id, $1::uuid, $3, ARRAY[{resources}] FROM s
            ), ev AS (
                INSERT INTO events (id, partner_id, registration_id, event_name, window_id,
                                    status)
                SELECT id, $1::uuid, ($2::uuid[])[1 + g % array_length($2::uuid[], 1)], $3,
                       id, 'Pending'
                FROM s
                RETURNING id, registration_id, created_at)
            INSERT INTO delivery_queue (event_id, registration_id, created_at, next_attempt_at)
            SELECT id, registration_id, created_at, now() FROM ev"""
        await self.pool.execute(
            "SELECT broker_ensure_history_partitions($1::date, $2::date)",
            base.date(),
            (base + timedelta(milliseconds=2 * count)).date(),
        )
        chunk = 100_000
        done = 0
        while done < count:
            n = min(chunk, count - done)
            await self.pool.execute(
                sql,
                partner_id,
                registrations,
                DELIVERY_EVENT,
                base,
                first + done,
                first + done + n - 1,
                first,
            )
            done += n
            if count > chunk:
                say(f"  inserted {done:,}/{count:,}")
        await self.pool.execute(
            "INSERT INTO delivery_ready (registration_id, next_due_at)"
            " SELECT id, CASE WHEN status IN ('Active', 'Restarting') THEN now()"
            " ELSE 'infinity' END FROM registrations WHERE id = ANY($1::uuid[])"
            " ON CONFLICT (registration_id) DO UPDATE"
            " SET next_due_at = least(delivery_ready.next_due_at, excluded.next_due_at)",
            registrations,
        )

    async def phase_history(self) -> tuple[list[str], dict[str, str], datetime]:
        s = self.sizes
        partner = self.partners[0]
        pkey = partner["apiKey"]
        delivery_regs: list[str] = []
        secrets_by_name: dict[str, str] = {}
        for k in range(s.delivery_registrations):
            reg = await self.call(
                "POST",
                "/webhooks/v1/registrations",
                key=pkey,
                body={
                    "url": f"http://127.0.0.1:{self.receiver_port}/hook/d{k}",
                    "eventTypes": [DELIVERY_EVENT],
                },
            )
            delivery_regs.append(reg["id"])
            secrets_by_name[f"d{k}"] = reg["secret"]
        held = await self.call(
            "POST",
            "/webhooks/v1/registrations",
            key=pkey,
            body={
                "url": f"http://127.0.0.1:{self.receiver_port}/hook/held",
                "eventTypes": [DELIVERY_EVENT],
            },
        )
        assert self.pool is not None
        await self.pool.execute(
            "UPDATE registrations SET status = 'Suspended' WHERE id = $1", uuid.UUID(held["id"])
        )
        base = datetime.now(UTC) - timedelta(hours=2)
        say(
            f"history: inserting {s.backlog_events:,} Pending event objects (Suspended registration)"
            f" + {s.delivery_events:,} for {s.delivery_registrations} Active registrations"
        )
        started = time.perf_counter()
        await self.insert_events(
            partner_id=partner["id"],
            registrations=[held["id"]],
            first=0,
            count=s.backlog_events,
            base=base,
        )
        await self.insert_events(
            partner_id=partner["id"],
            registrations=delivery_regs,
            first=s.backlog_events,
            count=s.delivery_events,
            base=base,
        )
        await self.pool.execute("ANALYZE")
        stored = await self.pool.fetchval(
            "SELECT count(*) FROM events WHERE partner_id = $1", uuid.UUID(partner["id"])
        )
        self.details["history"] = {
            "events_for_partner": stored,
            "insert_and_analyze_seconds": round(time.perf_counter() - started, 1),
        }
        say(
            f"history: {stored:,} event objects stored for the partner ({time.perf_counter() - started:.1f}s)"
        )
        return delivery_regs, secrets_by_name, base

    async def phase_events_list(self, base: datetime) -> None:
        s = self.sizes
        pkey = self.partners[0]["apiKey"]
        port = self.api_ports[0]
        deep_at = base + timedelta(milliseconds=2 * int(s.backlog_events * 0.2))
        first_page = await self.call("GET", "/webhooks/v1/events", key=pkey)
        assert len(first_page["data"]) == 100, first_page
        seed = await self.call(
            "GET",
            f"/webhooks/v1/events?createdBefore={iso_ms(deep_at)}&limit=100",
            key=pkey,
        )
        cursor = seed["nextCursor"]
        assert cursor, seed
        auth = {"Authorization": f"Bearer {pkey}"}
        pages = {
            "first_page": build_request("GET", "/webhooks/v1/events", port, headers=auth),
            "deep_cursor_page": build_request(
                "GET", f"/webhooks/v1/events?cursor={cursor}", port, headers=auth
            ),
        }
        say(f"events_list: {s.list_requests} GETs each of the first page and a deep cursor page")
        self.profiler.start("api0-events-list", self.api_procs[0].pid, 4)
        conn = HttpConnection(port)
        timings: dict[str, list[float]] = {}
        try:
            for label, request in pages.items():
                for _ in range(10):  # warm-up: plans cached, connections open
                    await conn.send(request)
                values = []
                for _ in range(s.list_requests):
                    t0 = time.perf_counter()
                    reply = await conn.send(request)
                    values.append((time.perf_counter() - t0) * 1000)
                    if reply.status != 200:
                        raise RuntimeError(f"events list -> {reply.status}: {reply.body[:300]!r}")
                timings[label] = values
        finally:
            await conn.close()
        self.profiler.wait()
        detail = {
            label: {
                "p50_ms": round(percentile(v, 50), 2),
                "p99_ms": round(percentile(v, 99), 2),
                "max_ms": round(max(v), 2),
            }
            for label, v in timings.items()
        }
        p99 = max(d["p99_ms"] for d in detail.values())
        self.results["events_list_p99_ms"] = p99
        self.details["events_list"] = {**detail, "requests_each": s.list_requests}
        say("events_list: p99 " + ", ".join(f"{k} {v['p99_ms']:.1f} ms" for k, v in detail.items()))

    async def phase_delivery(self, registrations: list[str]) -> None:
        s = self.sizes
        assert self.pool is not None
        say(f"delivery: one worker process, {s.delivery_events:,} event objects to deliver")
        await self.receiver("POST", "/_reset")
        regs = [uuid.UUID(r) for r in registrations]
        # Cheap checks only while the worker runs: progress from the receiver's counter, and
        # completion from the delivery queue (a count of Success rows would scan the history
        # and load PostgreSQL in the middle of the measurement).
        pending_sql = "SELECT count(*) FROM delivery_queue WHERE registration_id = ANY($1)"
        worker, _ = await self.start_broker("worker", "worker-delivery")
        self.profiler.start("worker-delivery", worker.pid, min(s.delivery_max_seconds, 20))
        peak_rss = 0
        started = time.perf_counter()
        deadline = started + s.delivery_max_seconds
        last_print = started
        finished_at: float | None = None
        while time.perf_counter() < deadline:
            stats = await self.receiver("GET", "/_stats")
            now = time.perf_counter()
            peak_rss = max(peak_rss, worker.rss_kb()[0])
            if now - last_print >= 1:
                last_print = now
                say(
                    f"  delivery {now - started:5.1f}s  {stats['count']:,} received,"
                    f" rss {worker.rss_kb()[0] / 1024:.0f} MB"
                )
            if (
                stats["count"] >= s.delivery_events
                and await self.pool.fetchval(pending_sql, regs) == 0
            ):
                finished_at = time.time()
                break
            if not worker.alive():
                raise RuntimeError(f"worker died:\n{worker.tail()}")
            await asyncio.sleep(0.1)
        ended_at = finished_at or time.time()
        self.profiler.wait()
        rss, hwm = worker.rss_kb()
        peak_rss = max(peak_rss, rss, hwm)
        stats = await self.receiver("GET", "/_stats")
        await self.meter.sample()
        worker.stop()
        delivered = await self.pool.fetchval(
            "SELECT count(*) FROM events WHERE status = 'Success' AND registration_id = ANY($1)",
            regs,
        )
        queued = await self.pool.fetchval("SELECT count(*) FROM events WHERE status = 'Pending'")
        attempts = await self.pool.fetchval(
            "SELECT count(*) FROM attempts a JOIN events e ON e.id = a.event_id"
            " WHERE e.registration_id = ANY($1)",
            regs,
        )
        # From the first delivery's arrival (the worker's start-up excluded) to the moment every
        # event was seen recorded: Success rows per second.
        span = max(ended_at - (stats["first_at"] or ended_at), 1e-6)
        rate = delivered / span
        self.results["delivery_per_s"] = round(rate)
        self.phase_items["delivery"] = delivered
        self.results["backlog_rss_mb"] = round(peak_rss / 1024, 1)
        self.details["delivery"] = {
            "event_objects": s.delivery_events,
            "delivered_success": delivered,
            "complete": finished_at is not None,
            "seconds": round(span, 3),
            "registrations": s.delivery_registrations,
            "receiver_count": stats["count"],
            "duplicates": stats["duplicates"],
            "bad_signatures": stats["bad_signatures"],
            "attempts_recorded": attempts,
        }
        self.details["backlog_rss"] = {
            "queued_at_start": s.backlog_events + s.delivery_events,
            "queued_at_end": queued,
            "peak_rss_mb": round(peak_rss / 1024, 1),
            "how": "VmRSS sampled every 0.1 s plus VmHWM of the worker delivering the set while"
            " the Suspended registration's backlog stays queued",
        }
        say(f"delivery: {rate:,.0f} event objects/s; worker peak RSS {peak_rss / 1024:.0f} MB")

    async def phase_delivery_ceiling(self, secrets_by_name: dict[str, str]) -> None:
        s = self.sizes
        await self.receiver("POST", "/_reset")
        names = sorted(secrets_by_name)
        say(
            f"delivery_ceiling: bare aiohttp client, {s.delivery_events:,} POSTs at concurrency 256"
        )
        cmd = [
            sys.executable,
            "-m",
            "bench.ceiling",
            "--port",
            str(self.receiver_port),
            "--count",
            str(s.delivery_events),
            "--concurrency",
            "256",
            "--seconds",
            str(s.delivery_max_seconds),
            "--secret",
            secrets_by_name[names[0]],
        ]
        for name in names[:1]:
            cmd += ["--url-path", f"/hook/{name}"]
        proc = self.spawn("ceiling", cmd, base_env())
        deadline = time.monotonic() + s.delivery_max_seconds + 60
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(proc.popen.wait, max(1.0, deadline - time.monotonic()))
        proc.stop()
        lines = [ln for ln in proc.tail(5).splitlines() if ln.startswith("{")]
        if not lines:
            raise RuntimeError(f"ceiling client failed:\n{proc.tail()}")
        outcome = orjson.loads(lines[-1])
        stats = await self.receiver("GET", "/_stats")
        self.results["delivery_ceiling_per_s"] = round(outcome["per_s"])
        self.phase_items["delivery_ceiling"] = outcome["ok"]
        ratio = self.results["delivery_per_s"] / outcome["per_s"] if outcome["per_s"] else 0.0
        self.results["delivery_to_ceiling"] = round(ratio, 3)
        self.details["delivery_ceiling"] = {**outcome, "bad_signatures": stats["bad_signatures"]}
        say(f"delivery_ceiling: {outcome['per_s']:,.0f}/s; delivery_to_ceiling {ratio:.2f}")

    # ------------------------------------------------------------------ history at scale

    async def phase_history_filters(self) -> None:
        """Every filter combination of GET /webhooks/v1/events on a large, realistic history."""
        s = self.sizes
        assert self.pool is not None
        partners = []
        for i in range(s.history_partners):
            partner = await self.call("POST", "/admin/v1/partners", body={"name": f"hist-{i}"})
            regs = [
                (
                    await self.call(
                        "POST",
                        "/webhooks/v1/registrations",
                        key=partner["apiKey"],
                        body={"url": f"http://127.0.0.1:9/h{i}-{k}", "eventTypes": ["*"]},
                    )
                )["id"]
                for k in range(2)
            ]
            partners.append((partner, regs))
        # Paused: nothing is delivered (the Pending rows below are history, not queue work).
        await self.pool.execute(
            "UPDATE registrations SET status = 'Paused' WHERE id = ANY($1::uuid[])",
            [uuid.UUID(r) for _, regs in partners for r in regs],
        )
        say(
            f"history_filters: inserting {s.history_events:,} event objects over"
            f" {s.history_partners} partners and {s.history_days} days (SQL)"
        )
        # Realistic mix, drawn independently per row: 90% Success, 7% Failed, 3% Pending;
        # registration 80/20; five event names, two of them rare (5% each); spread evenly over
        # the days, newest now.
        partner_ids = [uuid.UUID(p["id"]) for p, _ in partners]
        reg_ids = [[uuid.UUID(r) for r in regs] for _, regs in partners]
        # Each event object its own window of two resources (ids are uuid7 at ts).
        sql = """
            WITH t AS MATERIALIZED (
                SELECT g, broker_uuid7(ts) AS id, ts, random() AS r1, random() AS r2,
                       random() AS r3
                FROM (SELECT g, now() - ($7::bigint - g) * ($5::float8 * interval '1 second')
                                    AS ts
                      FROM generate_series($8::bigint, $9::bigint) AS g) AS s
            ), w AS (
                INSERT INTO windows (id, partner_id, event_name, resources)
                SELECT id, ($1::uuid[])[1 + g % $6::int],
                       ($4::text[])[CASE WHEN r2 < 0.05 THEN 5 WHEN r2 < 0.10 THEN 4
                                         ELSE 1 + g % 3 END],
                       ARRAY['core/v1/dda/accounts/' || g, 'core/v1/dda/accounts/' || (g + 1)]
                FROM t
            )
            INSERT INTO events (id, partner_id, registration_id, event_name, window_id, status,
                                last_attempted_at, attempt_count)
            SELECT id, ($1::uuid[])[1 + g % $6::int],
                   CASE WHEN r1 < 0.2 THEN ($3::uuid[])[1 + g % $6::int]
                        ELSE ($2::uuid[])[1 + g % $6::int] END,
                   ($4::text[])[CASE WHEN r2 < 0.05 THEN 5 WHEN r2 < 0.10 THEN 4
                                     ELSE 1 + g % 3 END],
                   id,
                   CASE WHEN r3 < 0.90 THEN 'Success' WHEN r3 < 0.97 THEN 'Failed'
                        ELSE 'Pending' END,
                   ts + interval '1 second', 1
            FROM t"""
        await self.pool.execute(
            "SELECT broker_ensure_history_partitions((now() - make_interval(days => $1))::date,"
            " now()::date)",
            s.history_days + 1,
        )
        step = s.history_days * 86400 / s.history_events
        started = time.perf_counter()
        chunk = 500_000
        done = 0
        while done < s.history_events:
            n = min(chunk, s.history_events - done)
            await self.pool.execute(
                sql,
                partner_ids,
                [r[0] for r in reg_ids],
                [r[1] for r in reg_ids],
                list(HISTORY_EVENT_NAMES),
                step,
                len(partner_ids),
                s.history_events,
                done + 1,
                done + n,
            )
            done += n
            if s.history_events > chunk:
                say(f"  inserted {done:,}/{s.history_events:,}")
        await self.pool.execute("ANALYZE events")
        await self.pool.execute("ANALYZE windows")
        load_seconds = time.perf_counter() - started
        say(f"history_filters: loaded in {load_seconds:.0f}s")

        partner, regs = partners[0]
        auth = {"Authorization": f"Bearer {partner['apiKey']}"}
        now = datetime.now(UTC)
        day = timedelta(days=s.history_days) / 30
        values = {
            "registrationId": regs[1],
            "eventName": HISTORY_EVENT_NAMES[3],
            "status": "Failed",
            "createdAfter": iso_ms(now - 25 * day),
            "createdBefore": iso_ms(now - 2 * day),
        }
        deep = iso_ms(now - 20 * day)
        port = self.api_ports[0]
        conn = HttpConnection(port)
        detail: dict[str, dict[str, float]] = {}

        async def get(query: dict[str, str]) -> Any:
            path = "/webhooks/v1/events?" + urlencode({**query, "limit": "100"})
            reply = await conn.send(build_request("GET", path, port, headers=auth))
            if reply.status != 200:
                raise RuntimeError(f"GET {path} -> {reply.status}: {reply.body[:300]!r}")
            return orjson.loads(reply.body)

        try:
            for mask in range(2 ** len(values)):
                chosen = {k: v for i, (k, v) in enumerate(values.items()) if mask >> i & 1}
                shape = "+".join(chosen) or "none"
                seed = await get({**chosen, "createdBefore": deep})
                queries = {"first": chosen}
                if seed["nextCursor"]:
                    queries["deep"] = {**chosen, "cursor": seed["nextCursor"]}
                for page, query in queries.items():
                    path = "/webhooks/v1/events?" + urlencode({**query, "limit": "100"})
                    request = build_request("GET", path, port, headers=auth)
                    for _ in range(10):  # warm-up: past the five custom plans
                        await conn.send(request)
                    timings = []
                    for _ in range(s.history_requests):
                        t0 = time.perf_counter()
                        reply = await conn.send(request)
                        timings.append((time.perf_counter() - t0) * 1000)
                        if reply.status != 200:
                            raise RuntimeError(f"GET {path} -> {reply.status}")
                    detail[f"{shape} {page}"] = {
                        "p50_ms": round(percentile(timings, 50), 2),
                        "p99_ms": round(percentile(timings, 99), 2),
                        "rows": len(orjson.loads(reply.body)["data"]),
                    }
        finally:
            await conn.close()
        worst = max(detail, key=lambda k: detail[k]["p99_ms"])
        self.results["history_filters_p99_ms"] = detail[worst]["p99_ms"]
        self.phase_items["history_filters"] = len(detail) * (s.history_requests + 10)
        self.details["history_filters"] = {
            "events": s.history_events,
            "partners": s.history_partners,
            "days": s.history_days,
            "load_seconds": round(load_seconds, 1),
            "requests_each": s.history_requests,
            "slowest": worst,
            "pages": detail,
        }
        say(f"history_filters: worst p99 {detail[worst]['p99_ms']:.1f} ms ({worst})")

    async def phase_window_drain(self) -> None:
        """One partner's backlog of distinct resources for one event name, ingested as fast as
        four clients can, while another partner's producer sends one-item requests."""
        s = self.sizes
        assert self.pool is not None
        for name in (DRAIN_EVENT, DRAIN_OTHER_EVENT):
            await self.call("PUT", f"/admin/v1/event-types/{name}", body={"description": name})
        hot, other = self.partners[0], self.partners[1]
        for partner, name in ((hot, DRAIN_EVENT), (other, DRAIN_OTHER_EVENT)):
            reg = await self.call(
                "POST",
                "/webhooks/v1/registrations",
                key=partner["apiKey"],
                body={"url": f"http://127.0.0.1:{self.receiver_port}/hook/x", "eventTypes": [name]},
            )
            # Paused: the event objects are made but wait, so delivery does not share the CPU.
            await self.call(
                "POST", f"/webhooks/v1/registrations/{reg['id']}/pause", key=partner["apiKey"]
            )
        batches = [
            [
                {"partnerId": hot["id"], "eventName": DRAIN_EVENT, "resource": f"core/v1/hot/{n}"}
                for n in range(b * BATCH_ITEMS, min((b + 1) * BATCH_ITEMS, s.drain_resources))
            ]
            for b in range((s.drain_resources + BATCH_ITEMS - 1) // BATCH_ITEMS)
        ]
        requests: list[list[bytes]] = [[] for _ in range(s.drain_clients)]
        for b, items in enumerate(batches):
            c = b % s.drain_clients
            requests[c].append(self.ingest_request(self.api_ports[c % len(self.api_ports)], items))
        folded_sql = (
            "SELECT coalesce(sum(cardinality(resources)), 0) FROM windows"
            " WHERE partner_id = $1 AND event_name = $2"
        )
        hot_id = uuid.UUID(hot["id"])
        say(
            f"window_drain: {s.drain_resources:,} distinct resources for one (partner, event"
            f" name), {s.drain_clients} clients, while another producer sends one-item requests"
        )
        latencies: list[float] = []
        stop = asyncio.Event()

        async def other_producer() -> None:
            port = self.api_ports[-1]
            conn = HttpConnection(port)
            n = 0
            try:
                while not stop.is_set():
                    item = {
                        "partnerId": other["id"],
                        "eventName": DRAIN_OTHER_EVENT,
                        "resource": f"core/v1/other/{n}",
                    }
                    t0 = time.perf_counter()
                    reply = await conn.send(self.ingest_request(port, [item]))
                    latencies.append((time.perf_counter() - t0) * 1000)
                    if reply.status != 202:
                        raise RuntimeError(f"other producer -> {reply.status}")
                    n += 1
                    await asyncio.sleep(0.005)
            finally:
                await conn.close()

        producer = asyncio.create_task(other_producer())
        self.profiler.start("worker-window-drain", self.worker.pid if self.worker else 0, 10)
        started = time.perf_counter()
        run = await self.drive(
            "window_drain ingest",
            requests,
            clients=s.drain_clients,
            seconds=120,
            items_per_request=BATCH_ITEMS,
            cycle=False,
        )
        ingested_at = time.perf_counter()
        deadline = ingested_at + 120
        folded = 0
        while time.perf_counter() < deadline:
            folded = await self.pool.fetchval(folded_sql, hot_id, DRAIN_EVENT)
            if folded >= s.drain_resources:
                break
            await asyncio.sleep(0.05)
        drained_at = time.perf_counter()
        stop.set()
        await producer
        self.profiler.wait()
        if folded != s.drain_resources or run["items"] != s.drain_resources:
            raise RuntimeError(
                f"window_drain: {run['items']} ingested, {folded} folded into event objects"
            )
        windows = await self.pool.fetchval(
            "SELECT count(*) FROM events WHERE partner_id = $1 AND event_name = $2",
            hot_id,
            DRAIN_EVENT,
        )
        rate = s.drain_resources / (drained_at - started)
        self.results["window_drain_resources_per_s"] = round(rate)
        self.results["window_drain_other_ingest_p99_ms"] = round(percentile(latencies, 99), 2)
        self.phase_items["window_drain"] = s.drain_resources
        self.details["window_drain"] = {
            "resources": s.drain_resources,
            "event_objects": windows,
            "ingest_seconds": round(ingested_at - started, 2),
            "drained_seconds_after_ingest": round(drained_at - ingested_at, 2),
            "total_seconds": round(drained_at - started, 2),
            "other_requests": len(latencies),
            "other_p50_ms": round(percentile(latencies, 50), 2),
            "other_max_ms": round(max(latencies), 2),
            "how": "resources / (last resource folded into an event object - first batch sent);"
            " the other producer sends one-item requests for another partner back to back"
            " (5 ms apart) on its own connection from first batch to last fold",
        }
        say(
            f"window_drain: {rate:,.0f} resources/s closed into {windows} event objects;"
            f" other producer p99 {percentile(latencies, 99):.1f} ms"
        )

    async def phase_metrics_scrape(self) -> None:
        """GET /metrics with a large queue: the scrape reads the gauge snapshot."""
        s = self.sizes
        assert self.pool is not None
        partner = self.partners[2 % PARTNERS]
        held = await self.call(
            "POST",
            "/webhooks/v1/registrations",
            key=partner["apiKey"],
            body={
                "url": f"http://127.0.0.1:{self.receiver_port}/hook/held",
                "eventTypes": [DELIVERY_EVENT],
            },
        )
        await self.pool.execute(
            "UPDATE registrations SET status = 'Suspended' WHERE id = $1", uuid.UUID(held["id"])
        )
        say(f"metrics_scrape: {s.scrape_pending:,} Pending event objects (Suspended registration)")
        await self.insert_events(
            partner_id=partner["id"],
            registrations=[held["id"]],
            first=10**12,
            count=s.scrape_pending,
            base=datetime.now(UTC) - timedelta(hours=1),
        )
        await self.pool.execute("ANALYZE")
        # What housekeeping runs every BROKER_GAUGE_REFRESH_SECONDS, timed on its own.
        from broker.store.db import create_pool
        from broker.store.store import Store

        store = Store(await create_pool(self.db_url, size=2))
        refresh = []
        try:
            for _ in range(3):
                t0 = time.perf_counter()
                snapshot = await store.refresh_gauge_snapshot()
                refresh.append((time.perf_counter() - t0) * 1000)
        finally:
            await store.close()
        port = self.api_ports[0]
        request = build_request("GET", "/metrics", port)
        conn = HttpConnection(port)
        timings = []
        try:
            for _ in range(10):
                await conn.send(request)
            for _ in range(s.scrape_requests):
                t0 = time.perf_counter()
                reply = await conn.send(request)
                timings.append((time.perf_counter() - t0) * 1000)
                if reply.status != 200:
                    raise RuntimeError(f"/metrics -> {reply.status}")
        finally:
            await conn.close()
        depth = 'broker_queue_depth{registration_status="Suspended"}'
        served = next(
            (
                float(line.split()[-1])
                for line in reply.body.decode().splitlines()
                if line.startswith(depth)
            ),
            None,
        )
        if served is None or served < s.scrape_pending:
            raise RuntimeError(f"metrics_scrape: /metrics shows {served} Suspended-queued")
        self.results["metrics_scrape_p99_ms"] = round(percentile(timings, 99), 2)
        self.phase_items["metrics_scrape"] = s.scrape_requests
        self.details["metrics_scrape"] = {
            "pending": s.scrape_pending,
            "queue_depth_served": served,
            "p50_ms": round(percentile(timings, 50), 2),
            "max_ms": round(max(timings), 2),
            "requests": s.scrape_requests,
            "snapshot_refresh_ms": [round(t, 1) for t in refresh],
            "snapshot_depth": sum(snapshot.queue_depth.values()),
        }
        say(
            f"metrics_scrape: p99 {percentile(timings, 99):.2f} ms; one snapshot refresh"
            f" (housekeeping, every few seconds) {min(refresh):.0f} ms"
        )

    # ------------------------------------------------------------------ the run

    async def run(self, only: set[str] | None = None) -> dict[str, Any]:
        t0 = time.perf_counter()
        phases: dict[str, float] = {}
        cpu: dict[str, dict[str, float]] = {}
        per_item: dict[str, dict[str, float]] = {}
        used: dict[str, dict[str, float]] = {}  # CPU seconds per component and phase, unrounded

        def want(name: str) -> bool:
            return only is None or name in only

        async def timed(name: str, action: Callable[[], Awaitable[Any]]) -> Any:
            await self.meter.sample()
            before = self.meter.snapshot()
            started = time.perf_counter()
            try:
                return await action()
            finally:
                await self.meter.sample()
                wall = time.perf_counter() - started
                phases[name] = round(wall, 1)
                after = self.meter.snapshot()
                cpu[name] = cpu_delta(before, after, wall)
                used[name] = {k: v - before.get(k, 0.0) for k, v in after.items()}
                items = self.phase_items.get(name)
                if items:
                    per_item[name] = {
                        k: round(v * wall * 1e6 / items, 1)
                        for k, v in cpu[name].items()
                        if k not in ("machine", "other")
                    }

        self.details["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
        self.meter.start()
        try:
            await timed("setup", self.setup)
            if want("ingest_batch") or want("copy_ceiling"):
                batches = await timed("ingest_batch", self.phase_ingest_batch)
                if want("copy_ceiling"):
                    await timed("copy_ceiling", lambda: self.phase_copy_ceiling(batches))
                del batches
            if want("ingest_single"):
                await timed("ingest_single", self.phase_ingest_single)
            if want("close_to_receipt") or want("end_to_end"):
                self.worker, _ = await self.start_broker("worker", "worker-pipeline")
                await asyncio.sleep(0.5)
                if want("close_to_receipt"):
                    await timed("close_to_receipt", self.phase_close_to_receipt)
                if want("end_to_end"):
                    await timed("end_to_end", self.phase_end_to_end)
                await self.meter.sample()
                self.worker.stop()
                self.worker = None
                await self.reset_ingest_tables()
            if want("noisy_neighbour"):
                await timed("noisy_neighbour", lambda: phase_noisy_neighbour(self))
                await self.reset_ingest_tables()
            if (
                want("events_list")
                or want("delivery")
                or want("delivery_ceiling")
                or want("idle_registrations")
                or want("workers_scaling")
            ):
                delivery_regs, secrets_by_name, base = await timed(
                    "history_insert", self.phase_history
                )
                await self.receiver("POST", "/_config", {"secrets": secrets_by_name})
                if want("events_list"):
                    await timed("events_list", lambda: self.phase_events_list(base))
                if want("delivery"):
                    await timed("delivery", lambda: self.phase_delivery(delivery_regs))
                if want("delivery_ceiling"):
                    await timed(
                        "delivery_ceiling", lambda: self.phase_delivery_ceiling(secrets_by_name)
                    )
                if want("idle_registrations"):
                    await timed(
                        "idle_registrations", lambda: phase_idle_registrations(self, delivery_regs)
                    )
                if want("workers_scaling"):
                    await timed(
                        "workers_scaling", lambda: phase_workers_scaling(self, delivery_regs)
                    )
            # Per-registration policies (bench/policies.py); event ids apart from the history's.
            if want("fifo_delivery"):
                await timed("fifo_delivery", lambda: policies.fifo_delivery(self, 20_000_000))
            if want("rate_limited"):
                await timed("rate_limited", lambda: policies.rate_limited(self, 30_000_000))
            if want("stats"):
                await timed("stats", lambda: bench_stats.phase_stats(self))
            if want("history_filters"):
                await timed("history_filters", self.phase_history_filters)
            if want("history_retention"):
                await timed(
                    "history_retention", lambda: bench_retention.phase_history_retention(self)
                )
            if want("window_drain"):
                await self.reset_ingest_tables()
                self.worker, _ = await self.start_broker("worker", "worker-drain")
                await asyncio.sleep(0.5)
                await timed("window_drain", self.phase_window_drain)
                await self.meter.sample()
                self.worker.stop()
                self.worker = None
            if want("metrics_scrape"):
                await timed("metrics_scrape", self.phase_metrics_scrape)
        finally:
            await self.meter.stop()
            await self.teardown()
        # Delivery cost from cpu_us_per_item: PostgreSQL per delivery, and the worker's CPU per
        # POST over the bare aiohttp client's (same receiver, same bodies).
        sent, bare = used.get("delivery", {}), used.get("delivery_ceiling", {})
        delivered, posted = (
            self.phase_items.get("delivery"),
            self.phase_items.get("delivery_ceiling"),
        )
        if delivered and "postgres" in sent:
            self.results["delivery_pg_cpu_us"] = round(sent["postgres"] * 1e6 / delivered, 1)
        client_cpu = max(
            bare.get("ceiling", 0.0), self.details.get("delivery_ceiling", {}).get("cpu_s", 0.0)
        )
        if delivered and posted and sent.get("worker-delivery") and client_cpu:
            self.results["delivery_worker_cpu_to_client"] = round(
                (sent["worker-delivery"] / delivered) / (client_cpu / posted), 2
            )
        self.details["phase_seconds"] = phases
        self.details["cpu_cores_by_phase"] = cpu
        self.details["cpu_us_per_item"] = per_item
        self.details["total_seconds"] = round(time.perf_counter() - t0, 1)
        return self.compose()

    def compose(self) -> dict[str, Any]:
        out: dict[str, Any] = {key: self.results.get(key) for key in RESULT_KEYS}
        out.update({key: self.results[key] for key in HISTORY_KEYS if key in self.results})
        measured = {k: t for k, t in TARGETS.items() if k in RESULT_KEYS or k in self.results}
        out["targets"] = {k: f"{op} {v:g}" for k, (op, v) in measured.items()}
        met: dict[str, bool] = {}
        for key, (op, value) in measured.items():
            got = out.get(key)
            met[key] = got is not None and (got >= value if op == ">=" else got <= value)
        out["met"] = met
        out["mode"] = self.sizes.mode
        out["sizes"] = asdict(self.sizes)
        out["machine"] = {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        }
        out["details"] = self.details
        return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller sizes (under 2 minutes)")
    size.add_argument("--tiny", action="store_true", help="smoke-test sizes (CI)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.json")
    parser.add_argument("--api-processes", type=int, default=None)
    parser.add_argument(
        "--profile", type=Path, default=None, help="py-spy record each phase into this folder"
    )
    parser.add_argument(
        "--only",
        default=None,
        help="comma-separated phases to run (default all of make bench): "
        + ", ".join(PHASES + HISTORY_PHASES),
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the database at the end (for inspection)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override one size, e.g. --set ingest_clients=16 (see Sizes in bench/run.py)",
    )
    args = parser.parse_args(argv)
    sizes = TINY if args.tiny else QUICK if args.quick else FULL
    overrides: dict[str, Any] = {}
    if args.api_processes:
        overrides["api_processes"] = args.api_processes
    for item in args.set:
        field, _, value = item.partition("=")
        current = asdict(sizes).get(field)
        if current is None or field == "mode":
            parser.error(f"--set: unknown size {field!r}")
        overrides[field] = type(current)(value)
    if overrides:
        sizes = Sizes(**{**asdict(sizes), **overrides})
    bench = Bench(sizes, args.profile)
    bench.keep = args.keep
    say(f"mode {sizes.mode}; logs in {bench.log_dir}")
    only = None if args.only is None else {p.strip() for p in args.only.split(",") if p.strip()}
    if only is None:
        only = set(PHASES) | (set(HISTORY_PHASES) if sizes.mode == "tiny" else set())
    if not only <= set(PHASES) | set(HISTORY_PHASES):
        known = set(PHASES) | set(HISTORY_PHASES)
        parser.error(f"unknown phases: {', '.join(sorted(only - known))}")
    result = asyncio.run(bench.run(only))
    line = orjson.dumps(result).decode()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
