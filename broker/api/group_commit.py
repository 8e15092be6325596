"""Group commit for producer ingest.

Concurrent ingest requests do not each pay for a transaction and an fsync: they queue here, and
one flusher writes everything queued so far in a single transaction (COPY + one upsert of the
window groups), then answers every waiting request. Under load batches grow by themselves; an
idle broker flushes a lone request at once, so latency stays one commit.

Small requests commit in a lane of their own. Sharing commits with a hot producer's big batches,
a one-item request waited for a commit slot held by big batches, and then for a commit that
copied one of them and queued behind that group's row lock (bench/README.md, window_drain).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Sequence

from broker import metrics, tracing
from broker.store.store import IngestAnswer, IngestRequest, Store, WindowRules

# Upper bound of resource events per group commit: keeps one transaction's COPY bounded.
MAX_BATCH_ITEMS = 50_000
# Group commits in flight at once, per lane. With one, producers waiting on a commit send nothing
# new, so parsing requests and PostgreSQL writing them took turns; with two, the next batch is
# parsed and written while the previous one commits (bench/README.md). Concurrent commits are
# what several API processes already do: COPY only appends, window groups are upserted in one
# sorted order after the Idempotency-Keys are claimed in one sorted order, and a repeated key
# waits on its unique index.
MAX_FLUSHES = 2
# Requests of at most this many resource events go to the small lane: they commit only with each
# other, so they never wait for a big batch's COPY, nor for its window group's row lock.
SMALL_REQUEST_ITEMS = 100

_Entry = tuple[IngestRequest, asyncio.Future[IngestAnswer]]


class _Lane:
    def __init__(self) -> None:
        self.queue: list[_Entry] = []
        self.flushes: set[asyncio.Task[None]] = set()

    def take_batch(self) -> list[_Entry]:
        batch: list[_Entry] = []
        items = 0
        while self.queue and (not batch or items + len(self.queue[0][0].items) <= MAX_BATCH_ITEMS):
            entry = self.queue.pop(0)
            if entry[1].cancelled():  # the client went away before we got to it
                continue
            batch.append(entry)
            items += len(entry[0].items)
        return batch


class IngestBatcher:
    def __init__(self, store: Store, rules: WindowRules) -> None:
        self._store = store
        self._rules = rules
        self._small = _Lane()
        self._large = _Lane()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ingest-group-commit")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for lane in (self._small, self._large):
            for _, future in lane.queue:
                if not future.done():
                    future.set_exception(ConnectionError("broker is shutting down"))
            lane.queue.clear()

    async def submit(self, request: IngestRequest) -> IngestAnswer:
        future: asyncio.Future[IngestAnswer] = asyncio.get_running_loop().create_future()
        lane = self._small if len(request.items) <= SMALL_REQUEST_ITEMS else self._large
        lane.queue.append((request, future))
        self._wakeup.set()
        return await future

    def _flushed(self, lane: _Lane, task: asyncio.Task[None]) -> None:
        lane.flushes.discard(task)
        self._wakeup.set()  # a slot is free: what queued meanwhile may go

    async def _run(self) -> None:
        lanes = (self._small, self._large)
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                for lane in lanes:
                    while lane.queue and len(lane.flushes) < MAX_FLUSHES:
                        batch = lane.take_batch()
                        if not batch:
                            continue
                        task = asyncio.create_task(self._flush(batch), name="ingest-commit")
                        lane.flushes.add(task)
                        task.add_done_callback(functools.partial(self._flushed, lane))
        finally:
            flushes = [task for lane in lanes for task in lane.flushes]
            for task in flushes:
                task.cancel()  # _flush fails its waiters with a retryable error
            if flushes:
                await asyncio.gather(*flushes, return_exceptions=True)

    async def _flush(
        self, batch: Sequence[tuple[IngestRequest, asyncio.Future[IngestAnswer]]]
    ) -> None:
        try:
            with tracing.span(
                "ingest",
                requests=len(batch),
                resource_events=sum(len(request.items) for request, _ in batch),
                # Per item, so only worked out when someone is looking.
                partner_ids=_partner_ids(batch) if tracing.enabled() else (),
            ):
                answers = await self._store.ingest(
                    [request for request, _ in batch],
                    self._rules,
                    trace_parent=tracing.current_traceparent(),
                )
        except asyncio.CancelledError:
            # Stopped mid-commit: the batch is out of the queue, so stop() cannot see it; its
            # waiters must not hang. 503 tells producers to retry (Idempotency-Key makes it safe).
            for _, future in batch:
                if not future.done():
                    future.set_exception(ConnectionError("broker is shutting down"))
            raise
        except Exception as exc:  # every waiter learns the batch failed; nothing was committed
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        # Committed: count what was stored (a replayed Idempotency-Key stored nothing new).
        metrics.RESOURCE_EVENTS_INGESTED.inc(
            sum(
                len(request.items)
                for (request, _), a in zip(batch, answers, strict=True)
                if not a.replayed and a.status == 202
            )
        )
        for (_, future), answer in zip(batch, answers, strict=True):
            if not future.done():
                future.set_result(answer)


def _partner_ids(batch: Sequence[tuple[IngestRequest, object]]) -> list[str]:
    return sorted({str(item.partner_id) for request, _ in batch for item in request.items})
