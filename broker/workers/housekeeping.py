"""Periodic housekeeping on APScheduler 3: retention, expired secrets, stale leases, old keys.

None of this is on a hot path: delivery and window closing are driven by due times in the
database. These jobs only keep tables tidy, so a missed run just means a later one does more.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from broker.config import Settings
from broker.store.store import Store

log = logging.getLogger(__name__)


class Housekeeping:
    def __init__(self, store: Store, settings: Settings) -> None:
        self._store = store
        self._settings = settings
        self._scheduler = AsyncIOScheduler(timezone="UTC")

    async def purge_retention(self) -> int:
        deleted = await self._store.purge_finished_events(self._settings.retention_days)
        if deleted:
            log.info("retention: purged %d delivered/failed events", deleted)
        return deleted

    async def drop_expired_secrets(self) -> int:
        return await self._store.drop_expired_secrets()

    async def release_stale_leases(self) -> int:
        released = await self._store.release_stale_leases()
        if released:
            log.info("released %d stale delivery leases", released)
        return released

    async def purge_idempotency_keys(self) -> int:
        return await self._store.purge_idempotency_keys()

    def start(self) -> None:
        jobs = (
            (self.purge_retention, 3600),
            (self.drop_expired_secrets, 60),
            (self.release_stale_leases, 60),
            (self.purge_idempotency_keys, 3600),
        )
        for job, seconds in jobs:
            self._scheduler.add_job(
                self._guard(job), "interval", seconds=seconds, max_instances=1, coalesce=True
            )
        self._scheduler.start()

    def stop(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    @staticmethod
    def _guard(job: Callable[[], Awaitable[int]]) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            try:
                await job()
            except Exception as exc:  # the database may be restarting; next run tries again
                log.warning("housekeeping %s failed: %r", job.__name__, exc)

        run.__name__ = job.__name__
        return run
