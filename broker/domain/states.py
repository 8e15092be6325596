"""The registration state machine, as data.

``TRANSITIONS`` is the single table of allowed (status, trigger) -> status. The partner API and the
delivery workers both consult it, and the store turns each step into a guarded
``UPDATE ... WHERE status = $old`` so that two processes racing on one registration cannot both
win: the loser sees zero rows and re-reads.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    ACTIVE = "Active"
    SUSPENDED = "Suspended"
    RESTARTING = "Restarting"
    PAUSED = "Paused"
    DELETED = "Deleted"


class EventStatus(StrEnum):
    """An event object's delivery status (the ``events.status`` column)."""

    PENDING = "Pending"
    SUCCESS = "Success"
    FAILED = "Failed"


# The events API filters on these.
EVENT_STATUSES = tuple(s.value for s in EventStatus)


class Trigger(StrEnum):
    # Partner API
    RESTART = "restart"
    PAUSE = "pause"
    UNPAUSE = "unpause"
    DELETE = "delete"
    UPDATE = "update"
    # Delivery workers
    EXHAUSTED = "exhausted"  # an event's last retry failed
    GONE = "gone"  # the endpoint answered 410
    PROBE_OK = "probe_ok"  # the Restarting attempt succeeded
    PROBE_FAILED = "probe_failed"  # the Restarting attempt failed
    # suspendAfterConsecutiveFailures reached (test deliveries count)
    FAILURE_THRESHOLD = "failure_threshold"


S, T = Status, Trigger

TRANSITIONS: dict[tuple[Status, Trigger], Status] = {
    (S.ACTIVE, T.EXHAUSTED): S.SUSPENDED,
    (S.ACTIVE, T.GONE): S.SUSPENDED,
    (S.ACTIVE, T.FAILURE_THRESHOLD): S.SUSPENDED,
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


class TransitionRefused(Exception):
    def __init__(self, current: Status, trigger: Trigger) -> None:
        self.current = current
        self.trigger = trigger
        super().__init__(f"cannot {trigger.value} a registration that is {current.value}")


def next_status(current: Status | str, trigger: Trigger, *, probe_owed: bool = False) -> Status:
    """The status after ``trigger``, or TransitionRefused.

    ``probe_owed``: the registration was paused while Restarting. Unpausing it then resumes the
    restart (Restarting, one probe first) rather than going straight to Active: a pause must not
    be a way around the probe.
    """
    current = Status(current)
    try:
        new = TRANSITIONS[(current, trigger)]
    except KeyError:
        raise TransitionRefused(current, trigger) from None
    if probe_owed and current is S.PAUSED and trigger is T.UNPAUSE:
        return S.RESTARTING
    return new


def sources(trigger: Trigger) -> list[Status]:
    """Every status from which ``trigger`` is allowed (the guard of the SQL update)."""
    return [status for (status, t) in TRANSITIONS if t is trigger]
