"""The pure window rules: first-seen dedup, the size cap's cutoff, and the three close rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from broker.domain.windows import Fold, WindowRules, window_closes

RULES = WindowRules(min_seconds=30, max_seconds=120, max_resources=3)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_fold_keeps_first_seen_order_and_each_resource_once():
    fold = Fold(max_resources=10)
    fold.add([(1, "a"), (2, "b"), (3, "a"), (4, "c"), (5, "b")])
    assert fold.resources == ["a", "b", "c"]
    assert fold.cutoff == 5 and not fold.capped


def test_fold_stops_at_the_first_new_resource_past_the_cap():
    fold = Fold(max_resources=2)
    fold.add([(1, "a"), (2, "a"), (3, "b"), (4, "a"), (5, "c"), (6, "b")])
    assert fold.resources == ["a", "b"]
    # Rows up to the last one before "c" are consumed; "c" and what follows open the next window.
    assert fold.cutoff == 4 and fold.capped


def test_fold_accumulates_across_chunks():
    fold = Fold(max_resources=3)
    fold.add([(1, "a"), (2, "b")])
    fold.add([(3, "b"), (4, "c"), (5, "d")])
    assert fold.resources == ["a", "b", "c"] and fold.cutoff == 4 and fold.capped


@pytest.mark.parametrize(
    ("opened_ago", "quiet_for", "distinct", "closes"),
    [
        (10, 10, 1, False),  # young, recently fed, small: stays open
        (40, 30, 1, True),  # quiet for min_seconds
        (120, 1, 1, True),  # open for max_seconds though still fed
        (5, 1, 3, True),  # reached max_resources
        (119, 29, 2, False),  # just short of every rule
    ],
)
def test_window_closes_by_the_earliest_rule(opened_ago, quiet_for, distinct, closes):
    now = T0 + timedelta(seconds=1000)
    assert (
        window_closes(
            now=now,
            opened_at=now - timedelta(seconds=opened_ago),
            last_event_at=now - timedelta(seconds=quiet_for),
            distinct=distinct,
            rules=RULES,
        )
        is closes
    )
