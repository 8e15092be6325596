"""Gauges read from the database when /metrics is scraped (queues, lag, registrations)."""

from __future__ import annotations

from broker import metrics
from broker.store.store import Store


async def refresh_gauges(store: Store) -> None:
    snapshot = await store.gauge_snapshot()
    for status, depth in snapshot.queue_depth.items():
        metrics.QUEUE_DEPTH.labels(registration_status=status).set(depth)
    for status, age in snapshot.oldest_pending_age_seconds.items():
        metrics.QUEUE_OLDEST_AGE.labels(registration_status=status).set(age)
    metrics.DELIVERY_LAG.set(snapshot.delivery_lag_seconds)
    for status, count in snapshot.registrations_by_status.items():
        metrics.REGISTRATIONS_BY_STATUS.labels(status=status).set(count)
    for state, count in snapshot.breakers.items():
        metrics.BREAKERS.labels(state=state).set(count)
