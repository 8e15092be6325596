"""Isolation between registrations: adaptive concurrency, the slow lane and the circuit breaker.

Back-pressure, not lifecycle: nothing here changes a registration's status. The state lives in
PostgreSQL (``delivery_ready``) so that every worker process sees the same; this module decides
how one batch of recorded results moves it.

- Adaptive concurrency (AIMD, as TCP and Envoy's adaptive concurrency do): each failure halves
  the registration's allowed attempts in flight, each success adds one, up to the configured
  per-registration cap. A new registration starts low, so an endpoint that turns out to be dead
  holds few slots before its first timeout is known.
- Slow lane: a registration that failed recently (timeouts above all), or has never been
  delivered to successfully, is claimed only into a bounded share of each worker's slots, so first attempts of healthy registrations always find
  room (Hook0 reserves capacity for first attempts the same way).
- Circuit breaker (closed / open / half-open, as in Convoy): after ``BREAKER_THRESHOLD``
  consecutive failures nothing is attempted for a cool-down that doubles on every failed probe
  (up to ``BREAKER_MAX_COOLDOWN``); then one attempt probes (half-open): success closes it,
  failure opens it again. Events wait meanwhile, their retry schedule untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

INITIAL_CONCURRENCY = 4
BREAKER_THRESHOLD = 5
BREAKER_COOLDOWN = 10.0
BREAKER_MAX_COOLDOWN = 300.0
SLOW_LANE_SECONDS = 60.0


@dataclass(frozen=True, kw_only=True, slots=True)
class Breaker:
    """The read-only view of a registration's breaker (API, metrics, portal)."""

    state: str = "closed"  # closed | open | half-open
    opened_at: datetime | None = None
    next_probe_at: datetime | None = None


CLOSED = Breaker()


@dataclass(frozen=True, kw_only=True, slots=True)
class IsolationState:
    concurrency: int
    slow_until: datetime | None
    breaker: Breaker
    breaker_failures: int  # consecutive failures counted by the breaker


@dataclass(frozen=True, kw_only=True, slots=True)
class Outcome:
    """One recorded attempt, as isolation sees it."""

    success: bool
    attempted_at: datetime


def after_results(
    state: IsolationState, outcomes: list[Outcome], *, cap: int, now: datetime
) -> IsolationState:
    """The state after one batch of one registration's results, applied in attempt order."""
    concurrency = min(state.concurrency, cap)
    slow_until = state.slow_until
    breaker = state.breaker
    failures = state.breaker_failures
    for outcome in sorted(outcomes, key=lambda o: o.attempted_at):
        if outcome.success:
            concurrency = min(cap, concurrency + 1)
            failures = 0
            breaker = CLOSED
            continue
        concurrency = max(1, concurrency // 2)
        slow_until = max(slow_until or now, now + timedelta(seconds=SLOW_LANE_SECONDS))
        failures += 1
        if breaker.state == "half-open" or (
            breaker.state == "closed" and failures >= BREAKER_THRESHOLD
        ):
            breaker = _open(breaker, now)
    return IsolationState(
        concurrency=concurrency, slow_until=slow_until, breaker=breaker, breaker_failures=failures
    )


def _open(breaker: Breaker, now: datetime) -> Breaker:
    """Open (again): the cool-down doubles while probes keep failing."""
    if breaker.opened_at is not None and breaker.next_probe_at is not None:
        previous = (breaker.next_probe_at - breaker.opened_at).total_seconds()
        cooldown = min(BREAKER_MAX_COOLDOWN, max(BREAKER_COOLDOWN, previous * 2))
    else:
        cooldown = BREAKER_COOLDOWN
    return replace(
        breaker, state="open", opened_at=now, next_probe_at=now + timedelta(seconds=cooldown)
    )
