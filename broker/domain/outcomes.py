"""What follows from one delivery attempt: the event's next status and the registration trigger."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from broker.domain.retry import next_delay
from broker.domain.states import Trigger


@dataclass(frozen=True, kw_only=True, slots=True)
class Decision:
    event_status: str  # Pending | Success | Failed
    retry_in: float | None  # seconds until the next attempt when Pending
    trigger: Trigger | None  # what it does to the registration


def decide(
    *,
    success: bool,
    response_status: int | None,
    probe: bool,
    round_attempts: int,
    schedule: Sequence[float],
    jitter: float,
    retry_after: float | None,
) -> Decision:
    if success:
        return Decision(
            event_status="Success", retry_in=None, trigger=Trigger.PROBE_OK if probe else None
        )
    if response_status == 410:
        # The endpoint says it is gone: stop at once, keep the event queued for a restart.
        return Decision(event_status="Pending", retry_in=0.0, trigger=Trigger.GONE)
    if probe:
        # A failed restart probe suspends again; the event stays first in line, and the probe
        # does not use up the event's retry schedule.
        return Decision(event_status="Pending", retry_in=0.0, trigger=Trigger.PROBE_FAILED)
    delay = next_delay(round_attempts, schedule, jitter=jitter, retry_after=retry_after)
    if delay is None:
        return Decision(event_status="Failed", retry_in=None, trigger=Trigger.EXHAUSTED)
    return Decision(event_status="Pending", retry_in=delay, trigger=None)
