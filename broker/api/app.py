"""The aiohttp application and everything that lives as long as it does.

``create_app`` wires the routes, middlewares and typed app state; ``app.cleanup_ctx`` owns the
lifetimes (database pool, outbound HTTP session, ingest group commit, and, for the worker role,
the aggregator, delivery workers and housekeeping), so start-up and shutdown happen in one
place and in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from broker.api import (
    routes_admin,
    routes_events,
    routes_ingest,
    routes_registrations,
    routes_service,
)
from broker.api.appkeys import ADMIN_TOKEN_HASH, HTTP_SESSION, INGEST, SETTINGS, STORE
from broker.api.auth import auth_middleware
from broker.api.group_commit import IngestBatcher
from broker.api.problems import problem_middleware
from broker.config import Settings
from broker.http.connector import make_outbound_session
from broker.store.db import create_pool, database_url, migrate
from broker.store.listener import Listener
from broker.store.store import Store, WindowRules
from broker.workers.aggregator import Aggregator
from broker.workers.delivery import DeliveryWorker
from broker.workers.housekeeping import Housekeeping

log = logging.getLogger(__name__)


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


@dataclass
class Workers:
    aggregator: Aggregator
    delivery: DeliveryWorker
    housekeeping: Housekeeping
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


WORKERS = web.AppKey("workers", Workers)


def create_app(
    settings: Settings, *, url: str | None = None, workers: bool | None = None
) -> web.Application:
    """The broker application. ``workers`` defaults from the role (all/worker run them)."""
    run_workers = settings.role in ("all", "worker") if workers is None else workers
    serve_api = settings.role in ("all", "api") or workers is not None
    app = web.Application(
        middlewares=[problem_middleware, auth_middleware],
        client_max_size=settings.ingest_max_body_bytes,
    )
    app[SETTINGS] = settings
    app[routes_ingest.RATE_LIMITS] = {}
    app[routes_service.OPENAPI_BODY] = routes_service.openapi_body(settings)
    token = settings.admin_token or ""
    # An unset token can never match: compare against the hash of a random value.
    app[ADMIN_TOKEN_HASH] = hashlib.sha256(token.encode()).digest() if token else b"\x00" * 31
    if serve_api:
        for module in (routes_admin, routes_ingest, routes_registrations, routes_events):
            app.add_routes(module.routes)
    app.add_routes(routes_service.routes)

    async def resources(app: web.Application) -> AsyncIterator[None]:
        db_url = url or database_url(settings)
        pool = await create_pool(db_url, size=settings.db_pool_size)
        async with pool.acquire() as conn:
            await migrate(conn)
        store = Store(pool)
        app[STORE] = store
        session = outbound_session(settings)
        app[HTTP_SESSION] = session
        batcher = IngestBatcher(store, window_rules(settings))
        batcher.start()
        app[INGEST] = batcher
        listener: Listener | None = None
        window_listener: Listener | None = None
        if run_workers:
            group = Workers(
                aggregator=Aggregator(
                    store, window_rules(settings), poll_interval=settings.poll_interval_seconds
                ),
                delivery=DeliveryWorker(store, settings, session),
                housekeeping=Housekeeping(store, settings),
            )
            app[WORKERS] = group
            listener = Listener(db_url, "broker_events", group.delivery.wake)
            listener.start()
            # Ingest notifies when it opens a window (or fills one): the aggregator re-reads
            # the earliest due time at once rather than after its poll interval.
            window_listener = Listener(db_url, "broker_windows", group.aggregator.wake)
            window_listener.start()
            group.tasks = [
                asyncio.create_task(group.aggregator.run(group.stop), name="aggregator"),
                asyncio.create_task(group.delivery.run(group.stop), name="delivery"),
            ]
            group.housekeeping.start()
        try:
            yield
        finally:
            if run_workers:
                group = app[WORKERS]
                group.stop.set()
                group.housekeeping.stop()
                with contextlib.suppress(Exception):
                    await asyncio.gather(*group.tasks, return_exceptions=True)
            if listener is not None:
                await listener.stop()
            if window_listener is not None:
                await window_listener.stop()
            await batcher.stop()
            await session.close()
            await pool.close()

    app.cleanup_ctx.append(resources)
    return app
