"""The retry schedule and what one attempt's outcome does to the event and its registration."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from broker.domain.outcomes import decide
from broker.domain.retry import MAX_RETRY_AFTER_SECONDS, next_delay, parse_retry_after
from broker.domain.states import Trigger

SCHEDULE = (5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0)


# ---------------------------------------------------------------------- next_delay


@pytest.mark.parametrize("failed", range(1, len(SCHEDULE) + 1))
def test_the_nth_failure_waits_the_nth_delay(failed):
    assert next_delay(failed, SCHEDULE, jitter=0.0) == SCHEDULE[failed - 1]


def test_a_failure_past_the_schedule_exhausts():
    assert next_delay(len(SCHEDULE) + 1, SCHEDULE, jitter=0.0) is None
    assert next_delay(len(SCHEDULE) + 5, SCHEDULE, jitter=0.0) is None
    assert next_delay(2, (1.0,), jitter=0.0) is None


def test_attempts_are_one_more_than_the_schedule():
    """With n delays an event gets n + 1 attempts: the first, then one after each delay."""
    schedule = (0.1, 0.2, 0.3)
    delays = []
    failed = 1
    while (delay := next_delay(failed, schedule, jitter=0.0)) is not None:
        delays.append(delay)
        failed += 1
    assert delays == list(schedule)
    assert failed == len(schedule) + 1


@pytest.mark.parametrize("attempts", [0, -1])
def test_a_count_below_one_is_the_first_delay_not_the_last(attempts):
    # Python's schedule[-1] would silently park the event for the longest delay.
    assert next_delay(attempts, SCHEDULE, jitter=0.0) == SCHEDULE[0]


def test_jitter_stays_within_twenty_percent_and_actually_spreads():
    rng = random.Random(7)
    delays = [next_delay(2, SCHEDULE, jitter=0.2, rng=rng) for _ in range(2000)]
    assert all(d is not None and 24.0 <= d <= 36.0 for d in delays)
    assert min(delays) < 25.0 and max(delays) > 35.0  # the whole band is used
    assert len(set(delays)) > 1000


def test_jitter_never_makes_a_delay_negative():
    rng = random.Random(1)
    assert all((next_delay(1, (0.0,), jitter=0.9, rng=rng) or 0) >= 0 for _ in range(100))


def test_retry_after_is_a_floor_not_a_ceiling():
    assert next_delay(1, SCHEDULE, jitter=0.0, retry_after=60.0) == 60.0
    assert next_delay(2, SCHEDULE, jitter=0.0, retry_after=1.0) == 30.0  # schedule is longer
    rng = random.Random(3)
    for _ in range(200):
        assert (next_delay(1, SCHEDULE, jitter=0.2, retry_after=100.0, rng=rng) or 0) >= 100.0


def test_retry_after_is_capped_at_a_day():
    assert next_delay(1, SCHEDULE, jitter=0.0, retry_after=10**12) == MAX_RETRY_AFTER_SECONDS


def test_retry_after_does_not_extend_an_exhausted_schedule():
    assert next_delay(len(SCHEDULE) + 1, SCHEDULE, jitter=0.0, retry_after=5.0) is None


# ---------------------------------------------------------------------- parse_retry_after


def test_retry_after_in_seconds():
    assert parse_retry_after("120", now_epoch=0) == 120.0
    assert parse_retry_after(" 7 ", now_epoch=0) == 7.0
    assert parse_retry_after("0", now_epoch=0) == 0.0


def test_retry_after_as_an_http_date():
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(later, now_epoch=now.timestamp()) == pytest.approx(90.0)
    earlier = format_datetime(now - timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(earlier, now_epoch=now.timestamp()) == 0.0
    # "-0000" parses to a naive datetime; it is still UTC, not the machine's local time.
    naive = "Thu, 01 Jan 2026 12:01:30 -0000"
    assert parse_retry_after(naive, now_epoch=now.timestamp()) == pytest.approx(90.0)


@pytest.mark.parametrize(
    "value", [None, "", "soon", "-5", "1.5", "Wed, 99 Foo 2026 25:61:61 GMT", "\x00", "１２", "²"]
)
def test_unusable_retry_after_is_ignored(value):
    # Never raises: the sender calls this on whatever header a receiver sends.
    assert parse_retry_after(value, now_epoch=0) is None


# ---------------------------------------------------------------------- decide


def _decide(**overrides):
    args = {
        "success": False,
        "response_status": 500,
        "probe": False,
        "round_attempts": 1,
        "schedule": (1.0, 2.0),
        "jitter": 0.0,
        "retry_after": None,
    }
    args.update(overrides)
    return decide(**args)


def test_success_finishes_the_event_and_touches_no_status():
    d = _decide(success=True, response_status=200)
    assert (d.event_status, d.retry_in, d.trigger) == ("Success", None, None)


def test_a_successful_probe_reactivates():
    d = _decide(success=True, response_status=204, probe=True)
    assert (d.event_status, d.retry_in, d.trigger) == ("Success", None, Trigger.PROBE_OK)


@pytest.mark.parametrize("status", [None, 301, 302, 400, 404, 429, 500, 503])
def test_a_failure_within_the_schedule_retries(status):
    d = _decide(response_status=status, round_attempts=1)
    assert (d.event_status, d.retry_in, d.trigger) == ("Pending", 1.0, None)
    d = _decide(response_status=status, round_attempts=2)
    assert (d.event_status, d.retry_in, d.trigger) == ("Pending", 2.0, None)


def test_the_last_failure_fails_the_event_and_suspends():
    d = _decide(round_attempts=3)
    assert (d.event_status, d.retry_in, d.trigger) == ("Failed", None, Trigger.EXHAUSTED)


def test_retry_after_reaches_the_decision():
    d = _decide(response_status=429, retry_after=30.0)
    assert d.event_status == "Pending" and d.retry_in == 30.0


@pytest.mark.parametrize("round_attempts", [1, 2, 3, 10])
@pytest.mark.parametrize("probe", [False, True])
def test_410_suspends_at_once_and_keeps_the_event_queued(round_attempts, probe):
    d = _decide(response_status=410, round_attempts=round_attempts, probe=probe)
    assert d.event_status == "Pending"
    assert d.trigger is Trigger.GONE
    assert d.retry_in is not None and d.retry_in >= 0


@pytest.mark.parametrize("status", [None, 302, 500, 429])
def test_a_failed_probe_suspends_again_without_using_the_schedule(status):
    # Even with the schedule already used up, the probe's event stays queued, not Failed.
    d = _decide(response_status=status, probe=True, round_attempts=99)
    assert d.event_status == "Pending"
    assert d.trigger is Trigger.PROBE_FAILED


def test_every_decision_is_consistent():
    """Whatever the inputs: Pending has a delay, Success/Failed have none, Failed suspends."""
    rng = random.Random(11)
    statuses = [None, 200, 201, 299, 300, 302, 400, 404, 410, 429, 500, 503]
    for _ in range(2000):
        status = rng.choice(statuses)
        success = status is not None and 200 <= status < 300
        d = _decide(
            success=success,
            response_status=status,
            probe=rng.random() < 0.3,
            round_attempts=rng.randint(1, 5),
            jitter=rng.choice([0.0, 0.2]),
            retry_after=rng.choice([None, 0.0, 3.0]),
        )
        assert d.event_status in ("Pending", "Success", "Failed")
        assert (d.event_status == "Pending") == (d.retry_in is not None)
        if d.event_status == "Failed":
            assert d.trigger is Trigger.EXHAUSTED
        if d.event_status == "Success":
            assert success
