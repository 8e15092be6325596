"""What the fault tests share: ``broker serve`` subprocesses, a partner world made over HTTP,
producers under load, receivers that keep score, and the check that nothing acknowledged was lost.

Everything runs on 127.0.0.1. Every process a test starts is registered with its fixture and
killed by pid in the fixture's teardown, whatever happened in the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.conftest import ADMIN_TOKEN, ROOT, TEST_ENCRYPTION_KEY

# Small windows, a short retry schedule and a short lease, so faults heal within seconds.
FAULT_ENV = {
    "BROKER_ADMIN_TOKEN": ADMIN_TOKEN,
    "BROKER_ENCRYPTION_KEYS": TEST_ENCRYPTION_KEY,
    "BROKER_ALLOW_PRIVATE_URLS": "true",
    "BROKER_WINDOW_MIN_SECONDS": "0.5",
    "BROKER_WINDOW_MAX_SECONDS": "2",
    "BROKER_RETRY_SCHEDULE": "0.2,0.5,1",
    "BROKER_DELIVERY_TIMEOUT_SECONDS": "2",
    "BROKER_LEASE_MARGIN_SECONDS": "1",
    "BROKER_POLL_INTERVAL_SECONDS": "0.25",
    "BROKER_DB_POOL_SIZE": "6",
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def eventually(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes; returns whether it held."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)
    return True


# ------------------------------------------------------------------------------ processes


@dataclass
class BrokerProcess:
    """One ``broker serve`` subprocess; ``start`` again after a kill restarts it (same port)."""

    name: str
    role: str
    port: int
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> BrokerProcess:
        assert not self.running, f"{self.name} is already running"
        self.starts += 1
        log = self.log_path.open("ab")
        log.write(f"\n===== start #{self.starts} of {self.name} =====\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "broker", "serve", "--role", self.role],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # our signals only, never the test runner's
        )
        log.close()
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no drain, no cleanup, leases and sockets left as they are."""
        if self.running:
            assert self.proc is not None
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def terminate(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGTERM)

    async def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} did not exit within {timeout}s")
            await asyncio.sleep(0.05)
        return self.proc.returncode

    async def wait_ready(self, timeout: float = 30.0, path: str = "/readyz") -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while True:
                if not self.running:
                    raise RuntimeError(f"{self.name} exited early:\n{self.log_tail()}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(self.url + path) as resp:
                        if resp.status == 200:
                            return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name} not ready in {timeout}s:\n{self.log_tail()}")
                await asyncio.sleep(0.1)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


class Brokers:
    """Spawns broker processes for one test and kills every one of them at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self._tmp = tmp_path
        self.processes: list[BrokerProcess] = []

    def spawn(
        self, db_url: str, *, role: str = "all", name: str | None = None, **env: str
    ) -> BrokerProcess:
        name = name or f"{role}{len(self.processes)}"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
        full_env.update(FAULT_ENV)
        full_env["BROKER_DATABASE_URL"] = db_url
        port = free_port()
        full_env["BROKER_PORT"] = str(port)
        full_env.update({k.upper(): v for k, v in env.items()})
        process = BrokerProcess(
            name=name, role=role, port=port, env=full_env, log_path=self._tmp / f"{name}.log"
        )
        self.processes.append(process)
        return process.start()

    def kill_all(self) -> None:
        for process in self.processes:
            with contextlib.suppress(Exception):
                process.kill()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.log_tail(60)}" for p in self.processes)


# ------------------------------------------------------------------------------ receivers


@dataclass
class Delivery:
    event_id: str
    registration_id: str
    event_name: str
    resources: list[str]
    arrived: float
    done: float | None = None


@dataclass
class ScoringReceiver:
    """A real HTTP receiver that records every delivery, how many overlapped, and answers after
    ``delay`` seconds (a slow receiver) with ``status``."""

    delay: float = 0.0
    status: int = 200
    url: str = ""
    deliveries: list[Delivery] = field(default_factory=list)
    in_flight: Counter[str] = field(default_factory=Counter)
    overlaps: list[str] = field(default_factory=list)
    max_concurrency: int = 0
    per_registration: Counter[str] = field(default_factory=Counter)
    max_per_registration: int = 0
    _server: TestServer | None = None

    async def start(self) -> ScoringReceiver:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._server = TestServer(app, host="127.0.0.1")
        await self._server.start_server()
        self.url = str(self._server.make_url("/hook"))
        return self

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = json.loads(await request.read())
        delivery = Delivery(
            event_id=request.headers["webhook-id"],
            registration_id=body["registrationId"],
            event_name=body["eventName"],
            resources=list(body["resources"]),
            arrived=time.monotonic(),
        )
        self.deliveries.append(delivery)
        if self.in_flight[delivery.event_id]:
            self.overlaps.append(delivery.event_id)
        self.in_flight[delivery.event_id] += 1
        self.max_concurrency = max(self.max_concurrency, sum(self.in_flight.values()))
        self.per_registration[delivery.registration_id] += 1
        self.max_per_registration = max(
            self.max_per_registration, self.per_registration[delivery.registration_id]
        )
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
        finally:
            self.in_flight[delivery.event_id] -= 1
            self.per_registration[delivery.registration_id] -= 1
            delivery.done = time.monotonic()
        return web.Response(status=self.status, text="ok")

    def ids(self) -> Counter[str]:
        return Counter(d.event_id for d in self.deliveries)

    def resources(self) -> set[str]:
        return {r for d in self.deliveries for r in d.resources}

    def unanswered(self) -> set[str]:
        return {d.event_id for d in self.deliveries if d.done is None}


# ------------------------------------------------------------------------------ the world


@dataclass
class World:
    base_url: str
    partner_id: str
    partner_key: str
    producer_key: str
    event_names: list[str]
    registrations: list[dict[str, Any]] = field(default_factory=list)


async def make_world(
    http: aiohttp.ClientSession,
    base_url: str,
    *,
    event_names: list[str],
    receiver_urls: list[str],
    name: str = "Acme",
) -> World:
    async with http.post(
        base_url + "/admin/v1/partners", json={"name": name}, headers=admin()
    ) as r:
        assert r.status == 201, await r.text()
        partner = await r.json()
    async with http.post(
        base_url + "/admin/v1/producer-keys", json={"name": "core"}, headers=admin()
    ) as r:
        assert r.status == 201, await r.text()
        producer = await r.json()
    for event_name in event_names:
        async with http.put(
            f"{base_url}/admin/v1/event-types/{event_name}",
            json={"description": event_name},
            headers=admin(),
        ) as r:
            assert r.status in (200, 201), await r.text()
    world = World(
        base_url=base_url,
        partner_id=partner["id"],
        partner_key=partner["apiKey"],
        producer_key=producer["apiKey"],
        event_names=event_names,
    )
    for url in receiver_urls:
        async with http.post(
            base_url + "/webhooks/v1/registrations",
            json={"url": url, "eventTypes": ["*"]},
            headers=bearer(world.partner_key),
        ) as r:
            assert r.status == 201, await r.text()
            world.registrations.append(await r.json())
    return world


# ------------------------------------------------------------------------------ producers


@dataclass
class Ledger:
    """What the producers learnt: acknowledged (202) resources, and those whose fate is unknown
    (the connection broke or the broker answered 503 before telling us)."""

    acked: set[str] = field(default_factory=set)
    unknown: set[str] = field(default_factory=set)
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    slowest: float = 0.0
    bad: list[str] = field(default_factory=list)  # answers the contract does not allow


Check503 = Callable[[aiohttp.ClientResponse, bytes], Awaitable[None]]


async def produce(
    http: aiohttp.ClientSession,
    world: World,
    ledger: Ledger,
    stop: asyncio.Event,
    *,
    tag: str,
    per_request: int = 20,
    pause: float = 0.0,
    stop_on_error: bool = True,
    timeout: float = 10.0,
    base_url: Callable[[], str] | None = None,
) -> None:
    """Send batches of fresh, unique resources until ``stop`` (or, with ``stop_on_error``, until
    the broker cannot be reached)."""
    seq = 0
    while not stop.is_set():
        seq += 1
        event_name = world.event_names[seq % len(world.event_names)]
        resources = [f"{tag}/{seq}/{i}" for i in range(per_request)]
        body = {
            "events": [
                {"partnerId": world.partner_id, "eventName": event_name, "resource": r}
                for r in resources
            ]
        }
        started = time.monotonic()
        ledger.requests += 1
        try:
            async with http.post(
                (base_url() if base_url else world.base_url) + "/internal/v1/resource-events",
                json=body,
                headers=bearer(world.producer_key),
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                raw = await resp.read()
                ledger.statuses[resp.status] += 1
                if resp.status == 202:
                    ledger.acked.update(resources)
                else:
                    ledger.unknown.update(resources)
                    problem_ok = resp.content_type == "application/problem+json"
                    if resp.status != 503 or not problem_ok or "Retry-After" not in resp.headers:
                        ledger.bad.append(f"{resp.status} {resp.content_type} {raw[:200]!r}")
                    else:
                        await asyncio.sleep(0.1)
        except TimeoutError:
            ledger.unknown.update(resources)
            ledger.bad.append(f"no answer within {timeout}s")
            ledger.errors["timeout"] += 1
        except aiohttp.ClientError as exc:
            ledger.unknown.update(resources)
            ledger.errors[type(exc).__name__] += 1
            if stop_on_error:
                return
            await asyncio.sleep(0.1)
        ledger.slowest = max(ledger.slowest, time.monotonic() - started)
        if pause:
            await asyncio.sleep(pause)


# ------------------------------------------------------------------------------ verdict


async def all_events(http: aiohttp.ClientSession, world: World) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(1000):
        params = {"limit": "500"} | ({"cursor": cursor} if cursor else {})
        async with http.get(
            world.base_url + "/webhooks/v1/events", params=params, headers=bearer(world.partner_key)
        ) as r:
            assert r.status == 200, await r.text()
            page = await r.json()
        events.extend(page["data"])
        cursor = page["nextCursor"]
        if cursor is None:
            return events
    raise AssertionError("events pagination did not end")


@dataclass
class Verdict:
    acked: int
    unknown_delivered: int
    unknown_total: int
    events: int
    deliveries: int
    duplicate_deliveries: int
    lost: int
    windows: int = 0

    def line(self, name: str) -> str:
        return (
            f"FAULT-REPORT {name}: acked={self.acked} lost={self.lost} events={self.events} "
            f"deliveries={self.deliveries} duplicates={self.duplicate_deliveries} "
            f"unknown={self.unknown_total} (delivered {self.unknown_delivered})"
        )


async def settle_and_verify(
    http: aiohttp.ClientSession,
    world: World,
    receivers: list[ScoringReceiver],
    ledger: Ledger,
    *,
    timeout: float = 45.0,
) -> Verdict:
    """Wait until every acknowledged resource reached the receivers and nothing is Pending, then
    check that the events API and the receivers tell the same story."""
    deadline = time.monotonic() + timeout
    events: list[dict[str, Any]] = []
    while True:
        got = set().union(*(r.resources() for r in receivers))
        missing = ledger.acked - got
        if not missing:
            events = await all_events(http, world)
            if all(e["status"] == "Success" for e in events):
                received_ids = set().union(*(r.ids().keys() for r in receivers))
                if {e["id"] for e in events} <= received_ids:
                    break
        if time.monotonic() > deadline:
            pending = [e["id"] for e in events if e["status"] != "Success"]
            raise AssertionError(
                f"{len(missing)} acknowledged resources never delivered "
                f"(e.g. {sorted(missing)[:5]}); not Success: {pending[:5]}"
            )
        await asyncio.sleep(0.25)
    # Let any redelivery of an expired lease land before counting duplicates.
    await asyncio.sleep(0.5)
    events = await all_events(http, world)
    by_id = {e["id"]: e for e in events}
    deliveries = [d for r in receivers for d in r.deliveries]
    for delivery in deliveries:
        event = by_id.get(delivery.event_id)
        assert event is not None, f"delivered {delivery.event_id} unknown to the events API"
        assert event["resources"] == delivery.resources, "delivered body differs from the API"
        assert event["registrationId"] == delivery.registration_id
        assert event["status"] == "Success"
    api_resources = {r for e in events for r in e["resources"]}
    sent = ledger.acked | ledger.unknown
    assert api_resources <= sent, f"resources nobody sent: {sorted(api_resources - sent)[:5]}"
    assert ledger.acked <= api_resources
    # Within one registration each resource was sent once, so it belongs to exactly one event
    # object: a window closed twice (or a replayed ingest) would show up here.
    for reg in world.registrations:
        counts = Counter(
            r for e in events if e["registrationId"] == reg["id"] for r in e["resources"]
        )
        doubled = [r for r, n in counts.items() if n > 1]
        assert not doubled, f"resources in two event objects of one registration: {doubled[:5]}"
    ids = Counter(d.event_id for d in deliveries)
    return Verdict(
        acked=len(ledger.acked),
        unknown_delivered=len(ledger.unknown & api_resources),
        unknown_total=len(ledger.unknown),
        events=len(events),
        deliveries=len(deliveries),
        duplicate_deliveries=sum(n - 1 for n in ids.values()),
        lost=len(ledger.acked - api_resources),
        windows=len({(e["eventName"], tuple(e["resources"])) for e in events}),
    )


def report(line: str) -> None:
    """Print a figure line and, when BROKER_FAULT_REPORT names a file, append it there."""
    print(line)
    target = os.environ.get("BROKER_FAULT_REPORT")
    if target:
        with open(target, "a") as out:
            out.write(line + "\n")
