"""Delivery workers: claim due event objects, POST them signed, record what happened.

One loop claims batches (``FOR UPDATE SKIP LOCKED`` plus a lease) as long as it has free slots,
and a few more, so that a slot that frees starts its next attempt without waiting for a claim;
each claimed event is sent by its own task. The slots are split in two lanes: registrations that
failed recently are claimed only into a bounded slow lane, so the rest always find room; the
claim query bounds each registration's share (adaptive concurrency, circuit breaker), so one slow
partner cannot take every slot. Results go to a
buffer that a flusher writes in one transaction per batch. NOTIFY wakes the claimer; the poll
interval is the safety net. If this process dies, its leases expire and the events are claimed
again: a redelivery, never a loss.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from datetime import timedelta

import aiohttp
import asyncpg

from broker import metrics, tracing
from broker.config import Settings
from broker.domain.outcomes import decide
from broker.domain.payload import event_body
from broker.domain.policy import (
    EffectivePolicy,
    Ordering,
    RegistrationPolicy,
    policy_defaults,
    resolve,
)
from broker.domain.states import Status
from broker.http.sender import send, unreadable_secret
from broker.store.store import ClaimedDelivery, DeliveryResult, Store
from broker.workers.waiting import wait_any

log = logging.getLogger(__name__)

# Errors about the data itself (SQLSTATE classes 22 and 23): the same write fails every time.
REFUSED_DATA = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)
# Waiting for the next ready row to fall due never spins faster than this.
MIN_CLAIM_INTERVAL = 0.002
# A ready row that is due but was locked by another worker when this one claimed: how soon to
# look again (that worker's outcome wakes only itself).
DUE_RECHECK_INTERVAL = 0.02
# The slow lane gets 1/SLOW_LANE_SHARE of a worker's slots.
SLOW_LANE_SHARE = 4
# Claimed ahead of the free slots, at most 1/PREFETCH_SHARE of them: a slot that frees starts
# its next attempt at once instead of waiting for a claim's round trip (3-14 ms measured, with
# the receiver holding each request 50 ms that left every slot idle a tenth of the time).
PREFETCH_SHARE = 4
# A claim waits until 1/CLAIM_BATCH_SHARE of the claimed-ahead share can be refilled at once (or
# a slot has nothing to start): a claim costs PostgreSQL about 1 ms whatever it returns, and the
# loop otherwise made one per freed slot or two (3.4 rows a claim, measured).
CLAIM_BATCH_SHARE = 2
# A flush with few results waits this long for more (group commit): fewer, larger result
# statements; measured +5% deliveries per second in 2 of 2 pairs (bench/README.md). Not when a
# result gates the registration's next attempt (FIFO, a probe, a failure), nor once a
# registration has FLUSH_AT_PER_REGISTRATION results waiting: their leases count against its cap
# until recorded. 20 ms measured faster with three workers on a 50 ms receiver, but held the
# leases of registrations at their cap: beside a rate-limited one, four others fell to 0.55-0.88
# of their rate alone (issue 13's target is 0.9), against 0.99-1.05 with 5 ms.
FLUSH_LINGER_SECONDS = 0.005
FLUSH_LINGER_BELOW = 64
FLUSH_AT_PER_REGISTRATION = 4
# Resolved policies a worker keeps (as many as the store keeps delivery targets).
POLICY_CACHE_SIZE = 10000


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class DeliveryWorker:
    def __init__(self, store: Store, settings: Settings, session: aiohttp.ClientSession) -> None:
        self._store = store
        self._settings = settings
        self._session = session
        self.name = worker_name()
        self.wake = asyncio.Event()
        self._inflight: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._slot_freed = asyncio.Event()
        self._results: list[DeliveryResult] = []
        self._results_ready = asyncio.Event()
        # Set when the buffered results should not wait out the linger: one gates its
        # registration's next claim, or there are enough for a full flush.
        self._flush_now = asyncio.Event()
        self._buffered_by_registration: collections.Counter[uuid.UUID] = collections.Counter()
        self._recorded = asyncio.Event()  # results written: their leases no longer count
        # Slots: registrations that failed recently (the slow lane) may hold a bounded share,
        # so the rest are always there for the ones in good health, which may also use the
        # slow lane's share while it is idle (see broker.domain.isolation). Work-conserving:
        # measured, reserving the share for slow registrations left a quarter of the slots
        # idle whenever none were slow.
        self._slots = settings.delivery_concurrency
        self._slow_slots = max(1, self._slots // SLOW_LANE_SHARE) if self._slots > 1 else 1
        self._in_lane = {False: 0, True: 0}  # claimed: sending or waiting in _ready
        # Claimed, leased and not yet sent, in claim order; started as slots free.
        # Each with when its claim started and returned (monotonic).
        self._ready: collections.deque[tuple[ClaimedDelivery, float, float]] = collections.deque()
        self._prefetch = self._slots // PREFETCH_SHARE
        self._claim_batch = max(1, self._prefetch // CLAIM_BATCH_SHARE)
        self._flusher: asyncio.Task[None] | None = None
        self._defaults = policy_defaults(settings)
        # id of a stored policy -> (that policy, resolved): see _resolved
        self._policies: dict[int, tuple[RegistrationPolicy, EffectivePolicy]] = {}
        self._longest_timeout = settings.delivery_timeout_seconds
        # Called after every claim that reached the database, and every turn with all slots
        # busy: the process's heartbeat (broker/workers/heartbeat.py), a note in memory.
        self.on_claim: Callable[[], None] = lambda: None

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    def _free(self) -> int:
        """Attempts a claim may take now: the slots plus the claimed-ahead share, less what is
        claimed (sending or waiting in _ready)."""
        return self._slots + self._prefetch - self._in_lane[False] - self._in_lane[True]

    def _wants_claim(self) -> bool:
        """Room for a claim's worth of attempts. A slot with nothing to start always makes that
        room: then everything claimed is sending, so more than the claimed-ahead share is free,
        and a claim's worth is at most half of it."""
        return self._free() >= self._claim_batch

    # ------------------------------------------------------------------ claiming

    async def claim_once(self) -> int:
        """Claim what fits in the free slots and the prefetch buffer (the slow lane within its
        share) and start sending what fits in the slots; returns the number claimed."""
        if not self._wants_claim():
            self.on_claim()  # busy, not stuck
            return 0
        free = self._free()
        slow_free = min(max(self._slow_slots - self._in_lane[True], 0), free)
        # Taken before the claim's transaction starts (its now() is each attempt's attemptedAt),
        # so attemptedAt + the time since is never before the attempt really ended.
        claim_started = time.monotonic()
        claimed = await self._store.claim_deliveries(
            limit=min(free, self._settings.delivery_batch_size),
            per_registration=self._settings.delivery_per_registration,
            lease_seconds=self._settings.lease_seconds,
            worker_id=self.name,
            slow_slots=slow_free,
            timeout_seconds=self._settings.delivery_timeout_seconds,
        )
        self.on_claim()
        claimed_at = time.monotonic()
        for item in claimed:
            self._in_lane[item.slow] += 1
            self._ready.append((item, claim_started, claimed_at))
        self._start_ready()
        return len(claimed)

    def _start_ready(self, *, all_of_them: bool = False) -> None:
        """Start sending claimed attempts while a slot is free (all of them when draining)."""
        while self._ready and (all_of_them or len(self._inflight) < self._slots):
            item, claim_started, claimed_at = self._ready.popleft()
            waited = time.monotonic() - claimed_at
            task = asyncio.create_task(self._deliver(item, claim_started, waited))
            self._inflight[item.id] = task
            task.add_done_callback(self._on_done(item.id, item.slow))

    def _on_done(self, event_id: uuid.UUID, slow: bool) -> Callable[[asyncio.Task[None]], None]:
        def done(_task: asyncio.Task[None]) -> None:
            self._inflight.pop(event_id, None)
            self._in_lane[slow] -= 1
            self._start_ready()
            self._slot_freed.set()

        return done

    async def _deliver(self, item: ClaimedDelivery, claim_started: float, waited: float) -> None:
        """Send one claimed attempt and buffer its result. ``waited``: the seconds it spent
        claimed before a slot was free, which its attemptedAt includes."""
        target = item.target
        attempted_at = item.attempted_at + timedelta(seconds=waited)
        body = event_body(
            event_id=item.id,
            event_name=item.event_name,
            partner_id=item.partner_id,
            registration_id=item.registration_id,
            created_at=item.created_at,
            previous_attempted_at=item.previous_attempted_at,
            resources=item.resources,
        )
        # The registration's own timeout, retry schedule, signature and headers (None: global).
        policy = self._resolved(target.policy)
        self._longest_timeout = max(self._longest_timeout, policy.timeout_seconds)
        with tracing.span(
            "delivery.attempt",
            parent=item.trace_parent,
            event_id=item.id,
            registration_id=item.registration_id,
            partner_id=item.partner_id,
            attempt=item.attempt_count,
        ):
            outcome = (
                unreadable_secret()
                if target.unreadable
                else await send(
                    self._session,
                    url=target.url,
                    msg_id=str(item.id),
                    body=body,
                    secrets=target.secrets,
                    basic_auth=target.basic_auth,
                    timeout=policy.timeout_seconds,
                    signature=policy.signature,
                    extra_headers=policy.headers,
                )
            )
            tracing.set_attributes(success=outcome.success, response_status=outcome.status or 0)
        decision = decide(
            success=outcome.success,
            response_status=outcome.status,
            probe=item.probe,
            round_attempts=item.round_attempts,
            schedule=policy.retry_schedule,
            jitter=self._settings.retry_jitter,
            retry_after=outcome.retry_after,
        )
        # The retry delay counts from the attempt's end: the claim, the wait for the event loop
        # and the request itself (under load the first two took 50 ms, and a retry went out
        # that much before its delay had passed since the receiver's answer).
        finished_at = item.attempted_at + timedelta(seconds=time.monotonic() - claim_started)
        self._results.append(
            DeliveryResult(
                event_id=item.id,
                registration_id=item.registration_id,
                attempt_number=item.attempt_count,
                attempted_at=attempted_at,
                duration_ms=outcome.duration_ms,
                response_status=outcome.status,
                error=outcome.error,
                response_body=outcome.body,
                success=outcome.success,
                new_event_status=decision.event_status,
                next_attempt_at=(
                    finished_at + timedelta(seconds=decision.retry_in)
                    if decision.retry_in is not None
                    else None
                ),
                round_attempts=item.round_attempts,
                registration_trigger=decision.trigger,
            )
        )
        self._buffered_by_registration[item.registration_id] += 1
        if (
            policy.ordering is Ordering.FIFO
            or item.probe
            or not outcome.success
            or self._buffered_by_registration[item.registration_id] >= FLUSH_AT_PER_REGISTRATION
        ):
            # A FIFO registration's next event, a restart's outcome, a failure's back-off and
            # breaker, a busy registration's next claims all wait for this result to be
            # recorded: no linger.
            self._flush_now.set()
        metrics.ATTEMPTS_BY_SUCCESS[outcome.success].inc()
        metrics.DELIVERY_LATENCY.observe(outcome.duration_ms / 1000)
        _log_attempt(
            item,
            outcome.success,
            outcome.status,
            outcome.error,
            decision.event_status,
            outcome.duration_ms,
        )
        # The flusher writes whatever has accumulated as soon as its previous write is done
        # (group commit): under load batches grow by themselves, and a result's lease, which
        # counts against its registration's in-flight cap until recorded, is freed sooner.
        if len(self._results) >= FLUSH_LINGER_BELOW:
            self._flush_now.set()
        self._results_ready.set()

    def _resolved(self, stored: RegistrationPolicy) -> EffectivePolicy:
        """The stored policy over the defaults, once per policy object: the store's target cache
        hands out the same object until the registration changes (4.9 us a resolve, measured)."""
        hit = self._policies.get(id(stored))
        if hit is None or hit[0] is not stored:
            if len(self._policies) >= POLICY_CACHE_SIZE:
                self._policies.clear()
            hit = self._policies[id(stored)] = (stored, resolve(stored, self._defaults))
        return hit[1]

    # ------------------------------------------------------------------ recording

    async def flush(self) -> int:
        """Write buffered results; on a database error they stay buffered for the next try."""
        if not self._results:
            return 0
        batch, self._results = self._results, []
        self._buffered_by_registration.clear()
        try:
            moved = await self._store.record_results(
                batch, per_registration=self._settings.delivery_per_registration
            )
        except REFUSED_DATA as exc:
            moved = await self._record_one_by_one(batch, exc)
        except BaseException:
            self._results = batch + self._results
            raise
        if moved:
            _count_transitions(batch, moved)
        return len(batch)

    async def _record_one_by_one(
        self, batch: list[DeliveryResult], exc: Exception
    ) -> list[tuple[uuid.UUID, Status]]:
        """The database refused the batch's data (not a lost connection): retrying it as a whole
        would fail forever and hold back every result in it. Record each result alone and drop
        the ones refused; their leases expire and the events are delivered again, so nothing is
        lost (at-least-once)."""
        log.error("a batch of delivery results was refused (%r); recording one by one", exc)
        moved: list[tuple[uuid.UUID, Status]] = []
        for i, result in enumerate(batch):
            try:
                moved += await self._store.record_results(
                    [result], per_registration=self._settings.delivery_per_registration
                )
            except REFUSED_DATA as refused:
                log.error(
                    "dropping the result of event %s attempt %d (%r); it will be redelivered",
                    result.event_id,
                    result.attempt_number,
                    refused,
                )
            except BaseException:
                self._results = batch[i:] + self._results  # the rest, for the next flush
                raise
        return moved

    async def _flush_loop(self) -> None:
        backoff = 0.2
        while True:
            await self._results_ready.wait()
            if not self._flush_now.is_set():
                await wait_any(self._flush_now, timeout=FLUSH_LINGER_SECONDS)
            self._flush_now.clear()
            self._results_ready.clear()
            try:
                if await self.flush():
                    self._recorded.set()  # leases were freed by recorded results: claim more
                backoff = 0.2
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("recording delivery results failed (%r); retrying", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5)
                self._results_ready.set()  # what stayed buffered is retried now

    # ------------------------------------------------------------------ lifetime

    async def run(self, stop: asyncio.Event) -> None:
        self._flusher = asyncio.create_task(self._flush_loop(), name="delivery-flush")
        backoff = 0.5
        try:
            while not stop.is_set():
                try:
                    self.wake.clear()
                    self._recorded.clear()
                    claimed = await self.claim_once()
                    backoff = 0.5
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("claiming deliveries failed (%r); retrying in %.1fs", exc, backoff)
                    # The listener sets wake when its connection is back: end the backoff then.
                    await wait_any(stop, self.wake, timeout=backoff)
                    backoff = min(backoff * 2, 10)
                    continue
                if claimed and self._wants_claim():
                    continue  # there may be more due right now
                self._slot_freed.clear()
                waits = [stop, self.wake, self._recorded]
                timeout = self._settings.poll_interval_seconds
                if not self._wants_claim():
                    waits = [stop, self._slot_freed]
                else:
                    timeout = await self._until_next_due(timeout)
                await wait_any(*waits, timeout=timeout)
        finally:
            await self._drain()

    async def _until_next_due(self, poll: float) -> float:
        """How long to wait for the next claim: until the next ready row falls due (a retry, a
        rate limit's next tokens, a breaker's probe), at most the poll interval. Nothing wakes a
        worker at those times otherwise, so a rate-limited registration would be served once per
        poll interval instead of at its rate."""
        try:
            due_in = await self._store.next_delivery_due_in()
        except Exception:  # the claim reports database trouble; here, just poll
            return poll
        if due_in is None:
            return poll
        if due_in <= 0:  # due, but held by another worker's claim or flush: look again soon
            return min(poll, DUE_RECHECK_INTERVAL)
        return min(poll, max(MIN_CLAIM_INTERVAL, due_in))

    async def _drain(self) -> None:
        """Stop claiming; give in-flight sends a grace period, release the rest, flush results."""
        # A registration's own timeout may be longer than the global one (up to 30 s).
        grace = max(self._settings.delivery_timeout_seconds, self._longest_timeout) + 1
        # What was claimed ahead is sent too: a few attempts, leased to this worker already.
        self._start_ready(all_of_them=True)
        if self._inflight:
            await asyncio.wait(list(self._inflight.values()), timeout=grace)
        unfinished = list(self._inflight)
        for task in list(self._inflight.values()):
            task.cancel()
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        try:
            await self.flush()
            await self._store.release_leases(unfinished, self.name)
        except Exception as exc:  # the leases will expire by themselves
            log.warning("could not flush or release on shutdown (%r)", exc)


def _log_attempt(
    item: ClaimedDelivery,
    success: bool,
    status: int | None,
    error: str | None,
    event_status: str,
    duration_ms: int,
) -> None:
    # Successes are routine (DEBUG); each failure is worth a line; an exhausted event a warning.
    level = (
        logging.DEBUG if success else logging.WARNING if event_status == "Failed" else logging.INFO
    )
    if not log.isEnabledFor(level):
        return
    what = "delivered" if success else f"failed ({error or status})"
    if event_status == "Failed":
        what += "; retries exhausted, event Failed"
    log.log(
        level,
        "event %s attempt %d %s in %d ms",
        item.id,
        item.attempt_count,
        what,
        duration_ms,
        extra={
            "event_id": item.id,
            "registration_id": item.registration_id,
            "partner_id": item.partner_id,
            "attempt": item.attempt_count,
            "response_status": status,
            "duration_ms": duration_ms,
        },
    )


def _count_transitions(batch: list[DeliveryResult], moved: list[tuple[uuid.UUID, Status]]) -> None:
    """Metrics and one log line per registration status change the workers caused."""
    cause: dict[uuid.UUID, DeliveryResult] = {}
    for result in batch:
        if result.registration_trigger is not None:
            cause[result.registration_id] = result
    for registration_id, status in moved:
        metrics.REGISTRATION_TRANSITIONS.labels(to=status.value).inc()
        why = cause.get(registration_id)
        log.log(
            logging.WARNING if status is Status.SUSPENDED else logging.INFO,
            "registration %s is now %s (%s after event %s)",
            registration_id,
            status.value,
            why.registration_trigger.value if why and why.registration_trigger else "?",
            why.event_id if why else "?",
            extra={
                "registration_id": registration_id,
                "event_id": why.event_id if why else None,
                "to_status": status.value,
            },
        )
