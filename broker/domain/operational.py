"""Operational events: what the broker itself tells partners about their registrations.

They are produced in PostgreSQL, by triggers on the status columns (migration 0008), so every
transition emits exactly one, in its own transaction. This module holds the names the rest of
the code needs: producers and the catalog API may not use the prefix, and only patterns that
name it receive these events (sql/queries/windows.sql, matching_registrations).
"""

from __future__ import annotations

PREFIX = "Broker."

EVENT_TYPES = (
    "Broker.Registration.Suspended",
    "Broker.Registration.Restarting",
    "Broker.Registration.Active",
    "Broker.Registration.Paused",
    "Broker.Event.Failed",
)


def is_operational(event_name: str) -> bool:
    return event_name.startswith(PREFIX)
