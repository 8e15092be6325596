"""When to try a failed delivery again."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC

# A receiver's Retry-After is honoured, but never beyond a day: a hostile or buggy header must
# not park an event forever.
MAX_RETRY_AFTER_SECONDS = 86400.0


def next_delay(
    attempts_in_round: int,
    schedule: Sequence[float],
    *,
    jitter: float = 0.2,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float | None:
    """Seconds until the next attempt after ``attempts_in_round`` failed tries, or None when the
    schedule is exhausted (the event becomes Failed).

    The n-th failure waits ``schedule[n-1]`` ±``jitter`` (spreading retries so that a recovering
    receiver is not hit by a synchronized wave), and at least the receiver's ``Retry-After``.
    """
    if attempts_in_round > len(schedule):
        return None
    # Clamp: a count below 1 must not index the schedule from its end (the longest delay).
    base = schedule[max(attempts_in_round, 1) - 1]
    spread = (rng or random).uniform(-jitter, jitter) if jitter else 0.0
    delay = max(0.0, base * (1 + spread))
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER_SECONDS))
    return delay


def parse_retry_after(value: str | None, *, now_epoch: float) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    # ASCII digits only: str.isdigit() also accepts "²" or "１２", which float() then refuses.
    if value.isascii() and value.isdigit():
        return float(value)
    from email.utils import parsedate_to_datetime

    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment is None:
        return None
    if moment.tzinfo is None:  # "-0000" parses as naive; HTTP dates are always UTC
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, moment.timestamp() - now_epoch)
