"""The aggregator: closes due windows into event objects.

Driven by due times stored in ``window_groups`` rather than one timer per group: it sleeps until
the earliest due time (at most one poll interval, the safety net), then closes everything due.
Several processes may run it; ``SKIP LOCKED`` gives each window to exactly one of them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from broker import metrics
from broker.store.store import Store, WindowRules
from broker.workers.waiting import wait_any

log = logging.getLogger(__name__)

BATCH = 50
OUTBOX_BATCH = 1000


class Aggregator:
    def __init__(self, store: Store, rules: WindowRules, *, poll_interval: float) -> None:
        self._store = store
        self._rules = rules
        self._poll = poll_interval
        self.wake = asyncio.Event()
        # Called after every pass that reached the database (the heartbeat, a note in memory).
        self.on_claim: Callable[[], None] = lambda: None

    async def run_once(self) -> int:
        """Close every window due now; returns the event objects created."""
        # Operational events first (their triggers notified this wake-up): into their windows.
        while await self._store.move_operational_events(self._rules, limit=OUTBOX_BATCH) == (
            OUTBOX_BATCH
        ):
            pass  # a full batch: there may be more
        created_total = 0
        while True:
            result = await self._store.close_due_windows(self._rules, limit=BATCH)
            metrics.WINDOWS_CLOSED.inc(result.closed)
            metrics.EVENTS_CREATED.inc(result.created)
            created_total += result.created
            if result.claimed < BATCH:
                self.on_claim()
                return created_total

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 0.5
        while not stop.is_set():
            # Cleared before the pass, not after: a window opened while this pass runs sets it
            # again, and the wait below then returns at once instead of sleeping past it.
            self.wake.clear()
            try:
                await self.run_once()
                due_in = await self._store.seconds_until_next_window()
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Back off for real (the poll interval must not cap it): a database outage
                # costs one warning per backoff step, not one per poll. Capped at 5 s so windows
                # close soon after the database is back.
                log.warning("aggregator: %r; retrying in %.1fs", exc, backoff)
                await wait_any(stop, timeout=backoff)
                backoff = min(backoff * 2, 5)
                continue
            sleep = self._poll if due_in is None else min(max(due_in, 0.01), self._poll)
            await wait_any(stop, self.wake, timeout=sleep)
