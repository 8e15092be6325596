"""Aggregation windows: which resources an event object carries, and when a window closes.

Pure rules, used by the store while it holds a window's row lock. A window closes at the earliest
of: ``min_seconds`` without a new resource event, ``max_seconds`` after it opened, or
``max_resources`` distinct resources. Resources appear once each, in first-seen order; what comes
after the size cap is left for the next window.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, kw_only=True, slots=True)
class WindowRules:
    min_seconds: float
    max_seconds: float
    max_resources: int


@dataclass(kw_only=True, slots=True)
class Fold:
    """Resource events folded into one event object's resource list, chunk by chunk."""

    max_resources: int
    # dict as an insertion-ordered set: first-seen order, each resource once.
    seen: dict[str, None] = field(default_factory=dict)
    cutoff: int = 0  # id of the last resource event this window consumes
    capped: bool = False

    def add(self, rows: Iterable[tuple[int, str]]) -> None:
        """Fold ``(id, resource)`` rows in id order; stops at the first new resource past the cap."""
        for row_id, resource in rows:
            if resource not in self.seen:
                if len(self.seen) == self.max_resources:
                    self.capped = True
                    return
                self.seen[resource] = None
            self.cutoff = row_id

    @property
    def resources(self) -> list[str]:
        return list(self.seen)


def window_closes(
    *,
    now: datetime,
    opened_at: datetime,
    last_event_at: datetime,
    distinct: int,
    rules: WindowRules,
) -> bool:
    quiet = (now - last_event_at).total_seconds() >= rules.min_seconds
    old = (now - opened_at).total_seconds() >= rules.max_seconds
    full = distinct >= rules.max_resources
    return quiet or old or full
