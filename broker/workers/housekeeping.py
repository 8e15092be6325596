"""Periodic housekeeping on APScheduler 3: history day partitions made ahead, retention (old
day partitions dropped), expired secrets, stale leases, the queued
events of deleted registrations, old idempotency keys, expired portal links, event objects
Pending past BROKER_PENDING_TTL_DAYS, heartbeats of worker processes gone for an hour, the
/metrics gauge snapshot, and a VACUUM of the delivery queue's hot tables every 10 s.

The jobs run in one process of the cluster at a time: :class:`HousekeepingLeader` holds a lease
row in PostgreSQL (``leader_leases``), renews it every third of its length, and runs the
scheduler only while it holds it. A leader that dies stops renewing; another process takes the
lease over once it expires. A clean shutdown releases it, so the takeover is immediate.

None of this is on a hot path: delivery and window closing are driven by due times in the
database. These jobs only keep tables tidy, so a missed run just means a later one does more.
Each job first runs shortly after start, not a full interval later (a process restarted more
often than hourly would otherwise never purge), and runs however late the event loop lets it
(no misfire limit: a busy loop must delay a job, not skip it for another interval).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from broker.config import Settings
from broker.store.store import Store
from broker.workers.waiting import wait_any

log = logging.getLogger(__name__)

FIRST_RUN_AFTER_SECONDS = 10.0
# Day partitions of history made ahead of time (migration 0011). An insert into a day without
# one fails, so two days give housekeeping (hourly) 24 chances or more; more would make the
# first query of every history page plan more empty partitions (it covers today and after).
PARTITIONS_AHEAD_DAYS = 2
# How often the delivery queue's hot tables are vacuumed (sql/queries/delivery.sql,
# vacuum_queue_tables: why autovacuum alone is not enough for them).
QUEUE_VACUUM_SECONDS = 10


class Housekeeping:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        first_run_after: float = FIRST_RUN_AFTER_SECONDS,
    ) -> None:
        self._store = store
        self._settings = settings
        self._first_run_after = first_run_after
        self._scheduler = AsyncIOScheduler(timezone="UTC")
        self._stopped = False
        self._running_jobs: set[asyncio.Task[object]] = set()

    async def ensure_history_partitions(self) -> int:
        made = await self._store.ensure_history_partitions(days_ahead=PARTITIONS_AHEAD_DAYS)
        if made:
            log.info("history: created %d day partitions", made)
        return made

    async def purge_retention(self) -> int:
        """Drop the history days older than BROKER_RETENTION_DAYS (whole partitions)."""
        result = await self._store.drop_expired_history(self._settings.retention_days)
        if result.dropped:
            log.info("retention: dropped the history of %s", ", ".join(map(str, result.dropped)))
        if result.kept_queued:
            log.info(
                "retention: kept %s, which still hold queued event objects (they go once "
                "delivered, failed or expired by BROKER_PENDING_TTL_DAYS)",
                ", ".join(map(str, result.kept_queued)),
            )
        if result.busy:
            log.warning(
                "retention: %s stayed in use by other queries; the next run tries again",
                ", ".join(map(str, result.busy)),
            )
        return len(result.dropped)

    async def drop_expired_secrets(self) -> int:
        return await self._store.drop_expired_secrets()

    async def purge_idempotency_keys(self) -> int:
        return await self._store.purge_idempotency_keys()

    async def prune_attempt_rollups(self) -> int:
        return await self._store.prune_attempt_rollups()

    async def purge_expired_portal_links(self) -> int:
        return await self._store.purge_expired_portal_links()

    async def expire_pending_events(self) -> int:
        if not self._settings.pending_ttl_days:
            return 0
        expired = await self._store.expire_pending_events(self._settings.pending_ttl_days)
        if expired:
            log.info("expired %d event objects Pending past BROKER_PENDING_TTL_DAYS", expired)
        return expired

    async def refresh_gauges(self) -> int:
        from broker.workers.gauges import refresh_gauges

        await refresh_gauges(self._store)
        return 1

    async def prune_heartbeats(self) -> int:
        from broker.workers.heartbeat import PRUNE_AFTER_SECONDS

        return await self._store.prune_heartbeats(PRUNE_AFTER_SECONDS)

    async def vacuum_queue_tables(self) -> int:
        await self._store.vacuum_queue_tables()
        return 1

    async def discard_orphaned_events(self) -> int:
        discarded = await self._store.discard_orphaned_events()
        if discarded:
            log.info("discarded %d queued events of deleted registrations", discarded)
        return discarded

    @property
    def running(self) -> bool:
        return self._scheduler.running and not self._stopped

    @property
    def job_names(self) -> list[str]:
        return [job.name for job in self._scheduler.get_jobs()]

    def start(self) -> None:
        """Schedule the jobs on the running event loop (call from within it)."""
        jobs = (
            (self.ensure_history_partitions, 3600),
            (self.purge_retention, 3600),
            (self.expire_pending_events, 3600),
            (self.drop_expired_secrets, 60),
            (self.discard_orphaned_events, 300),
            (self.purge_idempotency_keys, 3600),
            (self.purge_expired_portal_links, 3600),
            (self.prune_attempt_rollups, 3600),
            (self.prune_heartbeats, 600),
            (self.vacuum_queue_tables, QUEUE_VACUUM_SECONDS),
        )
        first = datetime.now(UTC) + timedelta(seconds=self._first_run_after)
        for job, seconds in jobs:
            self._scheduler.add_job(
                self._guard(job),
                "interval",
                seconds=seconds,
                name=job.__name__,
                next_run_time=first,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
            )
        # The /metrics gauges from the start: a scrape reads what this job stored.
        self._scheduler.add_job(
            self._guard(self.refresh_gauges),
            "interval",
            seconds=self._settings.gauge_refresh_seconds,
            name="refresh_gauges",
            next_run_time=datetime.now(UTC),
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )
        self._scheduler.start()

    def stop(self) -> None:
        """Stop scheduling and cancel running jobs; idempotent.

        AsyncIOScheduler.shutdown only queues the shutdown on the loop, so ``_stopped`` makes the
        stop take effect at once (a job firing before the queued shutdown runs does nothing).
        """
        if self._stopped:
            return
        self._stopped = True
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        for task in list(self._running_jobs):
            task.cancel()

    def _guard(self, job: Callable[[], Awaitable[int]]) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            if self._stopped:
                return
            task = asyncio.current_task()
            assert task is not None
            self._running_jobs.add(task)
            try:
                await job()
            except asyncio.CancelledError:
                # Cancelled by stop(): the job's own task ends here, quietly, instead of
                # APScheduler logging the cancellation as a job error.
                log.debug("housekeeping %s cancelled by stop", job.__name__)
            except Exception as exc:  # the database may be restarting; next run tries again
                log.warning("housekeeping %s failed: %r", job.__name__, exc)
            finally:
                self._running_jobs.discard(task)

        run.__name__ = job.__name__
        return run


LEASE_NAME = "housekeeping"


class HousekeepingLeader:
    """Runs :class:`Housekeeping` while this process holds the cluster's housekeeping lease."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        holder: str,
        first_run_after: float = FIRST_RUN_AFTER_SECONDS,
    ) -> None:
        self._store = store
        self._settings = settings
        self.holder = holder
        self._first_run_after = first_run_after
        self._lease_seconds = settings.leader_lease_seconds
        self.jobs: Housekeeping | None = None

    @property
    def is_leader(self) -> bool:
        return self.jobs is not None

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    held = await self._store.take_lease(
                        LEASE_NAME, self.holder, self._lease_seconds
                    )
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # Unsure whether the lease still holds: stop, a later renewal starts again.
                    log.warning("housekeeping lease: could not renew (%r)", exc)
                    held = False
                self._follow(held)
                await wait_any(stop, timeout=self._lease_seconds / 3)
        finally:
            self._follow(False)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._store.release_lease(LEASE_NAME, self.holder), 5)

    def _follow(self, held: bool) -> None:
        if held and self.jobs is None:
            log.info("housekeeping: %s holds the lease and runs the jobs", self.holder)
            self.jobs = Housekeeping(
                self._store, self._settings, first_run_after=self._first_run_after
            )
            self.jobs.start()
        elif not held and self.jobs is not None:
            log.info("housekeeping: %s no longer holds the lease", self.holder)
            self.jobs.stop()
            self.jobs = None
