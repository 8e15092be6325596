"""Worker heartbeats: when this process's delivery and aggregator loops last claimed work.

A loop calls :meth:`Heartbeat.beat` after every claim that reached the database, also one that
found nothing (an idle worker is alive) and, for delivery, a turn with every slot busy. That
only notes the time in memory: the claim path gains no query. :meth:`Heartbeat.run` writes the
noted times to ``worker_heartbeats`` about once a second, one statement for both roles, and
only the roles that beat since the last write, so a loop that stopped claiming (stuck, or its
database calls failing) leaves its row to age even though this writer is alive. /metrics reads
the table in every process (``broker_worker_last_claim_timestamp_seconds``); housekeeping
prunes the rows of processes gone for :data:`PRUNE_AFTER_SECONDS`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from broker.store.store import Store
from broker.workers.waiting import wait_any

log = logging.getLogger(__name__)

WRITE_INTERVAL_SECONDS = 1.0
# A process that has not claimed for an hour is gone (or wedged for long enough that its series
# is no longer news); its rows are deleted and its series ends.
PRUNE_AFTER_SECONDS = 3600.0


class Heartbeat:
    def __init__(
        self,
        store: Store,
        process: str,
        *,
        interval: float = WRITE_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self.process = process
        self._interval = interval
        self._clock = clock
        self._beats: dict[str, float] = {}  # role -> monotonic time of its last claim
        self._written: dict[str, float] = {}

    def beat(self, role: str) -> None:
        self._beats[role] = self._clock()

    def beater(self, role: str) -> Callable[[], None]:
        return lambda: self.beat(role)

    async def write(self) -> int:
        """Write the roles that beat since the last write; how many."""
        fresh = {role: at for role, at in self._beats.items() if self._written.get(role) != at}
        if not fresh:
            return 0
        now = self._clock()
        await self._store.write_heartbeats(
            self.process, {role: max(now - at, 0.0) for role, at in fresh.items()}
        )
        self._written.update(fresh)
        return len(fresh)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.write()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database may be restarting; the next second retries
                log.debug("heartbeat: could not write (%r)", exc)
            await wait_any(stop, timeout=self._interval)
