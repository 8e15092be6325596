"""The registration state machine, exhaustively over every (status, trigger) pair."""

from __future__ import annotations

import itertools

import pytest

from broker.domain.states import (
    TRANSITIONS,
    Status,
    TransitionRefused,
    Trigger,
    next_status,
    sources,
)

S, T = Status, Trigger

# Written out independently of TRANSITIONS so that an accidental edit of the table fails here.
EXPECTED: dict[tuple[Status, Trigger], Status] = {
    (S.ACTIVE, T.EXHAUSTED): S.SUSPENDED,
    (S.ACTIVE, T.FAILURE_THRESHOLD): S.SUSPENDED,
    (S.ACTIVE, T.GONE): S.SUSPENDED,
    (S.ACTIVE, T.PAUSE): S.PAUSED,
    (S.ACTIVE, T.DELETE): S.DELETED,
    (S.ACTIVE, T.UPDATE): S.ACTIVE,
    (S.SUSPENDED, T.RESTART): S.RESTARTING,
    (S.SUSPENDED, T.DELETE): S.DELETED,
    (S.SUSPENDED, T.UPDATE): S.SUSPENDED,
    (S.RESTARTING, T.PROBE_OK): S.ACTIVE,
    (S.RESTARTING, T.PROBE_FAILED): S.SUSPENDED,
    (S.RESTARTING, T.GONE): S.SUSPENDED,
    (S.RESTARTING, T.PAUSE): S.PAUSED,
    (S.RESTARTING, T.DELETE): S.DELETED,
    (S.RESTARTING, T.UPDATE): S.RESTARTING,
    (S.PAUSED, T.UNPAUSE): S.ACTIVE,
    (S.PAUSED, T.DELETE): S.DELETED,
    (S.PAUSED, T.UPDATE): S.PAUSED,
}

ALL_PAIRS = list(itertools.product(Status, Trigger))


def test_table_is_the_documented_machine() -> None:
    assert TRANSITIONS == EXPECTED


@pytest.mark.parametrize(("status", "trigger"), ALL_PAIRS, ids=lambda v: str(v.value))
def test_every_pair(status: Status, trigger: Trigger) -> None:
    if (status, trigger) in EXPECTED:
        assert next_status(status, trigger) is EXPECTED[(status, trigger)]
        # The stored form (the text in the status column) is accepted too.
        assert next_status(status.value, trigger) is EXPECTED[(status, trigger)]
    else:
        with pytest.raises(TransitionRefused) as refused:
            next_status(status, trigger)
        assert refused.value.current is status
        assert refused.value.trigger is trigger
        assert status.value in str(refused.value)


def test_deleted_is_terminal() -> None:
    for trigger in Trigger:
        with pytest.raises(TransitionRefused):
            next_status(Status.DELETED, trigger)


def test_contract_paths() -> None:
    # Active -> Suspended -> Restarting -> Active, and the failed probe back to Suspended.
    assert next_status(S.ACTIVE, T.EXHAUSTED) is S.SUSPENDED
    assert next_status(S.SUSPENDED, T.RESTART) is S.RESTARTING
    assert next_status(S.RESTARTING, T.PROBE_OK) is S.ACTIVE
    assert next_status(S.RESTARTING, T.PROBE_FAILED) is S.SUSPENDED
    # Restart from anything but Suspended is refused (the contract's 409).
    for status in Status:
        if status is not S.SUSPENDED:
            with pytest.raises(TransitionRefused):
                next_status(status, T.RESTART)


def test_no_trigger_leads_out_of_deleted_or_into_restarting_except_restart() -> None:
    for (status, trigger), new in TRANSITIONS.items():
        assert status is not S.DELETED
        if new is S.RESTARTING and status is not S.RESTARTING:
            assert trigger is T.RESTART
        if new is S.DELETED:
            assert trigger is T.DELETE


def test_unknown_status_text_is_an_error() -> None:
    with pytest.raises(ValueError):
        next_status("Sleeping", Trigger.PAUSE)


@pytest.mark.parametrize("trigger", list(Trigger), ids=lambda t: t.value)
def test_sources_are_the_guard_of_each_trigger(trigger: Trigger) -> None:
    assert sorted(sources(trigger)) == sorted(s for (s, t) in EXPECTED if t is trigger)
