"""The composition root: one broker process, built for its role, and every lifetime in it.

``running(settings, role=...)`` opens what the role needs, in this order, and closes it in the
reverse order:

=========================================  =====  ======  =====
                                           api    worker  all
=========================================  =====  ======  =====
database pool (and the migrations)         yes    yes     yes
admin token (env, or the database's)       yes    yes     yes
outbound HTTP session (test deliveries)    yes    yes     yes
ingest group commit                        yes    --      yes
LISTEN connections, aggregator, delivery   --     yes     yes
worker heartbeats (worker_heartbeats)      --     yes     yes
housekeeping (only while leader)           --     yes     yes
HTTP routes                                all    service all
=========================================  =====  ======  =====

The background tasks are supervised: one that ends while the process is not stopping (a bug:
every loop catches and backs off from database errors itself) sets ``failed``, and ``serve``
then stops the process with a non-zero code instead of leaving it up half-working. The aiohttp
application (``broker/api/app.py``) only serves HTTP over what the runtime built.

``serve`` is the whole process: the runtime, the HTTP listener, SIGTERM/SIGINT. On a signal the
workers start draining (in-flight deliveries get their timeout, results are flushed, leases
released) while aiohttp stops accepting and finishes the requests in flight; the ingest
batcher, the session and the pool close after both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from broker import tracing
from broker.api.group_commit import IngestBatcher
from broker.config import Settings
from broker.crypto import load_key_ring
from broker.http.connector import make_outbound_session
from broker.store.db import create_pool, database_url, migrate
from broker.store.listener import Listener
from broker.store.records import hash_key, new_api_key
from broker.store.store import Store, WindowRules
from broker.workers.aggregator import Aggregator
from broker.workers.delivery import DeliveryWorker
from broker.workers.heartbeat import Heartbeat
from broker.workers.housekeeping import HousekeepingLeader

log = logging.getLogger(__name__)

ROLES_WITH_API = ("all", "api")
ROLES_WITH_WORKERS = ("all", "worker")


def process_name() -> str:
    """Who this process is in leases and logs: host, pid and a nonce (pids get reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def window_rules(settings: Settings) -> WindowRules:
    return WindowRules(
        min_seconds=settings.window_min_seconds,
        max_seconds=settings.window_max_seconds,
        max_resources=settings.window_max_resources,
    )


def outbound_session(settings: Settings) -> aiohttp.ClientSession:
    return make_outbound_session(
        allow_private=settings.allow_private_urls,
        limit=settings.delivery_concurrency,
        total_timeout=settings.delivery_timeout_seconds,
    )


async def admin_token(store: Store, settings: Settings) -> tuple[bytes, str | None]:
    """The admin token's hash, and the token itself when this process just generated it.

    ``BROKER_ADMIN_TOKEN`` wins when set. Otherwise the database holds one generated token (its
    hash): the first process to start creates it and is the only one to see it in the clear;
    every later process, on any host, accepts that same token and learns nothing secret.
    """
    if settings.admin_token:
        return hash_key(settings.admin_token), None
    candidate = new_api_key("admin")
    stored, created = await store.claim_admin_token(hash_key(candidate))
    return stored, candidate if created else None


@dataclass(kw_only=True)
class Runtime:
    """What one process runs. Built by :func:`running`; the fields a role lacks stay None."""

    settings: Settings
    role: str
    db_url: str
    store: Store
    session: aiohttp.ClientSession
    admin_token_hash: bytes
    # Set only in the process that generated the database's admin token: shown once, then gone.
    generated_admin_token: str | None = None
    name: str = field(default_factory=process_name)
    ingest: IngestBatcher | None = None
    aggregator: Aggregator | None = None
    delivery: DeliveryWorker | None = None
    housekeeping: HousekeepingLeader | None = None
    heartbeat: Heartbeat | None = None
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    failed: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def serves_api(self) -> bool:
        return self.role in ROLES_WITH_API

    @property
    def runs_workers(self) -> bool:
        return self.role in ROLES_WITH_WORKERS

    def spawn(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, name=name)
        task.add_done_callback(self._supervise)
        self._tasks.append(task)

    def _supervise(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self.stopping.is_set():
            return
        exc = task.exception()
        log.error("%s ended unexpectedly (%r); stopping the process", task.get_name(), exc)
        self.failed.set()

    async def _join(self) -> None:
        """Stop every background task and wait for each to wind down (delivery drains)."""
        self.stopping.set()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        for task, result in zip(self._tasks, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                log.warning("%s failed while stopping: %r", task.get_name(), result)

    async def _start_workers(self, stack: contextlib.AsyncExitStack) -> None:
        settings, store = self.settings, self.store
        self.aggregator = Aggregator(
            store, window_rules(settings), poll_interval=settings.poll_interval_seconds
        )
        self.delivery = DeliveryWorker(store, settings, self.session)
        self.housekeeping = HousekeepingLeader(store, settings, holder=self.name)
        self.heartbeat = Heartbeat(store, self.name)
        self.delivery.on_claim = self.heartbeat.beater("delivery")
        self.aggregator.on_claim = self.heartbeat.beater("aggregator")
        # Ingest notifies when it opens or fills a window, the store when events become due:
        # the loops look at once rather than after their poll interval.
        for channel, wake in (
            ("broker_events", self.delivery.wake),
            ("broker_windows", self.aggregator.wake),
        ):
            listener = Listener(self.db_url, channel, wake)
            listener.start()
            stack.push_async_callback(listener.stop)
        self.spawn("aggregator", self.aggregator.run(self.stopping))
        self.spawn("delivery", self.delivery.run(self.stopping))
        self.spawn("housekeeping", self.housekeeping.run(self.stopping))
        self.spawn("heartbeat", self.heartbeat.run(self.stopping))
        stack.push_async_callback(self._join)


@contextlib.asynccontextmanager
async def running(
    settings: Settings, *, url: str | None = None, role: str | None = None
) -> AsyncIterator[Runtime]:
    """Start everything ``role`` (default: ``settings.role``) runs; stop it all on the way out."""
    role = role or settings.role
    db_url = url or database_url(settings)
    tracing.configure()  # OTLP export when OTEL_EXPORTER_OTLP_ENDPOINT is set
    keys = load_key_ring(settings)
    async with contextlib.AsyncExitStack() as stack:
        pool = await create_pool(
            db_url,
            size=settings.db_pool_size,
            acquire_timeout=settings.db_acquire_timeout_seconds,
        )
        stack.push_async_callback(pool.close)
        async with pool.acquire() as conn:
            await migrate(conn, keys=keys)  # 0003 seals existing secrets with the key ring
        store = Store(pool, keys=keys)
        await store.check_key_ring()  # a wrong key stops start-up, never a delivery later
        token_hash, generated = await admin_token(store, settings)
        session = outbound_session(settings)
        stack.push_async_callback(session.close)
        runtime = Runtime(
            settings=settings,
            role=role,
            db_url=db_url,
            store=store,
            session=session,
            admin_token_hash=token_hash,
            generated_admin_token=generated,
        )
        if runtime.serves_api:
            runtime.ingest = IngestBatcher(store, window_rules(settings))
            runtime.ingest.start()
            stack.push_async_callback(runtime.ingest.stop)
        if runtime.runs_workers:
            await runtime._start_workers(stack)
        yield runtime


async def serve(
    settings: Settings,
    *,
    url: str | None = None,
    on_started: Callable[[Runtime], None] = lambda _: None,
    on_listening: Callable[[Runtime], None] = lambda _: None,
) -> int:
    """Run one broker process until SIGTERM/SIGINT; 0 on a clean stop, 1 if a part failed.

    ``on_started`` runs once the runtime is up, before the socket is bound (a generated admin
    token is shown then, even if binding fails); ``on_listening`` once the socket is bound.
    """
    from aiohttp import web

    from broker.api.app import make_runner  # the HTTP side depends on the runtime, not back

    loop = asyncio.get_running_loop()
    signalled = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, signalled.set)
    try:
        async with running(settings, url=url) as runtime:
            on_started(runtime)
            runner = make_runner(
                runtime,
                access_log=None,
                shutdown_timeout=settings.delivery_timeout_seconds + 5,
            )
            await runner.setup()
            try:
                await web.TCPSite(runner, settings.host, settings.port).start()
                on_listening(runtime)
                waits = [asyncio.ensure_future(e.wait()) for e in (signalled, runtime.failed)]
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiter in waits:
                        waiter.cancel()
            finally:
                runtime.stopping.set()  # the workers drain while HTTP finishes its requests
                await runner.cleanup()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return 1 if runtime.failed.is_set() else 0
